package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// backupCmd is "npanel ctl backup": accounts' backups, restores, plans'
// backup schedules and the backup targets. Backups and restores are
// asynchronous: --wait follows one until it has finished. An S3 secret
// key is never an argument: targets create reads it from a file or
// standard input, so it stays out of the shell history and the process
// list.
func backupCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "backup", Short: "Backups and restores of accounts, plans' backup schedules, backup targets"})
	cmd.AddCommand(backupCreateCmd(o), backupListCmd(o), backupShowCmd(o), backupRestoreCmd(o), backupRestoreAccountCmd(o),
		backupVerifyCmd(o), backupDeleteCmd(o), backupScheduleCmd(o), backupTargetsCmd(o))
	return cmd
}

// backupFinished reports whether a backup's state is final.
func backupFinished(status string) bool {
	return status == "SUCCEEDED" || status == "PARTIAL" || status == "FAILED"
}

// outcomeError turns a PARTIAL or FAILED outcome into a non-zero exit.
func outcomeError(what, status string, errMsg *string, failed []client.BackupItemFailure) error {
	switch status {
	case "FAILED":
		return fmt.Errorf("%s failed: %s", what, dash(oneLine(deref(errMsg))))
	case "PARTIAL":
		items := make([]string, 0, len(failed))
		for _, f := range failed {
			items = append(items, f.Item)
		}
		return fmt.Errorf("%s is PARTIAL: %s could not be handled", what, strings.Join(items, ", "))
	}
	return nil
}

// waitBackup polls a backup until done says it is, printing each new
// event on stderr (not with -o json).
func (o *ctlOptions) waitBackup(cmd *cobra.Command, c *client.Client, b *client.Backup, timeout time.Duration, done func(*client.Backup) bool) (*client.Backup, error) {
	show := o.newEvents(cmd.ErrOrStderr(), b.Events)
	return poller[client.Backup]{
		kind: "backup", id: b.ID, every: 500 * time.Millisecond,
		get:    func(ctx context.Context) (*client.Backup, error) { return c.Backup(ctx, b.ID) },
		done:   done,
		status: func(b *client.Backup) string { return b.Status },
		show:   func(b *client.Backup) { show(b.Events) },
	}.wait(cmd.Context(), b, timeout)
}

// waitRestore polls a restore until it has finished.
func (o *ctlOptions) waitRestore(cmd *cobra.Command, c *client.Client, r *client.Restore, timeout time.Duration) (*client.Restore, error) {
	show := o.newEvents(cmd.ErrOrStderr(), r.Events)
	return poller[client.Restore]{
		kind: "restore", id: r.ID, every: 500 * time.Millisecond,
		get:    func(ctx context.Context) (*client.Restore, error) { return c.Restore(ctx, r.ID) },
		done:   func(r *client.Restore) bool { return backupFinished(r.Status) },
		status: func(r *client.Restore) string { return r.Status },
		show:   func(r *client.Restore) { show(r.Events) },
	}.wait(cmd.Context(), r, timeout)
}

func waitFlags(cmd *cobra.Command, wait *bool, timeout *time.Duration, what string) {
	cmd.Flags().BoolVar(wait, "wait", false, "wait until the "+what+" has finished, printing its events")
	cmd.Flags().DurationVar(timeout, "timeout", time.Hour, "with --wait, give up after this long")
}

