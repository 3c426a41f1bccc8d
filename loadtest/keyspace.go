package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/npanel/npanel/controlplane"
)

// KeyspaceFigures are a census of etcd's live keys at the end of the run,
// by kind of record: what each account costs in stored bytes, and the
// history etcd still keeps (revisions since the last compaction).
type KeyspaceFigures struct {
	Measured bool  `json:"measured"`
	Keys     int   `json:"keys"`
	Bytes    int64 `json:"bytes"` // keys and values of the live revision
	// Revision is the store's revision at the census; CompactRevision the
	// last compacted one as far as the census could tell (0: none seen).
	Revision        int64     `json:"revision"`
	CompactRevision int64     `json:"compactRevision"`
	Kinds           []KeyKind `json:"kinds"`
}

// KeyKind is one kind of record: keys under Prefix.
type KeyKind struct {
	Prefix     string `json:"prefix"`
	Keys       int    `json:"keys"`
	KeyBytes   int64  `json:"keyBytes"`
	ValueBytes int64  `json:"valueBytes"`
}

// censusClient is a client of the etcd the run started: the server's
// embedded member over its socket, or the external process over TLS. An
// existing server's etcd is not the run's to read.
func (r *runner) censusClient() (*clientv3.Client, error) {
	cfg := clientv3.Config{DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	switch {
	case r.etcd != nil:
		tlsCfg, err := (&transport.TLSInfo{CertFile: r.etcd.tls.ClientCert, KeyFile: r.etcd.tls.ClientKey, TrustedCAFile: r.etcd.tls.CA}).ClientConfig()
		if err != nil {
			return nil, err
		}
		cfg.Endpoints, cfg.TLS = []string{"https://" + r.etcd.client}, tlsCfg
	case r.srv != nil:
		cfg.Endpoints = []string{"unix://" + filepath.Join(r.srv.dataDir, controlplane.EtcdClientSocket)}
	default:
		return nil, nil
	}
	return clientv3.New(cfg)
}

// census pages through every live key. Kinds are the first segment under
// the store's prefix, two where the first only groups others (names/,
// done/).
func (r *runner) census(ctx context.Context) error {
	cli, err := r.censusClient()
	if err != nil || cli == nil {
		return err
	}
	defer cli.Close()
	kinds := map[string]*KeyKind{}
	f := KeyspaceFigures{}
	key := []byte{0}
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(2000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev)) // one consistent view
		}
		resp, err := cli.Get(ctx, string(key), opts...)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			p := kindOf(kv.Key)
			k := kinds[p]
			if k == nil {
				k = &KeyKind{Prefix: p}
				kinds[p] = k
			}
			k.Keys++
			k.KeyBytes += int64(len(kv.Key))
			k.ValueBytes += int64(len(kv.Value))
			f.Keys++
			f.Bytes += int64(len(kv.Key) + len(kv.Value))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
	f.Revision = rev
	// A read at revision 1 fails once anything was compacted; a watch
	// from there is then answered with the compaction revision.
	if _, err := cli.Get(ctx, "\x00", clientv3.WithRev(1)); err != nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if w, ok := <-cli.Watch(wctx, "\x00", clientv3.WithRev(1)); ok {
			f.CompactRevision = w.CompactRevision
		}
		cancel()
	}
	for _, k := range kinds {
		f.Kinds = append(f.Kinds, *k)
	}
	sort.Slice(f.Kinds, func(i, j int) bool {
		a, b := f.Kinds[i], f.Kinds[j]
		return a.KeyBytes+a.ValueBytes > b.KeyBytes+b.ValueBytes
	})
	f.Measured = true
	r.rep.Keyspace = f
	return nil
}

func kindOf(key []byte) string {
	const store = "/npanel/"
	if !bytes.HasPrefix(key, []byte(store)) {
		return "(other)"
	}
	rest := key[len(store):]
	depth := 1
	if bytes.HasPrefix(rest, []byte("names/")) || bytes.HasPrefix(rest, []byte("done/")) {
		depth = 2
	}
	n := 0
	for i, c := range rest {
		if c == '/' {
			if n++; n == depth {
				return store + string(rest[:i+1])
			}
		}
	}
	return store + string(rest)
}

// keyspaceRows renders the census for the text report.
func keyspaceRows(f KeyspaceFigures, accounts int, row func(name, format string, args ...any)) {
	if !f.Measured {
		return
	}
	per := func(b int64) string {
		if accounts == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f B/account", float64(b)/float64(accounts))
	}
	hist := "no compaction yet"
	if f.CompactRevision > 0 {
		hist = fmt.Sprintf("compacted at revision %d", f.CompactRevision)
	}
	row("etcd live keys", "%d keys, %s (%s) at revision %d, %s", f.Keys, mib(f.Bytes), per(f.Bytes), f.Revision, hist)
	for i, k := range f.Kinds {
		if i == 8 {
			break
		}
		row("  "+k.Prefix, "%d keys, %s (%s)", k.Keys, mib(k.KeyBytes+k.ValueBytes), per(k.KeyBytes+k.ValueBytes))
	}
}
