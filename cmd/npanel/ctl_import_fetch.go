package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/validate"
)

// "npanel ctl import scan|fetch|fetches|fetch-show": pulling archives from
// the old cPanel server over SSH. Secrets never go in argv: the password
// is read from a file (--password-file, "-" for stdin), the key from
// --key-file.

// serverFlags are the old server's flags, shared by scan and fetch.
type serverFlags struct {
	in           client.CpanelServerInput
	port         int
	fingerprint  string
	passwordFile string
	keyFile      string
}

func (f *serverFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.in.Node, "node", "", "the node that connects and whose import area receives archives")
	cmd.Flags().StringVar(&f.in.Host, "host", "", "the old cPanel server (host name or IP address)")
	cmd.Flags().IntVar(&f.port, "port", 22, "its SSH port")
	cmd.Flags().StringVar(&f.in.User, "user", "root", "the SSH user (root or a user allowed to run pkgacct)")
	cmd.Flags().StringVar(&f.fingerprint, "host-key", "", "the server's host key fingerprint, SHA256:... (ssh-keygen -l)")
	cmd.Flags().StringVar(&f.passwordFile, "password-file", "", `read the SSH password from this file ("-": stdin)`)
	cmd.Flags().StringVar(&f.keyFile, "key-file", "", "an unencrypted OpenSSH or PEM private key file")
}

// input checks the flags (usage errors, exit 2) and reads the secrets.
func (f *serverFlags) input(stdin io.Reader, needPin bool) (client.CpanelServerInput, error) {
	in := f.in
	if in.Node == "" || in.Host == "" {
		return in, cmdline.Usagef("--node and --host are required")
	}
	if _, err := validate.CpanelServerHost(in.Host); err != nil {
		return in, cmdline.Usagef("--host: %v", err)
	}
	if err := validate.CpanelServerPort(f.port); err != nil || f.port == 0 {
		return in, cmdline.Usagef("--port must be 1..65535")
	}
	if err := validate.CpanelServerUser(in.User); err != nil {
		return in, cmdline.Usagef("--user: %v", err)
	}
	if f.fingerprint != "" || needPin {
		if err := validate.HostKeyFingerprint(f.fingerprint); err != nil {
			return in, cmdline.Usagef("--host-key: %v (scan the server first: it names the key)", err)
		}
		in.HostKeyFingerprint = &f.fingerprint
	}
	if f.passwordFile == "" && f.keyFile == "" {
		return in, cmdline.Usagef("--password-file or --key-file is required")
	}
	in.Port = &f.port
	if f.passwordFile != "" {
		pw, err := readSecret(stdin, f.passwordFile)
		if err != nil {
			return in, cmdline.Usagef("--password-file: %v", err)
		}
		in.Password = &pw
	}
	if f.keyFile != "" {
		b, err := os.ReadFile(f.keyFile)
		if err != nil {
			return in, cmdline.Usagef("--key-file: %v", err)
		}
		k := string(b)
		in.PrivateKey = &k
	}
	return in, nil
}

// readSecret reads the first line of name ("-": stdin).
func readSecret(stdin io.Reader, name string) (string, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty")
	}
	return line, nil
}

func importScanCmd(o *ctlOptions) *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "scan --node N --host H [--user U] [--host-key SHA256:...] (--password-file F | --key-file F)",
		Short: "List the accounts of an old cPanel server (without --host-key: show its key to confirm)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := sf.input(cmd.InOrStdin(), false)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			scan, err := c.ScanCpanelServer(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), scan, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "HOST KEY\t%s\n\n", scan.HostKeyFingerprint)
				fmt.Fprintln(tw, "USERNAME\tDOMAIN\tDISK\tSUSPENDED")
				for _, a := range scan.Accounts {
					disk := "-"
					if a.DiskUsedBytes > 0 {
						disk = fmt.Sprint(a.DiskUsedBytes)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", a.Username, a.Domain, disk, a.Suspended)
				}
				if scan.Truncated {
					fmt.Fprintf(tw, "\n(the server has more accounts than a scan lists: fetch one past these with --remote-path)\n")
				}
			})
		},
	}
	sf.register(cmd)
	return cmd
}