func backupCreateCmd(o *ctlOptions) *cobra.Command {
	var target string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "create ACCOUNT [--target T] [--wait]", Short: "Back an account up now (to its plan's target, or --target: admins)",
		Args: cobra.ExactArgs(1), ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			b, err := c.CreateBackup(cmd.Context(), args[0], target)
			if err != nil {
				return apiError(err)
			}
			if !wait {
				return o.printBackup(cmd, b)
			}
			b, err = o.waitBackup(cmd, c, b, timeout, func(b *client.Backup) bool { return backupFinished(b.Status) })
			if err != nil {
				return err
			}
			if err := o.printBackup(cmd, b); err != nil {
				return err
			}
			return outcomeError("backup "+b.ID, b.Status, b.Error, b.Failed)
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the backup target (admins; default: the plan's)")
	waitFlags(cmd, &wait, &timeout, "backup")
	return cmd
}

func backupListCmd(o *ctlOptions) *cobra.Command {
	var limit int
	var restores bool
	cmd := &cobra.Command{
		Use: "list ACCOUNT [--restores]", Short: "List an account's backups (also of a deleted account, by username), oldest first",
		Args: cobra.ExactArgs(1), ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if restores {
				rs, err := c.Restores(cmd.Context(), args[0])
				if err != nil {
					return apiError(err)
				}
				if rs == nil {
					rs = []client.Restore{}
				}
				return o.print(cmd.OutOrStdout(), rs, func(tw *tabwriter.Writer) {
					fmt.Fprintln(tw, "ID\tSTATUS\tWHAT\tINTO\tBACKUP\tNODE\tCREATED\tERROR")
					for _, r := range rs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, restoreWhat(&r), r.Into, r.Backup, dash(r.Node),
							r.CreatedAt.UTC().Format(time.RFC3339), dash(oneLine(deref(r.Error))))
					}
				})
			}
			bs, err := allPages(limit, func(first int, after string) ([]client.Backup, string, error) {
				return c.Backups(cmd.Context(), args[0], first, after)
			})
			if err != nil {
				return err
			}
			if bs == nil {
				bs = []client.Backup{}
			}
			return o.print(cmd.OutOrStdout(), bs, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSTATUS\tCREATED\tTARGET\tSIZE\tADDED\tFILES\tVERIFIED\tERROR")
				for _, b := range bs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.ID, b.Status, b.CreatedAt.UTC().Format(time.RFC3339), b.Target,
						humanBytes(b.SizeBytes), humanBytes(b.AddedBytes), b.FileCount, verifiedText(&b), dash(oneLine(deref(b.Error))))
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 1000, "list at most this many")
	cmd.Flags().BoolVar(&restores, "restores", false, "list the account's restores instead")
	return cmd
}

func verifiedText(b *client.Backup) string {
	if b.VerifiedAt == nil {
		return "-"
	}
	if b.Verified {
		return "ok " + b.VerifiedAt.UTC().Format(time.RFC3339)
	}
	return "PROBLEMS " + b.VerifiedAt.UTC().Format(time.RFC3339)
}

func restoreWhat(r *client.Restore) string {
	switch r.What {
	case "FILES":
		if p := deref(r.Path); p != "" {
			return "FILES " + p
		}
	case "DATABASE":
		return "DATABASE " + deref(r.Database) + " -> " + deref(r.DatabaseInto)
	case "MAILBOX":
		return "MAILBOX " + deref(r.Mailbox)
	}
	return r.What
}

func (o *ctlOptions) printBackup(cmd *cobra.Command, b *client.Backup) error {
	return o.print(cmd.OutOrStdout(), b, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\n", b.ID)
		fmt.Fprintf(tw, "Account:\t%s (%s)\n", b.Account, b.AccountID)
		fmt.Fprintf(tw, "Status:\t%s\n", b.Status)
		fmt.Fprintf(tw, "Target:\t%s\n", b.Target)
		fmt.Fprintf(tw, "Node:\t%s\n", dash(b.Node))
		fmt.Fprintf(tw, "Scheduled:\t%s\n", yesNo(b.Scheduled))
		fmt.Fprintf(tw, "Created:\t%s\n", b.CreatedAt.UTC().Format(time.RFC3339))
		fmt.Fprintf(tw, "Ran:\t%s .. %s\n", timeOrDash(b.StartedAt), timeOrDash(b.FinishedAt))
		fmt.Fprintf(tw, "Size:\t%s (added %s, %d files)\n", humanBytes(b.SizeBytes), humanBytes(b.AddedBytes), b.FileCount)
		fmt.Fprintf(tw, "Contents:\tfiles %s; databases %s; mailboxes %s; zones %s\n", yesNo(b.Contents.Files),
			dash(strings.Join(b.Contents.Databases, ",")), dash(strings.Join(b.Contents.Mailboxes, ",")), dash(strings.Join(b.Contents.Zones, ",")))
		fmt.Fprintf(tw, "Verified:\t%s\n", verifiedText(b))
		for _, p := range b.VerifyProblems {
			fmt.Fprintf(tw, "  problem:\t%s\n", oneLine(p))
		}
		if b.Progress != nil {
			fmt.Fprintf(tw, "Progress:\t%d/%d files, %s/%s\n", b.Progress.FilesDone, b.Progress.TotalFiles,
				humanBytes(b.Progress.BytesDone), humanBytes(b.Progress.TotalBytes))
		}
		for _, f := range b.Failed {
			fmt.Fprintf(tw, "  failed:\t%s: %s\n", f.Item, oneLine(f.Error))
		}
		if b.Error != nil {
			fmt.Fprintf(tw, "Error:\t%s\n", oneLine(*b.Error))
		}
		for _, e := range b.Events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339), e.Kind, oneLine(deref(e.Message)))
		}
	})
}

