package controlplane

import (
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// startEmbeddedEtcd runs a single-member etcd in dir. It is the default for
// one-replica installs and `npanel dev`; production runs three replicas
// against an external cluster instead.
func startEmbeddedEtcd(dir, clientAddr, peerAddr string, log *slog.Logger) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "npanel"
	cfg.Dir = filepath.Join(dir, "etcd")
	clientURL := url.URL{Scheme: "http", Host: clientAddr}
	peerURL := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapToSlog(log.With("component", "etcd"), zapcore.WarnLevel))
	// Keep a bounded history: controllers and gateways watch from recent
	// revisions only, and an uncompacted keyspace grows without limit.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "10m"
	cfg.QuotaBackendBytes = 8 << 30
	// Room for the account controller's batches (embeddedAccountBatch).
	cfg.MaxTxnOps = 4096
	cfg.MaxRequestBytes = 8 << 20
	// Tracing off: with no collector, Close waits ~20 s for the exporter.
	cfg.EnableDistributedTracing = false

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 60s")
	}
	log.Info("embedded etcd ready", "dir", cfg.Dir, "client", clientURL.String())
	return e, nil
}
