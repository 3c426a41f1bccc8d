package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// migrateCmd is "npanel ctl migrate": moving accounts between nodes.
// Migrations are asynchronous: --wait (start) and watch follow one until
// it is at rest, printing its steps as they finish.
func migrateCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "migrate", Short: "Move accounts between nodes: live migration, cancel, rollback, finalize"})
	cmd.AddCommand(migrateStartCmd(o), migrateListCmd(o), migrateShowCmd(o), migrateWatchCmd(o),
		migrateActionCmd(o, "cancel", "cancelMigration", "Stop a migration before its cutover (the account stays where it was)", ""),
		migrateActionCmd(o, "rollback", "rollbackMigration", "Move a migrated account back to its source (until finalized)",
			"move the account back as it was at the cutover, discarding what changed on the target since (mail, uploads, rows)"),
		migrateActionCmd(o, "finalize", "finalizeMigration", "Remove a migrated account's copy from its source now",
			"remove the account's copy from its source node for good"))
	return cmd
}

// parseSchedule reads --schedule: an RFC 3339 time, or a duration from
// now ("30m", "2h").
func parseSchedule(s string, now time.Time) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return &t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		t := now.Add(d)
		return &t, nil
	}
	return nil, cmdline.Usagef("--schedule %q: want an RFC 3339 time (2026-12-24T03:00:00Z) or a duration from now (2h)", s)
}

func migrateStartCmd(o *ctlOptions) *cobra.Command {
	var to, schedule string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "start ACCOUNT [--to NODE] [--schedule TIME] [--wait]", Short: "Move an account to another node (--to; default: the scheduler picks)",
		Args: cobra.ExactArgs(1), ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			if strings.TrimSpace(args[0]) == "" {
				return cmdline.Usagef("ACCOUNT is empty")
			}
			when, err := parseSchedule(schedule, time.Now())
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.MigrateAccount(cmd.Context(), client.MigrateAccountInput{Account: args[0], ToNode: to, Schedule: when})
			if err != nil {
				return apiError(err)
			}
			if !wait {
				return o.printMigration(cmd, m)
			}
			return o.watchMigration(cmd, c, m.ID, timeout)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the target node (default: the scheduler picks one)")
	cmd.Flags().StringVar(&schedule, "schedule", "", "start at this time (RFC 3339) or after this long (2h)")
	waitFlags(cmd, &wait, &timeout, "migration")
	return cmd
}

func migrateListCmd(o *ctlOptions) *cobra.Command {
	var f client.MigrationFilter
	var limit int
	cmd := &cobra.Command{
		Use: "list [--account A] [--node N] [--status S] [--drain N]", Short: "List migrations, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			f.Status = strings.ToUpper(f.Status)
			switch f.Status {
			case "", "PENDING", "PRESYNC", "CUTOVER", "VERIFYING", "DONE", "ROLLED_BACK", "FAILED", "CANCELLED":
			default:
				return cmdline.Usagef("--status %q: want PENDING, PRESYNC, CUTOVER, VERIFYING, DONE, ROLLED_BACK, FAILED or CANCELLED", f.Status)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ms, err := allPages(limit, func(first int, after string) ([]client.Migration, string, error) {
				return c.Migrations(cmd.Context(), f, first, after)
			})
			if err != nil {
				return err
			}
			if ms == nil {
				ms = []client.Migration{}
			}
			return o.print(cmd.OutOrStdout(), ms, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tACCOUNT\tSTATUS\tFROM\tTO\tSTEP\tDOWNTIME\tCREATED\tERROR")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Account, m.Status, m.FromNode, dash(deref(m.ToNode)),
						dash(currentStep(&m)), downtimeText(m.DowntimeMs), m.CreatedAt.UTC().Format(time.RFC3339), dash(oneLine(deref(m.Error))))
				}
			})
		},
	}
	cmd.Flags().StringVar(&f.Account, "account", "", "only this account's (id or username)")
	cmd.Flags().StringVar(&f.Node, "node", "", "only those from or to this node")
	cmd.Flags().StringVar(&f.Status, "status", "", "only those in this status")
	cmd.Flags().StringVar(&f.Drain, "drain", "", "only those of this node's drain")
	cmd.Flags().IntVar(&limit, "limit", 1000, "list at most this many")
	return cmd
}

// currentStep names the step running, or the last one finished.
func currentStep(m *client.Migration) string {
	last := ""
	for _, s := range m.Steps {
		switch s.Status {
		case "RUNNING", "PENDING":
			return s.Name
		case "DONE", "FAILED":
			last = s.Name
		}
	}
	return last
}