func (o *ctlOptions) printRestore(cmd *cobra.Command, r *client.Restore) error {
	return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\n", r.ID)
		fmt.Fprintf(tw, "Backup:\t%s\n", r.Backup)
		fmt.Fprintf(tw, "Account:\t%s\n", r.Account)
		fmt.Fprintf(tw, "Status:\t%s\n", r.Status)
		fmt.Fprintf(tw, "What:\t%s (%s)\n", restoreWhat(r), r.Into)
		fmt.Fprintf(tw, "Node:\t%s\n", dash(r.Node))
		if r.Step != nil {
			fmt.Fprintf(tw, "Step:\t%s\n", *r.Step)
		}
		fmt.Fprintf(tw, "Ran:\t%s .. %s\n", timeOrDash(r.StartedAt), timeOrDash(r.FinishedAt))
		if len(r.Restored) > 0 {
			fmt.Fprintf(tw, "Restored:\t%s\n", strings.Join(r.Restored, ", "))
		}
		for _, f := range r.Failed {
			fmt.Fprintf(tw, "  failed:\t%s: %s\n", f.Item, oneLine(f.Error))
		}
		if r.Error != nil {
			fmt.Fprintf(tw, "Error:\t%s\n", oneLine(*r.Error))
		}
		for _, e := range r.Events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339), e.Kind, oneLine(deref(e.Message)))
		}
	})
}

func backupShowCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "show ID|ACCOUNT@latest", Short: "Show a backup (or, given a restore's id, the restore) and its events", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if args[0], err = backupID(cmd, c, args[0]); err != nil {
				return err
			}
			b, err := c.Backup(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if b != nil {
				return o.printBackup(cmd, b)
			}
			r, err := c.Restore(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if r != nil {
				return o.printRestore(cmd, r)
			}
			return fmt.Errorf("NOT_FOUND: backup %q not found", args[0])
		},
	}
}

var restoreKinds = []string{"files", "database", "mailbox", "zone", "all"}

// restoreInput checks restore's flags: each applies to one kind only.
func restoreInput(id, what, pth, db, intoDB, mailbox, node string, inPlace bool) (client.RestoreInput, error) {
	in := client.RestoreInput{Backup: id, What: strings.ToUpper(what), Path: pth, Database: db, DatabaseInto: intoDB, Mailbox: mailbox, Node: node, Into: "SIDE_BY_SIDE"}
	if inPlace {
		in.Into = "IN_PLACE"
	}
	if what == "" {
		return in, cmdline.Usagef("--what is required: %s", strings.Join(restoreKinds, ", "))
	}
	if !slices.Contains(restoreKinds, strings.ToLower(what)) {
		return in, cmdline.Usagef("--what: %q: want one of %s", what, strings.Join(restoreKinds, ", "))
	}
	allowed := map[string][]string{"FILES": {"path"}, "DATABASE": {"database", "into-database"}, "MAILBOX": {"mailbox"}, "ZONE": nil, "ALL": {"node"}}[in.What]
	for flag, v := range map[string]string{"path": pth, "database": db, "into-database": intoDB, "mailbox": mailbox, "node": node} {
		if v != "" && !slices.Contains(allowed, flag) {
			return in, cmdline.Usagef("--%s does not apply to --what %s", flag, strings.ToLower(what))
		}
	}
	switch in.What {
	case "DATABASE":
		if db == "" {
			return in, cmdline.Usagef("--what database needs --database (the database as backed up)")
		}
		if !inPlace && intoDB == "" {
			return in, cmdline.Usagef("--what database needs --into-database NEW_NAME, or --in-place to replace %s", db)
		}
		if inPlace && intoDB != "" && intoDB != db {
			return in, cmdline.Usagef("--in-place replaces %s itself; leave out --into-database", db)
		}
	case "MAILBOX":
		if mailbox == "" {
			return in, cmdline.Usagef("--what mailbox needs --mailbox ADDRESS")
		}
	case "ALL", "ZONE":
		if !inPlace {
			return in, cmdline.Usagef("--what %s replaces what exists: give --in-place", strings.ToLower(what))
		}
	}
	return in, nil
}

