package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/pki"
)

// ctlOptions are shared by every ctl subcommand.
type ctlOptions struct {
	server        string
	token         string
	output        string
	caFingerprint string
}

func ctlCmd() *cobra.Command {
	o := &ctlOptions{}
	cmd := group(&cobra.Command{
		Use:   "ctl",
		Short: "Operate a cluster through its API",
	})
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.server, "server", envOr("NPANEL_SERVER", "http://127.0.0.1:8080"), "API base URL ($NPANEL_SERVER)")
	pf.StringVar(&o.token, "token", os.Getenv("NPANEL_TOKEN"), "bearer token ($NPANEL_TOKEN; default: the one saved by login)")
	pf.StringVar(&o.caFingerprint, "ca-fingerprint", os.Getenv("NPANEL_CA_FINGERPRINT"), "SHA-256 fingerprint of the CA root an https server's certificate must chain to ($NPANEL_CA_FINGERPRINT; default: the one pinned at login)")
	pf.StringVarP(&o.output, "output", "o", "table", "table or json")
	cmd.AddCommand(loginCmd(o), logoutCmd(o), passwdCmd(o), whoamiCmd(o),
		withCommands(nodeCmd(o), nodeUpdateCmd(o), nodeTopCmd(o), nodeStatusCmd(o)),
		withCommands(planCmd(o), planUpdateCmd(o), planDeleteCmd(o)),
		withCommands(resellerCmd(o), resellerUpdateCmd(o), resellerDeleteCmd(o)),
		withCommands(userCmd(o), userListCmd(o), userUpdateCmd(o), userDeleteCmd(o), userResetPasswordCmd(o)),
		withCommands(accountCmd(o), accountChangePlanCmd(o), accountChangeOwnerCmd(o)),
		domainCmd(o), dnsCmd(o), dbCmd(o), mailCmd(o), sslCmd(o), backupCmd(o), migrateCmd(o), importCmd(o), tokenCmd(o), auditCmd(o), clusterCmd(o),
		logsCmd(o), trafficCmd(o), scrapeTokenCmd(o))
	return cmd
}

// group makes a command that only holds subcommands refuse an unknown one
// with a usage error (exit 2) instead of printing help and succeeding.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return cmdline.Usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	}
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// credentialsPath is where login keeps tokens, one per server URL.
func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "npanel", "credentials.json"), nil
}

func loadCredentials() map[string]string {
	creds := map[string]string{}
	p, err := credentialsPath()
	if err != nil {
		return creds
	}
	if b, err := os.ReadFile(p); err == nil {
		_ = json.Unmarshal(b, &creds)
	}
	// Keyed like the pins, so that a token and its server's pin are found
	// by the same spellings of --server.
	return normalizeKeys(creds)
}

func saveToken(server, token string) (string, error) {
	p, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	creds := loadCredentials()
	creds[serverKey(server)] = token
	if token == "" {
		delete(creds, serverKey(server))
	}
	b, _ := json.MarshalIndent(creds, "", "  ")
	return p, atomicfile.WriteFile(p, b, 0o600, nil)
}

func (o *ctlOptions) client() (*client.Client, error) {
	tok := o.token
	if tok == "" {
		tok = loadCredentials()[serverKey(o.server)]
	}
	if tok == "" {
		return nil, fmt.Errorf("not logged in to %s: run \"npanel ctl login\" or set NPANEL_TOKEN", o.server)
	}
	opts, err := o.clientOptions()
	if err != nil {
		return nil, err
	}
	return client.New(o.server, tok, opts...), nil
}

// apiError maps an API error to the CLI's exit status: bad input is exit 2.
func apiError(err error) error {
	switch client.CodeOf(err) {
	case "INVALID_INPUT", "GRAPHQL_VALIDATION_FAILED":
		return cmdline.Usagef("%v", err)
	}
	return err
}

