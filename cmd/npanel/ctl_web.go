package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func domainCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "domain", Short: "Domains (websites) of an account"})
	list := &cobra.Command{
		Use: "list ACCOUNT", Short: "List an account's domains with the state of their vhosts", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ds, err := c.Domains(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), ds, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "DOMAIN\tPRIMARY\tDOCROOT\tPHP\tREDIRECT\tSTATE\tREASON")
				for _, d := range ds {
					redirect := "-"
					if d.Redirect != nil {
						redirect = fmt.Sprintf("%d %s", d.Redirect.Code, d.Redirect.To)
					}
					fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Primary, d.Docroot, dash(deref(d.PHPVersion)), redirect, d.State, dash(deref(d.Reason)))
				}
			})
		},
	}
	var docroot, aliasOf string
	add := &cobra.Command{
		Use: "add ACCOUNT DOMAIN [--docroot DIR | --alias-of DOMAIN]", Short: "Serve an add-on domain, or a parked (alias) domain of another",
		Long: `Serve an add-on domain from its own document root, with a DNS zone of its own.

With --alias-of, DOMAIN is parked on a domain the account serves: it answers
with that domain's site (same document root, PHP, redirect) and gets its own
DNS zone. A domain with aliases cannot be removed until its aliases are.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if docroot != "" && aliasOf != "" {
				return cmdline.Usagef("--docroot and --alias-of exclude each other: an alias serves its target's document root")
			}
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var d *client.Domain
			if aliasOf != "" {
				d, err = c.AddAliasDomain(cmd.Context(), id, args[1], aliasOf)
			} else {
				d, err = c.AddDomain(cmd.Context(), id, args[1], docroot)
			}
			if err != nil {
				return apiError(err)
			}
			return o.printDomain(cmd, d)
		},
	}
	add.Flags().StringVar(&docroot, "docroot", "", "document root relative to the home (default DOMAIN/public_html)")
	add.Flags().StringVar(&aliasOf, "alias-of", "", "park DOMAIN on this domain of the account (serve the same site)")
	remove := &cobra.Command{
		Use: "remove ACCOUNT DOMAIN", Short: "Stop serving an add-on or alias domain and remove its DNS zone (its files stay)", Args: cobra.ExactArgs(2),
	}
	removeYes := yesFlag(remove)
	remove.RunE = func(cmd *cobra.Command, args []string) error {
		if err := confirm(cmd, *removeYes, "Stop serving "+args[1]+" and remove its DNS zone"); err != nil {
			return err
		}
		c, id, err := o.accountRef(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if err := c.RemoveDomain(cmd.Context(), id, args[1]); err != nil {
			return apiError(err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Domain %s removed.\n", args[1])
		return nil
	}
	var errorLog bool
	var lf logFlags
	logs := &cobra.Command{
		Use: "logs DOMAIN [--error] [--lines N] [--since DURATION|TIME] [--grep TEXT]", Short: "Show the last lines of a domain's access log (or error log)",
		Long: `Show the last lines (at most 1000) of a domain's access log, or with --error its
error log, read on the account's node; the same as "npanel ctl logs domain".
An alias domain's requests are in the log of the domain it aliases. The
account's owner finds the same files as ~/logs/DOMAIN.access.log and
~/logs/DOMAIN.error.log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := "ACCESS"
			if errorLog {
				kind = "ERROR"
			}
			return o.domainLogs(cmd, args[0], kind, &lf)
		},
	}
	logs.Flags().BoolVar(&errorLog, "error", false, "the error log instead of the access log")
	lf.add(logs)
	php := &cobra.Command{
		Use: "php ACCOUNT DOMAIN VERSION|none", Short: "Set a domain's PHP version (none: static files only)", Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			v := args[2]
			if v == "none" {
				v = ""
			}
			d, err := c.SetPHPVersion(cmd.Context(), id, args[1], v)
			if err != nil {
				return apiError(err)
			}
			return o.printDomain(cmd, d)
		},
	}
	var code int
	redirect := &cobra.Command{
		Use: "redirect DOMAIN URL|none [--code 301]", Short: "Redirect a domain to a URL (none removes the redirect)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			to := args[1]
			if to == "none" {
				to = ""
			}
			d, err := c.SetRedirect(cmd.Context(), args[0], to, code)
			if err != nil {
				return apiError(err)
			}
			return o.printDomain(cmd, d)
		},
	}
	redirect.Flags().IntVar(&code, "code", 301, "301, 302, 307 or 308")
	cmd.AddCommand(list, add, remove, php, redirect, logs)
	return cmd
}

// accountRef resolves an account id or username to the id.
func (o *ctlOptions) accountRef(ctx context.Context, ref string) (*client.Client, string, error) {
	c, err := o.client()
	if err != nil {
		return nil, "", err
	}
	a, err := c.Account(ctx, ref)
	if err != nil {
		return nil, "", apiError(err)
	}
	if a == nil {
		return nil, "", fmt.Errorf("NOT_FOUND: account %q not found", ref)
	}
	return c, a.ID, nil
}

func (o *ctlOptions) printDomain(cmd *cobra.Command, d *client.Domain) error {
	return o.print(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "Domain:\t%s\nDocroot:\t%s\nPHP:\t%s\nState:\t%s\n", d.Name, d.Docroot, dash(deref(d.PHPVersion)), d.State)
		if d.AliasOf != nil {
			fmt.Fprintf(tw, "Alias of:\t%s\n", *d.AliasOf)
		}
		if d.Redirect != nil {
			fmt.Fprintf(tw, "Redirect:\t%d %s\n", d.Redirect.Code, d.Redirect.To)
		}
	})
}

func nodeServicesCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "services NODE", Short: "Show the daemons a node's agent manages", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			svcs, at, err := c.Services(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), svcs, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "SERVICE\tSTATE\tVERSION\tLISTEN\tRESTARTS\tERROR")
				for _, s := range svcs {
					errMsg := strings.ReplaceAll(deref(s.Error), "\n", " ")
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.State, dash(deref(s.Version)), dash(strings.Join(s.Listen, ",")), s.Restarts, dash(errMsg))
				}
				if at != nil {
					fmt.Fprintf(tw, "(reported %s)\n", at.Local().Format(time.RFC3339))
				}
			})
		},
	}
}

func nodeRestartServiceCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "restart-service NODE SERVICE", Short: "Restart a daemon on a node", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			t, err := c.RestartService(cmd.Context(), args[0], args[1], 60)
			if err != nil {
				return apiError(err)
			}
			if t.Status != "SUCCEEDED" {
				return fmt.Errorf("restart %s on %s: %s %s", args[1], args[0], t.Status, deref(t.Error))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s restarted on %s.\n", args[1], args[0])
			return nil
		},
	}
}

// printable escapes control characters (tab aside) and invalid UTF-8 as
// \xHH: a tenant writes its own error log (PHP's error_log copies through
// nginx verbatim), and escape sequences in it must not drive the operator's
// terminal.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1, r != '\t' && (unicode.IsControl(r) || r == 0x7f):
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, `\x%02x`, c)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