func backupRestoreCmd(o *ctlOptions) *cobra.Command {
	var what, pth, db, intoDB, mailbox, node string
	var inPlace, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restore ID|ACCOUNT@latest --what files|database|mailbox|zone|all [--path P] [--database D] [--into-database D2] [--mailbox M] [--in-place] [--node N] [--wait]",
		Short: "Restore part or all of a backup (nothing existing is replaced without --in-place)",
		Args:  cobra.ExactArgs(1),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		in, err := restoreInput(args[0], what, pth, db, intoDB, mailbox, node, inPlace)
		if err != nil {
			return err
		}
		if timeout <= 0 {
			return cmdline.Usagef("--timeout must be positive")
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		if in.Backup, err = backupID(cmd, c, args[0]); err != nil {
			return err
		}
		if inPlace {
			if err := confirm(cmd, *yes, "restore "+strings.ToLower(what)+" from "+args[0]+" in place, replacing what exists"); err != nil {
				return err
			}
		}
		r, err := c.RestoreBackup(cmd.Context(), in)
		if err != nil {
			return apiError(err)
		}
		return o.finishRestore(cmd, c, r, wait, timeout)
	}
	f := cmd.Flags()
	f.StringVar(&what, "what", "", "files, database, mailbox, zone or all")
	f.StringVar(&pth, "path", "", "files: a file or folder relative to the home (default: all of it)")
	f.StringVar(&db, "database", "", "database: the database as backed up")
	f.StringVar(&intoDB, "into-database", "", "database: the new database to restore it as (ACCOUNT_NAME)")
	f.StringVar(&mailbox, "mailbox", "", "mailbox: its address")
	f.BoolVar(&inPlace, "in-place", false, "replace what exists (default: restore beside it)")
	f.StringVar(&node, "node", "", "all: the node to restore onto when the account's is gone (admins)")
	waitFlags(cmd, &wait, &timeout, "restore")
	return cmd
}

func (o *ctlOptions) finishRestore(cmd *cobra.Command, c *client.Client, r *client.Restore, wait bool, timeout time.Duration) error {
	if !wait {
		return o.printRestore(cmd, r)
	}
	r, err := o.waitRestore(cmd, c, r, timeout)
	if err != nil {
		return err
	}
	if err := o.printRestore(cmd, r); err != nil {
		return err
	}
	return outcomeError("restore "+r.ID, r.Status, r.Error, r.Failed)
}

func backupRestoreAccountCmd(o *ctlOptions) *cobra.Command {
	var node string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "restore-account BACKUP [--node N] [--wait]", Short: "Bring a deleted account back from one of its backups (admins, its reseller)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			r, err := c.RestoreAccount(cmd.Context(), args[0], node)
			if err != nil {
				return apiError(err)
			}
			return o.finishRestore(cmd, c, r, wait, timeout)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node to restore onto (admins; default: the scheduler picks one)")
	waitFlags(cmd, &wait, &timeout, "restore")
	return cmd
}

func backupVerifyCmd(o *ctlOptions) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "verify ID|ACCOUNT@latest [--wait]", Short: "Read a backup back on its node and check it against its checksums", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if args[0], err = backupID(cmd, c, args[0]); err != nil {
				return err
			}
			before, err := c.Backup(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			b, err := c.VerifyBackup(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if !wait {
				return o.printBackup(cmd, b)
			}
			var prev *time.Time
			if before != nil {
				prev = before.VerifiedAt
			}
			b, err = o.waitBackup(cmd, c, b, timeout, func(b *client.Backup) bool {
				return b.VerifiedAt != nil && (prev == nil || b.VerifiedAt.After(*prev))
			})
			if err != nil {
				return err
			}
			if err := o.printBackup(cmd, b); err != nil {
				return err
			}
			if !b.Verified {
				return fmt.Errorf("backup %s did not verify: %s", b.ID, strings.Join(b.VerifyProblems, "; "))
			}
			return nil
		},
	}
	waitFlags(cmd, &wait, &timeout, "verification")
	return cmd
}

func backupDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use: "delete ID [--yes]", Short: "Remove a backup's data from its target, then the backup", Args: cobra.ExactArgs(1),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete backup "+args[0]); err != nil {
			return err
		}
		b, err := c.DeleteBackup(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		return o.printBackup(cmd, b)
	}
	return cmd
}