func loginCmd(o *ctlOptions) *cobra.Command {
	var user string
	var fromStdin, systemRoots bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in and save a token for --server, pinning an https server's CA",
		Long: `Sign in and save a token for --server. An https server's certificate is
trusted by pinning its CA's root: pass the SHA-256 fingerprint the server
printed at its first start with --ca-fingerprint (what scripts do), or, on a
terminal, compare the fingerprint shown with it and confirm. The pin is saved
with the login; every later call refuses a server whose certificate does not
chain to that root (exit 3). A server logged in to before keeps its pin.
--system-roots trusts a certificate from a public CA instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			trust, err := o.loginTrust(cmd, ctx, systemRoots)
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), fromStdin)
			if err != nil {
				return err
			}
			var opts []client.Option
			if trust.CAFingerprint != "" {
				u, _ := o.serverURL()
				opts = append(opts, client.WithTLS(pki.PinnedTLSConfig(u.Hostname(), trust.CAFingerprint)))
			}
			_, tok, err := client.New(o.server, "", opts...).Login(ctx, user, pw)
			if err != nil {
				return apiError(err)
			}
			if trust != (serverTrust{}) {
				if err := saveTrust(o.server, trust); err != nil {
					return fmt.Errorf("save the server's pin: %w", err)
				}
			}
			p, err := saveToken(o.server, tok)
			if err != nil {
				return fmt.Errorf("save token: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s as %s (token saved in %s)\n", o.server, user, p)
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "admin", "user name")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().BoolVar(&systemRoots, "system-roots", false, "trust an https server whose certificate a public CA issued (the system's roots) instead of pinning a CA")
	return cmd
}

func logoutCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke all your login tokens for --server and forget the saved one",
		Long: `Revoke every login token of the signed-in user on --server (on every
machine it signed in from) and remove the token saved by "npanel ctl login".
API tokens stay valid; revoke those with "npanel ctl token revoke".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := c.Logout(ctx); err != nil && client.CodeOf(err) != "UNAUTHENTICATED" {
				return apiError(err)
			}
			if o.token == "" {
				if _, err := saveToken(o.server, ""); err != nil {
					return fmt.Errorf("forget token: %w", err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged out of %s\n", o.server)
			return nil
		},
	}
}

func passwdCmd(o *ctlOptions) *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "passwd [--password-stdin]",
		Short: "Change your password; your other login tokens are revoked",
		Long: `Change the signed-in user's password: the current one, then the new one,
from the terminal or, with --password-stdin, as two lines of standard input.
Every login token issued before the change stops working; the new token is
saved in place of the one "npanel ctl login" saved.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pws, err := readPasswords(cmd.InOrStdin(), fromStdin, "Current password", "New password")
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			_, tok, err := c.ChangePassword(ctx, pws[0], pws[1])
			if err != nil {
				return apiError(err)
			}
			if o.token == "" {
				if _, err := saveToken(o.server, tok); err != nil {
					return fmt.Errorf("save token: %w", err)
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Password changed; other login tokens are revoked.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the current and the new password from standard input, one per line")
	return cmd
}

func readPassword(in io.Reader, fromStdin bool) (string, error) {
	pws, err := readPasswords(in, fromStdin, "Password")
	if err != nil {
		return "", err
	}
	return pws[0], nil
}

// readPasswords reads one password per prompt: from the terminal without
// echo, or one per line of in (--password-stdin, or in is no terminal).
func readPasswords(in io.Reader, fromStdin bool, prompts ...string) ([]string, error) {
	out := make([]string, 0, len(prompts))
	if f, ok := in.(*os.File); ok && !fromStdin && term.IsTerminal(int(f.Fd())) {
		for _, p := range prompts {
			fmt.Fprint(os.Stderr, p+": ")
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return nil, err
			}
			out = append(out, string(b))
		}
		return out, nil
	}
	r := bufio.NewReader(in)
	for _, p := range prompts {
		line, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return nil, cmdline.Usagef("no %s given", strings.ToLower(p))
		}
		out = append(out, pw)
	}
	return out, nil
}

func nodeCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "node", Short: "Add, list, ping, drain and remove nodes; their services"})
	cmd.AddCommand(nodeAddCmd(o), nodeListCmd(o), nodeRemoveCmd(o), nodePingCmd(o),
		nodeDrainCmd(o, "drain", true), nodeDrainCmd(o, "undrain", false),
		nodeServicesCmd(o), nodeRestartServiceCmd(o))
	return cmd
}

func nodeAddCmd(o *ctlOptions) *cobra.Command {
	var address, roles string
	var labels []string
	cmd := &cobra.Command{
		Use:   "add NAME --address IP --roles web,dns,mail,db",
		Short: "Declare a node and print its one-time join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if address == "" {
				return cmdline.Usagef("--address is required")
			}
			rs := cmdline.SplitList(roles)
			if len(rs) == 0 {
				return cmdline.Usagef("--roles is required (any of web,dns,mail,db,backup)")
			}
			for i := range rs {
				rs[i] = strings.ToUpper(rs[i])
			}
			ls := map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return cmdline.Usagef("label %q: want key=value", l)
				}
				ls[k] = v
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateJoinToken(cmd.Context(), args[0], address, rs, ls)
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(tok)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Node %s declared. Its join token (single use, expires %s):\n\n%s\n\n", args[0], tok.ExpiresAt.Local().Format(time.RFC3339), tok.Token)
			// A file keeps the token off the node's process list (ps) and
			// out of its shell history.
			fmt.Fprint(w, "On the node, paste it into a file only root reads (end with Ctrl-D) and start the agent:\n"+
				"  install -m 0600 /dev/stdin /etc/npanel/join-token\n"+
				"  npanel agent --server <gateway host:port> --data-dir /var/lib/npanel/agent --join-token-file /etc/npanel/join-token\n"+
				"(installed from the package: set server in /etc/npanel/agent.yaml and systemctl enable --now npanel-agent)\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&address, "address", "", "the node's IP address")
	f.StringVar(&roles, "roles", "", "comma-separated roles: web,dns,mail,db,backup")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	return cmd
}

func nodeListCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List nodes with their status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(nodes)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tROLES\tLAST SEEN\tVERSION\tCAPABILITIES")
			for _, n := range nodes {
				seen, ver := "-", "-"
				if n.LastSeen != nil {
					seen = time.Since(*n.LastSeen).Round(time.Second).String() + " ago"
					if n.Status == "READY" {
						seen = "now"
					}
				}
				if n.AgentVersion != nil {
					ver = *n.AgentVersion
				}
				status := n.Status
				if n.Draining {
					status += ",DRAINING"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Address, status,
					strings.ToLower(strings.Join(n.Roles, ",")), seen, ver, strings.Join(n.Capabilities, ","))
			}
			return tw.Flush()
		},
	}
}

func nodeRemoveCmd(o *ctlOptions) *cobra.Command {
	var yes *bool
	cmd := &cobra.Command{
		Use:               "remove NAME",
		Short:             "Remove a node; its certificate is refused from now on",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := confirm(cmd, *yes, "remove node "+args[0]); err != nil {
				return err
			}
			if err := c.RemoveNode(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Node %s removed.\n", args[0])
			return nil
		},
	}
	yes = yesFlag(cmd)
	return cmd
}

func nodePingCmd(o *ctlOptions) *cobra.Command {
	var payload string
	var timeout int
	cmd := &cobra.Command{
		Use:               "ping NAME",
		Short:             "Send a PING task through the task path and wait for the answer",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			start := time.Now()
			t, err := c.Ping(cmd.Context(), args[0], payload, timeout)
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(t)
			}
			res := ""
			if t.Result != nil {
				res = *t.Result
			}
			fmt.Fprintf(cmd.OutOrStdout(), "task %s %s in %s %s\n", t.ID, t.Status, time.Since(start).Round(time.Millisecond), res)
			if t.Status != "SUCCEEDED" {
				return fmt.Errorf("task %s is %s", t.ID, t.Status)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&payload, "payload", "", "text echoed back by the agent")
	cmd.Flags().IntVar(&timeout, "timeout", 30, "seconds to wait for the result")
	return cmd
}

func nodeDrainCmd(o *ctlOptions, use string, drain bool) *cobra.Command {
	short := "Stop placing new accounts on a node (its accounts stay; --migrate moves them off)"
	if !drain {
		short = "Let the scheduler place accounts on a node again"
	}
	var migrate bool
	var parallel int
	cmd := &cobra.Command{
		Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			if drain && cmd.Flags().Changed("parallel") && !migrate {
				return cmdline.Usagef("--parallel needs --migrate")
			}
			if migrate && (parallel < 1 || parallel > 64) {
				return cmdline.Usagef("--parallel must be 1 to 64")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if migrate {
				err = c.DrainNodeMigrate(cmd.Context(), args[0], parallel)
			} else {
				err = c.SetDraining(cmd.Context(), args[0], drain)
			}
			if err != nil {
				return apiError(err)
			}
			n, err := c.Node(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if n == nil {
				return fmt.Errorf("NOT_FOUND: node %q not found", args[0])
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(n)
			}
			switch {
			case migrate:
				fmt.Fprintf(cmd.OutOrStdout(), "Node %s is %s,DRAINING: its accounts are moving off, %d at a time (npanel ctl migrate list --drain %s).\n", n.Name, n.Status, parallel, n.Name)
			case n.Draining:
				fmt.Fprintf(cmd.OutOrStdout(), "Node %s is %s,DRAINING: no new accounts are placed on it; its accounts stay.\n", n.Name, n.Status)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "Node %s is %s and takes new accounts.\n", n.Name, n.Status)
			}
			return nil
		},
	}
	if drain {
		cmd.Flags().BoolVar(&migrate, "migrate", false, "also move every account off the node, each to a node the scheduler picks")
		cmd.Flags().IntVar(&parallel, "parallel", 4, "with --migrate, how many accounts move at once")
	}
	return cmd
}

// allPages reads a Relay-style connection page by page, up to limit items.
func allPages[T any](limit int, page func(first int, after string) ([]T, string, error)) ([]T, error) {
	var all []T
	after := ""
	for len(all) < limit {
		items, next, err := page(min(limit-len(all), 500), after)
		if err != nil {
			return nil, apiError(err)
		}
		all = append(all, items...)
		if next == "" {
			break
		}
		after = next
	}
	return all, nil
}
