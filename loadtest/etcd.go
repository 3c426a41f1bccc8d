package main

import (
	"context"
	"path/filepath"
	"strconv"
	"time"

	"github.com/npanel/npanel/internal/etcdtls"
)

// etcdProc is an etcd member the load generator started for the server it
// starts, with --etcd external: the production topology, where the control
// plane reaches etcd over --etcd-endpoints instead of running it inside its
// own process. etcd's CPU and memory are then measured apart.
type etcdProc struct {
	child
	client  string // host:port of the client listener (TLS, client certificates)
	metrics string // host:port of the plain /metrics and /health listener
	tls     etcdtls.Files
}

// maxTxnOps is the production members' --max-txn-ops (Ansible's
// npanel_etcd_max_txn_ops, the chart's etcd.maxTxnOps).
const maxTxnOps = 1024

// startEtcd starts a single-member etcd on free loopback ports with a fresh
// data dir, built from the etcd module go.mod pins (the version the server
// embeds) unless binary names one, and waits for /health. Its settings are
// those the Ansible role and the Helm chart give a production member
// (compaction, space quota, maxTxnOps, HTTP off the client port); the
// server is told the transaction limit (--etcd-max-txn-ops) as they tell
// it. Its client listener serves
// TLS and requires client certificates, made here, as the server requires
// of an external etcd; /metrics and /health are also served in plain HTTP on
// a listener of their own, for the load generator's scrapes. On error
// everything it started is stopped and removed.
func startEtcd(ctx context.Context, binary string, logf func(string, ...any)) (_ *etcdProc, err error) {
	c, binary, err := newChild(ctx, "etcd", binary, "go.etcd.io/etcd/server/v3", logf)
	if err != nil {
		return nil, err
	}
	e := &etcdProc{child: c}
	defer func() {
		if err != nil {
			e.stop()
		}
	}()
	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	e.client, e.metrics = addrs[0], addrs[1]
	peer, clientHTTP := addrs[2], addrs[3]
	if e.tls, err = etcdtls.Write(e.dir); err != nil {
		return nil, err
	}
	clientURL, peerURL := "https://"+e.client, "http://"+peer
	argv := []string{binary, "--name", "loadtest", "--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		// HTTP on a port of its own: the client port then serves gRPC
		// natively instead of through net/http (etcd-io/etcd#15402).
		"--listen-client-http-urls", "https://" + clientHTTP,
		"--cert-file", e.tls.ServerCert, "--key-file", e.tls.ServerKey,
		"--trusted-ca-file", e.tls.CA, "--client-cert-auth",
		"--listen-metrics-urls", "http://" + e.metrics,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "loadtest=" + peerURL,
		"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "10m",
		"--quota-backend-bytes", strconv.FormatInt(8<<30, 10), "--max-txn-ops", strconv.Itoa(maxTxnOps),
		"--log-level", "warn"}
	if err := e.start(argv, nil, filepath.Join(e.dir, "etcd.log")); err != nil {
		return nil, err
	}
	logf("etcd pid %d: client %s, data %s", e.pid(), clientURL, filepath.Join(e.dir, "data"))
	if err := e.waitReady(ctx, "etcd", "http://"+e.metrics+"/health", 60*time.Second, logf); err != nil {
		return nil, err
	}
	return e, nil
}