func backupScheduleCmd(o *ctlOptions) *cobra.Command {
	var target string
	var hour, daily, weekly, monthly int
	var off bool
	cmd := &cobra.Command{
		Use:   "schedule PLAN --target T [--hour H] [--keep-daily N] [--keep-weekly M] [--keep-monthly K] [--off]",
		Short: "Set a plan's backup target, daily window and retention; --off alone removes its backup settings, with --target it keeps them but stops scheduled backups",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in *client.PlanBackupInput
			switch {
			case off && target == "":
				if anyChanged(cmd, "hour", "keep-daily", "keep-weekly", "keep-monthly") {
					return cmdline.Usagef("--off without --target removes the plan's backup settings; give --target to keep them")
				}
			case target == "":
				return cmdline.Usagef("--target is required (or --off)")
			default:
				in = &client.PlanBackupInput{Target: target}
				if cmd.Flags().Changed("hour") {
					if hour < 0 || hour > 23 {
						return cmdline.Usagef("--hour: %d: give a UTC hour 0 to 23", hour)
					}
					in.Hour = &hour
				}
				for _, k := range []struct {
					flag string
					v    *int
					max  int
					dst  **int
				}{{"keep-daily", &daily, 366, &in.KeepDaily}, {"keep-weekly", &weekly, 520, &in.KeepWeekly}, {"keep-monthly", &monthly, 240, &in.KeepMonthly}} {
					if !cmd.Flags().Changed(k.flag) {
						continue
					}
					if *k.v < 0 || *k.v > k.max {
						return cmdline.Usagef("--%s: %d: give 0 to %d", k.flag, *k.v, k.max)
					}
					*k.dst = k.v
				}
				enabled := !off
				in.Enabled = &enabled
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			p, err := c.SetPlanBackup(cmd.Context(), args[0], in)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "PLAN\tTARGET\tHOUR (UTC)\tKEEP DAILY\tKEEP WEEKLY\tKEEP MONTHLY\tENABLED")
				if b := p.Backup; b != nil {
					h := "default"
					if b.Hour != nil {
						h = fmt.Sprint(*b.Hour)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, b.Target, h, b.KeepDaily, b.KeepWeekly, b.KeepMonthly, yesNo(b.Enabled))
				} else {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\tno\n", p.Name)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "the backup target")
	f.IntVar(&hour, "hour", 0, "UTC hour the daily window starts (default: each account at a time of its own)")
	f.IntVar(&daily, "keep-daily", 7, "keep the newest backup of each of this many days")
	f.IntVar(&weekly, "keep-weekly", 4, "and of this many weeks")
	f.IntVar(&monthly, "keep-monthly", 3, "and of this many months")
	f.BoolVar(&off, "off", false, "no scheduled backups")
	return cmd
}

func backupTargetsCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "targets", Short: "Backup targets (admins)"})
	cmd.AddCommand(backupTargetsListCmd(o), backupTargetsCreateCmd(o), backupTargetsDeleteCmd(o))
	return cmd
}

func (o *ctlOptions) printTargets(cmd *cobra.Command, v any, ts []client.BackupTarget) error {
	return o.print(cmd.OutOrStdout(), v, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tKIND\tWHERE\tACCESS KEY ID\tACCESS ERROR\tCREATED")
		for _, t := range ts {
			where := "-"
			switch t.Kind {
			case "NODE":
				where = deref(t.Node)
				if a := deref(t.SFTPAddress); a != "" {
					where += " (" + a + ")"
				}
			case "S3":
				where = strings.TrimSuffix(deref(t.Endpoint)+"/"+deref(t.Bucket)+"/"+deref(t.Prefix), "/") + " " + deref(t.Region)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Kind, where, dash(deref(t.AccessKeyID)), dash(oneLine(deref(t.AccessError))),
				t.CreatedAt.UTC().Format(time.RFC3339))
		}
	})
}

func backupTargetsListCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List the backup targets", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ts, err := c.BackupTargets(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			if ts == nil {
				ts = []client.BackupTarget{}
			}
			return o.printTargets(cmd, ts, ts)
		},
	}
}

// maxSecretFile bounds what targets create reads of a secret key file.
const maxSecretFile = 4 << 10

