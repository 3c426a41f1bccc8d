package controlplane

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// The embedded etcd's listeners are unix sockets in the data dir, not
// loopback ports: a loopback port takes requests from every local user
// (a tenant's PHP on the same host read the CA and the token key through
// it), and TLS client authentication cannot guard it because the CA that
// would issue the certificates lives in this very etcd. The data dir is
// 0700 and the sockets 0600, so only the server's own user reaches them.
const (
	EtcdClientSocket = "etcd.sock"
	EtcdPeerSocket   = "etcd-peer.sock"
	// maxSocketPath is sun_path's size on Linux less the terminating NUL.
	maxSocketPath = 107
)

// The embedded member's transaction limits, which the store is told of
// (store.SetTxnLimits) for changes that rebuild many accounts at once.
const (
	embeddedMaxTxnOps       = 4096
	embeddedMaxRequestBytes = 8 << 20
	// externalMaxRequestBytes is etcd's default --max-request-bytes.
	externalMaxRequestBytes = 3 << 19
)

// embeddedEtcdName is the embedded member's name; a restored data dir
// (RestoreEmbeddedEtcd) must carry the same.
const embeddedEtcdName = "npanel"

// embeddedEtcdURLs are the embedded member's client URL and its peer URL as
// listened on and as advertised, for the data dir dir. The client listener
// resolves Host+Path; the peer listener only Host, and the advertised
// (initial-cluster) form must parse back as a URL, which an escaped Host
// does not: hence two spellings of the peer path.
func embeddedEtcdURLs(dir string) (client, listenPeer, advertisePeer url.URL) {
	clientPath, peerPath := filepath.Join(dir, EtcdClientSocket), filepath.Join(dir, EtcdPeerSocket)
	return url.URL{Scheme: "unix", Path: clientPath}, url.URL{Scheme: "unix", Host: peerPath}, url.URL{Scheme: "unix", Path: peerPath}
}

// startEmbeddedEtcd runs a single-member etcd in dir. It is the default for
// one-replica installs and `npanel dev`; production runs three replicas
// against an external cluster instead.
func startEmbeddedEtcd(dir string, log *slog.Logger) (*embed.Etcd, error) {
	clientPath, peerPath := filepath.Join(dir, EtcdClientSocket), filepath.Join(dir, EtcdPeerSocket)
	for _, p := range []string{clientPath, peerPath} {
		if len(p) > maxSocketPath {
			return nil, fmt.Errorf("embedded etcd socket %s: path longer than the %d bytes a unix socket allows; use a shorter --data-dir", p, maxSocketPath)
		}
	}
	cfg := embed.NewConfig()
	cfg.Name = embeddedEtcdName
	cfg.Dir = filepath.Join(dir, "etcd")
	clientURL, listenPeer, advertisePeer := embeddedEtcdURLs(dir)
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{listenPeer}
	cfg.AdvertisePeerUrls = []url.URL{advertisePeer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapToSlog(log.With("component", "etcd"), zapcore.WarnLevel))
	// Keep a bounded history: controllers and gateways watch from recent
	// revisions only, and an uncompacted keyspace grows without limit.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "10m"
	cfg.QuotaBackendBytes = 8 << 30
	// Room for the account controller's batches (embeddedAccountBatch).
	cfg.MaxTxnOps = embeddedMaxTxnOps
	// The raft log stays in memory between snapshots, plus the entries a
	// slow follower could still need after one. A single member has no
	// follower, and every entry kept is heap the collector marks again on
	// each cycle of a busy server.
	cfg.SnapshotCount = 2000
	cfg.SnapshotCatchUpEntries = 500
	cfg.MaxRequestBytes = embeddedMaxRequestBytes
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
	// The directory already keeps other users out; the socket modes are
	// the second lock should the directory's ever be loosened.
	for _, p := range []string{clientPath, peerPath} {
		if err := os.Chmod(p, 0o600); err != nil {
			e.Close()
			return nil, fmt.Errorf("embedded etcd socket: %w", err)
		}
	}
	log.Info("embedded etcd ready", "dir", cfg.Dir, "client", clientURL.String())
	return e, nil
}
