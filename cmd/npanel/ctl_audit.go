package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func auditCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "audit", Short: "The audit log (admin)"})
	cmd.AddCommand(auditListCmd(o))
	return cmd
}

// parseSince reads --since: a duration back from now ("1h") or a time
// (RFC 3339).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, cmdline.Usagef("--since %q: a duration back from now must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, cmdline.Usagef("--since %q: want a duration (1h) or an RFC 3339 time", s)
	}
	return t, nil
}

func auditListCmd(o *ctlOptions) *cobra.Command {
	var f client.AuditFilter
	var since string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--actor A] [--action ACTION] [--target TEXT] [--failed-only] [--since 1h|TIME] [--limit N]",
		Short: "List audit events, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				f.Since = &t
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			all, err := allPages(limit, func(first int, after string) ([]client.AuditEvent, string, error) {
				return c.AuditEvents(cmd.Context(), f, first, after)
			})
			if err != nil {
				return err
			}
			if all == nil {
				all = []client.AuditEvent{}
			}
			return o.print(cmd.OutOrStdout(), all, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "TIME\tACTOR\tSOURCE\tACTION\tTARGET\tRESULT")
				for _, e := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.RFC3339), e.Actor, dash(e.Source), e.Action, dash(e.Target), e.Result)
				}
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Actor, "actor", "", "who acted")
	fl.StringVar(&f.Action, "action", "", "exact action, e.g. createAccount, login, updatePlan")
	fl.StringVar(&f.Target, "target", "", "substring of the target")
	fl.BoolVar(&f.FailedOnly, "failed-only", false, "only refusals and failures")
	fl.StringVar(&since, "since", "", "events from this long ago (1h) or this time (RFC 3339)")
	fl.IntVar(&limit, "limit", 100, "most events to list")
	return cmd
}