func downtimeText(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

func (o *ctlOptions) printMigration(cmd *cobra.Command, m *client.Migration) error {
	return o.print(cmd.OutOrStdout(), m, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\n", m.ID)
		fmt.Fprintf(tw, "Account:\t%s (%s)\n", m.Account, m.AccountID)
		fmt.Fprintf(tw, "Status:\t%s\n", m.Status)
		fmt.Fprintf(tw, "From:\t%s\n", m.FromNode)
		fmt.Fprintf(tw, "To:\t%s\n", dash(deref(m.ToNode)))
		if m.Schedule != nil {
			fmt.Fprintf(tw, "Schedule:\t%s\n", m.Schedule.UTC().Format(time.RFC3339))
		}
		if m.Drain != nil {
			fmt.Fprintf(tw, "Drain:\t%s\n", *m.Drain)
		}
		if m.FromBackup {
			fmt.Fprintf(tw, "Path:\tfrom the newest backup (the source node was down)\n")
		}
		fmt.Fprintf(tw, "Downtime:\t%s\n", downtimeText(m.DowntimeMs))
		if m.FinalizeAfter != nil && m.FinalizedAt == nil {
			fmt.Fprintf(tw, "Finalize after:\t%s\n", m.FinalizeAfter.UTC().Format(time.RFC3339))
		}
		if m.FinalizedAt != nil {
			fmt.Fprintf(tw, "Finalized:\t%s\n", m.FinalizedAt.UTC().Format(time.RFC3339))
		}
		if m.Error != nil {
			fmt.Fprintf(tw, "Error:\t%s\n", oneLine(*m.Error))
		}
		for _, s := range m.Steps {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s .. %s\t%s\t%s\n", s.Name, s.Status, dash(deref(s.Node)), timeOrDash(s.StartedAt), timeOrDash(s.FinishedAt),
				stepBytes(s.Bytes), oneLine(deref(s.Error)))
		}
	})
}

func stepBytes(n int64) string {
	if n == 0 {
		return ""
	}
	return humanBytes(n)
}

func migrateShowCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "show ID", Short: "Show a migration and its steps", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.Migration(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if m == nil {
				return fmt.Errorf("NOT_FOUND: migration %q not found", args[0])
			}
			return o.printMigration(cmd, m)
		},
	}
}

func migrateWatchCmd(o *ctlOptions) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "watch ID", Short: "Follow a migration until it is at rest, printing its steps as they go", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			return o.watchMigration(cmd, c, args[0], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

// watchMigration follows migration id (migrationEvents) until it is at
// rest, printing each step's change on stderr, then the migration; a
// migration that ended FAILED exits non-zero.
func (o *ctlOptions) watchMigration(cmd *cobra.Command, c *client.Client, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	evs, err := c.MigrationEvents(ctx, id)
	if err != nil {
		return apiError(err)
	}
	var last *client.Migration
	seen := map[string]string{}
	for m := range evs {
		last = &m
		if o.output == "json" {
			continue
		}
		for _, s := range m.Steps {
			if seen[s.Name] != s.Status {
				seen[s.Name] = s.Status
				if s.Status != "PENDING" {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s  %-9s %-22s %s %s\n", time.Now().Format(time.TimeOnly), m.Status, s.Name, s.Status, oneLine(deref(s.Error)))
				}
			}
		}
	}
	if last == nil {
		m, err := c.Migration(cmd.Context(), id)
		if err != nil {
			return apiError(err)
		}
		if m == nil {
			return fmt.Errorf("NOT_FOUND: migration %q not found", id)
		}
		last = m
	}
	if err := o.printMigration(cmd, last); err != nil {
		return err
	}
	switch {
	case last.Status == "FAILED":
		return fmt.Errorf("migration %s failed: %s", last.ID, dash(oneLine(deref(last.Error))))
	case !last.AtRest():
		return fmt.Errorf("migration %s still %s after %s", last.ID, last.Status, timeout)
	}
	return nil
}

// migrateActionCmd is a mutation on one migration; ask, when not empty,
// is the confirmation a person at a terminal gives first (--yes skips it).
func migrateActionCmd(o *ctlOptions, use, mutation, short, ask string) *cobra.Command {
	var yes *bool
	cmd := &cobra.Command{
		Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ask != "" {
				if err := confirm(cmd, *yes, ask); err != nil {
					return err
				}
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.MigrationAction(cmd.Context(), mutation, args[0])
			if err != nil {
				return apiError(err)
			}
			return o.printMigration(cmd, m)
		},
	}
	yes = yesFlag(cmd)
	return cmd
}
