package controlplane

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// ErrRestoreTargetNotEmpty refuses to restore over an existing data dir:
// merging a snapshot into a live member's files would corrupt both.
var ErrRestoreTargetNotEmpty = errors.New("the target data dir is not empty")

// RestoreEmbeddedEtcd turns an etcd snapshot (npanel ctl cluster snapshot,
// or etcdctl snapshot save) into the data dir of a server with an embedded
// etcd: DATA-DIR/etcd holds a one-member cluster named and addressed as
// startEmbeddedEtcd names and addresses it, so "npanel server --data-dir
// DATA-DIR" starts on it. dataDir must be spelled as the server is given
// it (its sockets' paths are the member's URLs). The snapshot's integrity
// hash is checked. The cluster's key-encryption key is not in the
// snapshot: the server needs the old kek file to unseal the CA.
func RestoreEmbeddedEtcd(snapshotPath, dataDir string, log *slog.Logger) error {
	st, err := os.Stat(snapshotPath)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("snapshot %s: not a regular file", snapshotPath)
	}
	created, err := emptyDataDir(dataDir)
	if err != nil {
		return err
	}
	clientPath, _, peer := embeddedEtcdURLs(dataDir)
	if len(clientPath.Path) > maxSocketPath {
		return fmt.Errorf("data dir %s: its etcd socket paths would be longer than the %d bytes a unix socket allows; use a shorter --data-dir", dataDir, maxSocketPath)
	}
	etcdDir := filepath.Join(dataDir, "etcd")
	err = snapshot.NewV3(zapToSlog(log.With("component", "etcd-restore"), zapcore.WarnLevel)).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                embeddedEtcdName,
		OutputDataDir:       etcdDir,
		PeerURLs:            []string{peer.String()},
		InitialCluster:      embeddedEtcdName + "=" + peer.String(),
		InitialClusterToken: embed.NewConfig().InitialClusterToken,
	})
	if err != nil {
		// Leave nothing half-written behind: a later start must not take
		// a partial member for a restored one.
		os.RemoveAll(etcdDir)
		if created {
			os.Remove(dataDir)
		}
		return fmt.Errorf("restore etcd snapshot %s: %w", snapshotPath, err)
	}
	return nil
}

// emptyDataDir makes dir (0700) or checks that it exists empty, and makes
// it private as the server would. created says whether it made it.
func emptyDataDir(dir string) (created bool, err error) {
	f, err := os.Open(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("data dir: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("data dir: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if len(names) > 0 {
		return false, fmt.Errorf("%w: %s holds %s; restore into a new or empty directory", ErrRestoreTargetNotEmpty, dir, names[0])
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("data dir: %w", err)
	}
	return false, nil
}