func importFetchCmd(o *ctlOptions) *cobra.Command {
	var sf serverFlags
	var account, remote string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "fetch --node N --host H --host-key SHA256:... (--password-file F | --key-file F) (--account USER | --remote-path /PATH)",
		Short: "Pull an archive from an old cPanel server into the node's import area (pkgacct with --account)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (account == "") == (remote == "") {
				return cmdline.Usagef("give exactly one of --account and --remote-path")
			}
			if account != "" {
				if err := validate.CpanelAccountName(account); err != nil {
					return cmdline.Usagef("--account: %v", err)
				}
			} else if err := validate.CpanelRemotePath(remote); err != nil {
				return cmdline.Usagef("--remote-path: %v", err)
			}
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			in, err := sf.input(cmd.InOrStdin(), true)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			f, err := c.FetchCpanelBackup(cmd.Context(), in, account, remote)
			if err != nil {
				return apiError(err)
			}
			if wait {
				if f, err = o.waitFetch(cmd, c, f, timeout); err != nil {
					return err
				}
			}
			if err := o.printFetch(cmd, f); err != nil {
				return err
			}
			if f.Status == "FAILED" {
				return fmt.Errorf("fetch %s failed: %s", f.ID, dash(oneLine(deref(f.Error))))
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&account, "account", "", "a cPanel username: pkgacct packs it on the server")
	cmd.Flags().StringVar(&remote, "remote-path", "", "an existing archive on the server (absolute; .tar.gz, .tgz or .tar)")
	waitFlags(cmd, &wait, &timeout, "fetch")
	return cmd
}

// waitFetch polls a fetch until it has finished, printing its status
// changes on stderr (not with -o json).
func (o *ctlOptions) waitFetch(cmd *cobra.Command, c *client.Client, f *client.CpanelFetch, timeout time.Duration) (*client.CpanelFetch, error) {
	show := o.statusChanges(cmd.ErrOrStderr())
	return poller[client.CpanelFetch]{
		kind: "fetch", id: f.ID, every: 500 * time.Millisecond,
		get:    func(ctx context.Context) (*client.CpanelFetch, error) { return c.CpanelFetch(ctx, f.ID) },
		done:   (*client.CpanelFetch).Finished,
		status: func(f *client.CpanelFetch) string { return f.Status },
		show:   func(f *client.CpanelFetch) { show(f.Status) },
	}.wait(cmd.Context(), f, timeout)
}

func (o *ctlOptions) printFetch(cmd *cobra.Command, f *client.CpanelFetch) error {
	return o.print(cmd.OutOrStdout(), f, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID\t%s\nSTATUS\t%s\nNODE\t%s\nSERVER\t%s@%s:%d\nHOST KEY\t%s\n", f.ID, f.Status, f.Node, f.User, f.Host, f.Port, f.HostKeyFingerprint)
		if f.Account != nil {
			fmt.Fprintf(tw, "ACCOUNT\t%s\n", *f.Account)
		}
		fmt.Fprintf(tw, "REMOTE PATH\t%s\nPATH\t%s\nBYTES\t%d\n", dash(deref(f.RemotePath)), f.Path, f.Bytes)
		if f.Error != nil {
			fmt.Fprintf(tw, "ERROR\t%s\n", oneLine(*f.Error))
		}
		if f.Status == "DONE" {
			fmt.Fprintf(tw, "\nimport it with: npanel ctl import cpanel --node %s --owner O --plan P %s\n", f.Node, f.Path)
		}
	})
}

func importFetchShowCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "fetch-show ID", Short: "Show a fetch", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			f, err := c.CpanelFetch(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if f == nil {
				return fmt.Errorf("NOT_FOUND: no fetch %q", args[0])
			}
			return o.printFetch(cmd, f)
		},
	}
}

func importFetchesCmd(o *ctlOptions) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: "fetches", Short: "List fetches from old servers, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			all, err := allPages(limit, func(first int, after string) ([]client.CpanelFetch, string, error) {
				return c.CpanelFetches(cmd.Context(), first, after)
			})
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), all, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSTATUS\tNODE\tSERVER\tPATH\tBYTES\tSTARTED")
				for _, f := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s@%s\t%s\t%d\t%s\n", f.ID, f.Status, f.Node, f.User, f.Host, f.Path, f.Bytes,
						f.StartedAt.UTC().Format(time.RFC3339))
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many")
	return cmd
}
