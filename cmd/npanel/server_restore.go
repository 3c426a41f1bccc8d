package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/cmdline"
)

func serverRestoreCmd() *cobra.Command {
	var snapshotPath, dataDir string
	cmd := &cobra.Command{
		Use:   "restore --snapshot FILE --data-dir DIR",
		Short: "Make a server data dir with an embedded etcd from a cluster snapshot",
		Long: `Restore a snapshot ("npanel ctl cluster snapshot", or "etcdctl snapshot
save") into DIR/etcd as the embedded etcd of a new server, which then
starts with "npanel server --data-dir DIR". DIR must be new or empty, and
spelled as the server will be given it (its etcd sockets' paths are the
member's URLs). The snapshot's checksum is checked.

The snapshot does not hold the key-encryption key that seals the cluster
CA's keys and the token key: put the old cluster's KEK file at DIR/kek (or
where --kek-file points) before starting the server, which refuses to start
without it. Run this as the server's user (e.g. "runuser -u npanel --") so
that DIR is the server's, mode 0700. Agents reconnect by themselves once a
server with the restored data serves the agent address they know; what
changed after the snapshot was taken is lost. For an external etcd cluster
use "etcdutl snapshot restore" on each member instead (see the README).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if snapshotPath == "" {
				return cmdline.Usagef("--snapshot is required")
			}
			if dataDir == "" {
				return cmdline.Usagef("--data-dir is required")
			}
			if !filepath.IsAbs(dataDir) {
				return cmdline.Usagef("--data-dir must be an absolute path, as the server's (its etcd's URLs name it): got %q", dataDir)
			}
			if _, err := os.Stat(snapshotPath); err != nil {
				return cmdline.Usagef("--snapshot: %v", err)
			}
			err := controlplane.RestoreEmbeddedEtcd(snapshotPath, filepath.Clean(dataDir), slog.Default())
			if errors.Is(err, controlplane.ErrRestoreTargetNotEmpty) {
				return cmdline.Usagef("%v", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Restored %s into %s.\n"+
				"Next: copy the cluster's key-encryption key to %s (mode 0600, the server's user),\n"+
				"then start the server with --data-dir %s on the agent address the agents know.\n",
				snapshotPath, filepath.Join(dataDir, "etcd"), filepath.Join(dataDir, "kek"), dataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&snapshotPath, "snapshot", "", "the snapshot file")
	f.StringVar(&dataDir, "data-dir", "", "the new server's data dir (absolute; new or empty)")
	return cmd
}
