package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func (o *ctlOptions) print(w io.Writer, v any, table func(*tabwriter.Writer)) error {
	if o.output == "json" {
		return json.NewEncoder(w).Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func planCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "plan", Short: "Hosting plans (quotas)"})
	var p client.Plan
	var php string
	create := &cobra.Command{
		Use:   "create NAME --disk-mb N --bandwidth-mb N --domains N --mailboxes N --databases N --php 8.2,8.3 [--allow-exec]",
		Short: "Create a plan",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			p.Name, p.PHPVersions = args[0], cmdline.SplitList(php)
			out, err := c.CreatePlan(cmd.Context(), p)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "Plan %s created.\n", out.Name) })
		},
	}
	f := create.Flags()
	f.Int64Var(&p.DiskMB, "disk-mb", 1024, "disk quota in MB")
	f.Int64Var(&p.BandwidthMB, "bandwidth-mb", 10240, "monthly bandwidth in MB")
	f.IntVar(&p.Domains, "domains", 1, "domains including the primary")
	f.IntVar(&p.Mailboxes, "mailboxes", 10, "mailboxes")
	f.IntVar(&p.Databases, "databases", 5, "databases")
	f.StringVar(&php, "php", "8.2", "comma-separated PHP versions allowed")
	f.BoolVar(&p.AllowExec, "allow-exec", false, "let the accounts' PHP start processes (exec, system, proc_open, ...); admins only")
	list := &cobra.Command{
		Use: "list", Short: "List plans you may use", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			plans, err := c.Plans(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), plans, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tDISK MB\tBANDWIDTH MB\tDOMAINS\tMAILBOXES\tDATABASES\tPHP\tEXEC\tOWNER")
				for _, p := range plans {
					owner := "-"
					if p.Owner != nil {
						owner = *p.Owner
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%t\t%s\n", p.Name, p.DiskMB, p.BandwidthMB, p.Domains, p.Mailboxes, p.Databases, strings.Join(p.PHPVersions, ","), p.AllowExec, owner)
				}
			})
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func resellerCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "reseller", Short: "Resellers and their limits"})
	var maxAccounts int
	var maxDisk int64
	var plans, selector string
	var pwStdin bool
	create := &cobra.Command{
		Use:   "create NAME --max-accounts N --max-disk-mb N [--plans a,b] [--node-selector zone=eu-1]",
		Short: "Create a reseller and its login (password read from the terminal or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), pwStdin)
			if err != nil {
				return err
			}
			r, err := c.CreateReseller(cmd.Context(), args[0], pw, maxAccounts, maxDisk, cmdline.SplitList(plans), selector)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "Reseller %s created.\n", r.Name) })
		},
	}
	f := create.Flags()
	f.IntVar(&maxAccounts, "max-accounts", 0, "most accounts the reseller may own")
	f.Int64Var(&maxDisk, "max-disk-mb", 0, "most disk (MB) the reseller's plans may add up to")
	f.StringVar(&plans, "plans", "", "comma-separated admin plans the reseller may sell")
	f.StringVar(&selector, "node-selector", "", "label selector for the nodes its accounts may use")
	f.BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input")
	list := &cobra.Command{
		Use: "list", Short: "List resellers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			rs, err := c.Resellers(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), rs, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tACCOUNTS\tDISK MB\tPLANS\tNODE SELECTOR")
				for _, r := range rs {
					fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\t%s\t%s\n", r.Name, r.Usage.Accounts, r.MaxAccounts, r.Usage.DiskMB, r.MaxDiskMB, strings.Join(r.Plans, ","), r.NodeSelector)
				}
			})
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func userCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "user", Short: "Account owners' logins"})
	var account string
	var pwStdin bool
	create := &cobra.Command{
		Use:   "create NAME --account ACCOUNT",
		Short: "Create a login that manages one account",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if account == "" {
				return cmdline.Usagef("--account is required")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), pwStdin)
			if err != nil {
				return err
			}
			if err := c.CreateUser(cmd.Context(), args[0], pw, account); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "User %s created for account %s.\n", args[0], account)
			return nil
		},
	}
	create.Flags().StringVar(&account, "account", "", "account id or username")
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input")
	revoke := &cobra.Command{
		Use:   "revoke-sessions NAME",
		Short: "Revoke every login token of a user (admin); its API tokens stay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.RevokeSessions(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Login tokens of %s revoked.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, revoke)
	return cmd
}

func accountCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "account", Short: "Hosting accounts"})
	var in client.CreateAccountInput
	var wait time.Duration
	create := &cobra.Command{
		Use:   "create USERNAME --domain DOMAIN --plan PLAN [--owner RESELLER] [--node NODE] [--wait 60s]",
		Short: "Create an account; the scheduler places it on a node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if in.Domain == "" || in.Plan == "" {
				return cmdline.Usagef("--domain and --plan are required")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			in.Username = args[0]
			a, err := c.CreateAccount(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			if wait > 0 {
				if a, err = waitSettled(cmd, c, a.ID, wait); err != nil {
					return err
				}
			}
			return o.printAccount(cmd.OutOrStdout(), a)
		},
	}
	f := create.Flags()
	f.StringVar(&in.Domain, "domain", "", "primary domain")
	f.StringVar(&in.Plan, "plan", "", "plan name")
	f.StringVar(&in.Owner, "owner", "", "owning reseller (admin only; default: you)")
	f.StringVar(&in.Node, "node", "", "pin to a node (admin only)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for the account to become ACTIVE")

	var filter client.AccountFilter
	var limit int
	list := &cobra.Command{
		Use: "list [--status S] [--node N] [--owner O] [--search TEXT]", Short: "List accounts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			filter.Status = strings.ToUpper(filter.Status)
			all, err := allPages(limit, func(first int, after string) ([]client.Account, string, error) {
				return c.Accounts(cmd.Context(), filter, first, after)
			})
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), all, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tUSERNAME\tDOMAIN\tSTATUS\tNODE\tPLAN\tOWNER")
				for _, a := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Username, a.Domain, a.Status, dash(a.NodeName()), a.Plan.Name, a.Owner.Name)
				}
			})
		},
	}
	lf := list.Flags()
	lf.StringVar(&filter.Status, "status", "", "PENDING, ACTIVE, SUSPENDED, FAILED, ...")
	lf.StringVar(&filter.Node, "node", "", "node name")
	lf.StringVar(&filter.Owner, "owner", "", "owner name")
	lf.StringVar(&filter.Search, "search", "", "substring of username or domain")
	lf.IntVar(&limit, "limit", 1000, "most accounts to list")

	show := &cobra.Command{
		Use: "show ACCOUNT", Short: "Show an account (id or username) with its events", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			a, err := c.Account(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if a == nil {
				return fmt.Errorf("NOT_FOUND: account %q not found", args[0])
			}
			return o.printAccount(cmd.OutOrStdout(), a)
		},
	}
	cmd.AddCommand(create, list, show,
		accountActionCmd(o, "suspend", "suspendAccount", "Suspend an account (its user is locked)",
			func(a *client.Account) bool { return a.Status == "SUSPENDED" }),
		accountActionCmd(o, "unsuspend", "unsuspendAccount", "Lift a suspension",
			func(a *client.Account) bool { return a.Status == "ACTIVE" }),
		accountActionCmd(o, "delete", "deleteAccount", "Delete an account (its home is archived first)",
			func(a *client.Account) bool { return a.Status == "DELETED" }))
	return cmd
}