// readSecretKey reads an S3 secret key from a file, or standard input for
// "-": the first line, without surrounding white space.
func readSecretKey(cmd *cobra.Command, path string) (string, error) {
	var r io.Reader
	if path == "-" {
		r = cmd.InOrStdin()
	} else {
		fi, err := os.Stat(path)
		if err != nil {
			return "", cmdline.Usagef("--secret-access-key-file: %v", err)
		}
		if !fi.Mode().IsRegular() {
			return "", cmdline.Usagef("--secret-access-key-file: %s is not a regular file", path)
		}
		f, err := os.Open(path)
		if err != nil {
			return "", cmdline.Usagef("--secret-access-key-file: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretFile+1))
	if err != nil {
		return "", cmdline.Usagef("--secret-access-key-file: %v", err)
	}
	if len(b) > maxSecretFile {
		return "", cmdline.Usagef("--secret-access-key-file: more than %d bytes", maxSecretFile)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	s := strings.TrimSpace(line)
	if s == "" {
		return "", cmdline.Usagef("--secret-access-key-file: empty")
	}
	return s, nil
}

func backupTargetsCreateCmd(o *ctlOptions) *cobra.Command {
	var in client.BackupTargetInput
	var kind, secretFile string
	cmd := &cobra.Command{
		Use: "create NAME --kind local|node|s3 [--node N] [--endpoint U --bucket B --prefix P --region R --access-key-id K --secret-access-key-file FILE]",
		Short: "Add a backup target: the nodes' own backup area, a node with role backup, or an S3 bucket " +
			"(the secret key is read from a file, or standard input with -, never from an argument)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.Name, in.Kind = args[0], strings.ToUpper(kind)
			s3Flags := []string{"endpoint", "bucket", "prefix", "region", "access-key-id", "secret-access-key-file"}
			switch in.Kind {
			case "LOCAL":
				if anyChanged(cmd, append(s3Flags, "node")...) {
					return cmdline.Usagef("--kind local takes no other flags")
				}
			case "NODE":
				if anyChanged(cmd, s3Flags...) {
					return cmdline.Usagef("--kind node takes --node only")
				}
				if in.Node == "" {
					return cmdline.Usagef("--kind node needs --node (a node with role backup)")
				}
			case "S3":
				if in.Node != "" {
					return cmdline.Usagef("--kind s3 takes no --node")
				}
				for flag, v := range map[string]string{"endpoint": in.Endpoint, "bucket": in.Bucket, "region": in.Region, "access-key-id": in.AccessKeyID, "secret-access-key-file": secretFile} {
					if v == "" {
						return cmdline.Usagef("--kind s3 needs --%s", flag)
					}
				}
				secret, err := readSecretKey(cmd, secretFile)
				if err != nil {
					return err
				}
				in.SecretAccessKey = secret
			default:
				return cmdline.Usagef("--kind: %q: want local, node or s3", kind)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			t, err := c.CreateBackupTarget(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return o.printTargets(cmd, t, []client.BackupTarget{*t})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "", "local, node or s3")
	f.StringVar(&in.Node, "node", "", "node: a node with role backup")
	f.StringVar(&in.Endpoint, "endpoint", "", "s3: https://host[:port] (http only for a loopback address)")
	f.StringVar(&in.Bucket, "bucket", "", "s3: the bucket")
	f.StringVar(&in.Prefix, "prefix", "", "s3: a key prefix within the bucket")
	f.StringVar(&in.Region, "region", "", "s3: the region")
	f.StringVar(&in.AccessKeyID, "access-key-id", "", "s3: the access key id")
	f.StringVar(&secretFile, "secret-access-key-file", "", "s3: a file holding the secret access key (- for standard input)")
	return cmd
}

func backupTargetsDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use: "delete NAME [--yes]", Short: "Remove a backup target no plan and no backup uses", Args: cobra.ExactArgs(1),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete backup target "+args[0]); err != nil {
			return err
		}
		t, err := c.DeleteBackupTarget(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		return o.printTargets(cmd, t, []client.BackupTarget{*t})
	}
	return cmd
}

// latestSuffix names an account's newest usable backup in place of an id
// ("alice@latest"), so scripts need not parse a listing.
const latestSuffix = "@latest"

// backupID resolves ACCOUNT@latest to the id of the account's newest
// SUCCEEDED or PARTIAL backup; any other argument is an id.
func backupID(cmd *cobra.Command, c *client.Client, arg string) (string, error) {
	account, ok := strings.CutSuffix(arg, latestSuffix)
	if !ok {
		return arg, nil
	}
	if account == "" {
		return "", cmdline.Usagef("%s: want ACCOUNT%s", arg, latestSuffix)
	}
	all, err := c.AllBackups(cmd.Context(), account)
	if err != nil {
		return "", apiError(err)
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Status == "SUCCEEDED" || all[i].Status == "PARTIAL" {
			return all[i].ID, nil
		}
	}
	return "", fmt.Errorf("NOT_FOUND: %s has no finished backup", account)
}
