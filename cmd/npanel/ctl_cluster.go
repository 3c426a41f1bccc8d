package main

import (
	"github.com/npanel/npanel/internal/cmdline"

	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func clusterCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "cluster", Short: "The control plane: replicas, leader, etcd health and snapshots"})
	cmd.AddCommand(clusterStatusCmd(o), clusterSnapshotCmd(o))
	return cmd
}

func clusterStatusCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the server replicas, the leader and the etcd members with their health (admin)",
		Long: `Show the server replicas (the leader marked) and the etcd members: each
member is asked for its status at its client URL within a few seconds; one
that does not answer shows as unhealthy with the reason. -o json prints
sizes in bytes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			st, err := c.ClusterStatus(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(st)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPLICA\tAPI ADDRESS\tAGENT ADDRESS\tVERSION\tLEADER")
			for _, r := range st.Replicas {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.APIAddress, r.AgentAddress, orDash(r.Version), mark(r.Leader, "LEADER"))
			}
			if st.Leader == nil {
				fmt.Fprintln(tw, "(no leader elected: controllers are not running)")
			}
			kind := "external"
			if st.Etcd.Embedded {
				kind = "embedded"
			}
			fmt.Fprintf(tw, "\nETCD (%s)\tID\tCLIENT URL\tHEALTHY\tLEADER\tDB SIZE\tVERSION\tERROR\n", kind)
			for _, m := range st.Etcd.Members {
				size := "-"
				if m.DBSizeBytes != nil {
					size = humanBytes(*m.DBSizeBytes)
				}
				name := m.Name
				if name == "" {
					name = "(unstarted)"
				}
				if m.Learner {
					name += " (learner)"
				}
				healthy := "no"
				if m.Healthy {
					healthy = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.ID, strings.Join(m.ClientURLs, ","), healthy,
					mark(m.Leader, "LEADER"), size, orDash(m.Version), orDash(m.Error))
			}
			return tw.Flush()
		},
	}
}

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

func mark(b bool, s string) string {
	if b {
		return s
	}
	return ""
}

func clusterSnapshotCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot FILE",
		Short: "Save a snapshot of the control plane's etcd to FILE (admin)",
		Long: `Save a snapshot of the control plane's etcd, taken by the replica --server
names, to FILE (mode 0600): written to a new temporary file beside it,
checked against the checksum etcd appends, synced and renamed, so FILE is
either a whole snapshot or not there. Prints its size and SHA-256.

The snapshot holds every record of the cluster, the CA's keys sealed with
the key-encryption key (the KEK file, which is not in it: keep a copy apart
from the snapshots) and the users' password hashes: store it as a secret.
Restore it with "npanel server restore" (embedded etcd) or "etcdutl
snapshot restore" (external etcd); see the README.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if path == "" || strings.HasSuffix(path, string(filepath.Separator)) {
				return cmdline.Usagef("FILE must name a file, got %q", path)
			}
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				return cmdline.Usagef("%s is a directory; name the snapshot file", path)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			// A new file of its own (0600, O_EXCL): never one a symlink
			// planted beside FILE points to.
			f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
			if err != nil {
				return err
			}
			tmp := f.Name()
			n, sum, err := c.ClusterSnapshot(cmd.Context(), f)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, path)
			}
			if err != nil {
				os.Remove(tmp)
				return apiError(err)
			}
			// The rename is durable once the directory is synced.
			if d, err := os.Open(filepath.Dir(path)); err == nil {
				err = d.Sync()
				d.Close()
				if err != nil && !errors.Is(err, os.ErrInvalid) {
					return fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
				}
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"file": path, "bytes": n, "sha256": sum})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Snapshot saved to %s: %d bytes (%s), sha256 %s\n", path, n, humanBytes(n), sum)
			return nil
		},
	}
}