// accountActionCmd runs suspend, unsuspend or delete and, unless --wait is
// 0, waits for the node to apply it, so what it prints is the state after
// the change.
func accountActionCmd(o *ctlOptions, use, mutation, short string, settled func(*client.Account) bool) *cobra.Command {
	var wait time.Duration
	var yes *bool
	cmd := &cobra.Command{
		Use: use + " ACCOUNT", Short: short, Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			a, err := c.Account(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if a == nil {
				return fmt.Errorf("NOT_FOUND: account %q not found", args[0])
			}
			if yes != nil {
				if err := confirm(cmd, *yes, fmt.Sprintf("%s account %s (%s)", use, a.Username, a.Domain)); err != nil {
					return err
				}
			}
			a, err = c.AccountAction(cmd.Context(), mutation, a.ID)
			if err != nil {
				return apiError(err)
			}
			if wait > 0 && !settled(a) {
				if a, err = waitAccount(cmd, c, a, wait, settled); err != nil {
					return err
				}
			}
			return o.printAccount(cmd.OutOrStdout(), a)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "wait up to this long for the node to apply the change (0: do not wait)")
	if mutation == "deleteAccount" {
		yes = yesFlag(cmd)
	}
	return cmd
}

func (o *ctlOptions) printAccount(w io.Writer, a *client.Account) error {
	return o.print(w, a, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\nUsername:\t%s\nDomain:\t%s\nStatus:\t%s\n", a.ID, a.Username, a.Domain, a.Status)
		if a.Reason != nil {
			fmt.Fprintf(tw, "Reason:\t%s\n", *a.Reason)
		}
		fmt.Fprintf(tw, "Node:\t%s\nPlan:\t%s\nOwner:\t%s\nEvents:\n", dash(a.NodeName()), a.Plan.Name, a.Owner.Name)
		for _, e := range a.Events {
			reason := ""
			if e.Reason != nil {
				reason = *e.Reason
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.Local().Format(time.RFC3339), e.Status, reason)
		}
	})
}

// waitSettled waits for a new account to become ACTIVE.
func waitSettled(cmd *cobra.Command, c *client.Client, id string, d time.Duration) (*client.Account, error) {
	a, err := c.Account(cmd.Context(), id)
	if err != nil {
		return nil, apiError(err)
	}
	return waitAccount(cmd, c, a, d, func(a *client.Account) bool { return a.Status == "ACTIVE" || a.Status == "SUSPENDED" })
}

// waitAccount polls until settled(a), the account FAILED, or d passes; a
// timeout says what the account is waiting for.
func waitAccount(cmd *cobra.Command, c *client.Client, a *client.Account, d time.Duration, settled func(*client.Account) bool) (*client.Account, error) {
	deadline := time.Now().Add(d)
	for {
		switch {
		case settled(a):
			return a, nil
		case a.Status == "FAILED":
			return a, fmt.Errorf("account %s FAILED: %s", a.Username, deref(a.Reason))
		case time.Now().After(deadline):
			msg := fmt.Sprintf("account %s still %s after %s", a.Username, a.Status, d)
			if a.Reason != nil && *a.Reason != "" {
				msg += ": " + *a.Reason
			}
			return a, errors.New(msg)
		}
		time.Sleep(200 * time.Millisecond)
		next, err := c.Account(cmd.Context(), a.ID)
		if err != nil {
			return nil, apiError(err)
		}
		if next == nil { // deleted and gone
			a.Status = "DELETED"
			return a, nil
		}
		a = next
	}
}

func tokenCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "token", Short: "API tokens for automation"})
	var ttl time.Duration
	create := &cobra.Command{
		Use: "create NAME [--ttl 720h]", Short: "Create an API token (shown once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var exp *time.Time
			if ttl > 0 {
				t := time.Now().Add(ttl)
				exp = &t
			}
			tok, rec, err := c.CreateAPIToken(cmd.Context(), args[0], exp)
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"token": tok, "apiToken": rec})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Token %s (id %s). It is shown only now:\n\n%s\n", rec.Name, rec.ID, tok)
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 0, "validity (default: until revoked)")
	list := &cobra.Command{
		Use: "list", Short: "List your API tokens", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ts, err := c.APITokens(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), ts, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tCREATED\tEXPIRES")
				for _, t := range ts {
					exp := "never"
					if t.ExpiresAt != nil {
						exp = t.ExpiresAt.Local().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.CreatedAt.Local().Format(time.RFC3339), exp)
				}
			})
		},
	}
	var revokeYes *bool
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an API token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := confirm(cmd, *revokeYes, "revoke API token "+args[0]+" (automation using it stops working)"); err != nil {
				return err
			}
			if err := c.RevokeAPIToken(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Token %s revoked.\n", args[0])
			return nil
		},
	}
	revokeYes = yesFlag(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
