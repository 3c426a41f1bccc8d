package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/validate"
)

// importCmd is "npanel ctl import": cPanel archives a node holds in its
// import area (admins). analyze reports what an import would take; cpanel
// starts one, which runs on the control plane and survives restarts:
// --wait follows it to its end.
func importCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "import", Short: "Import cPanel account backups from a node's import area (admins)"})
	cmd.AddCommand(importAnalyzeCmd(o), importCpanelCmd(o), importShowCmd(o), importListCmd(o))
	cmd.AddCommand(importScanCmd(o), importFetchCmd(o), importFetchShowCmd(o), importFetchesCmd(o))
	return cmd
}

// importPathArg checks an archive path before asking the server, by the
// rule the server and the node apply.
func importPathArg(p string) error {
	err := validate.CpanelArchivePath(p)
	var e *validate.Error
	switch {
	case err == nil:
		return nil
	case strings.HasPrefix(p, "/"):
		return cmdline.Usagef("PATH %q: give it relative to the node's import area (/var/lib/npanel/import)", p)
	case errors.As(err, &e):
		return cmdline.Usagef("PATH %q: %s", p, e.Reason)
	}
	return cmdline.Usagef("PATH %q: %v", p, err)
}

func importAnalyzeCmd(o *ctlOptions) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use: "analyze --node N PATH", Short: "Report what an import of a cPanel archive would take, adapt and skip",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return cmdline.Usagef("--node is required")
			}
			if err := importPathArg(args[0]); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			rep, err := c.AnalyzeCpanelBackup(cmd.Context(), node, args[0])
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), rep, func(tw *tabwriter.Writer) { printCpanelReport(tw, rep) })
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node whose import area holds the archive")
	return cmd
}

func importCpanelCmd(o *ctlOptions) *cobra.Command {
	var in client.ImportCpanelInput
	var username string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cpanel --node N --owner O --plan P [--username U] [--wait] PATH",
		Short: "Import a cPanel archive into a new account on the node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for flag, v := range map[string]string{"node": in.Node, "owner": in.Owner, "plan": in.Plan} {
				if v == "" {
					return cmdline.Usagef("--%s is required", flag)
				}
			}
			if err := importPathArg(args[0]); err != nil {
				return err
			}
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			in.Path = args[0]
			if username != "" {
				in.Username = &username
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			im, err := c.ImportCpanelBackup(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			if wait {
				if im, err = o.waitImport(cmd, c, im, timeout); err != nil {
					return err
				}
			}
			if err := o.printImport(cmd, im); err != nil {
				return err
			}
			return importOutcome(im)
		},
	}
	cmd.Flags().StringVar(&in.Node, "node", "", "the node whose import area holds the archive; the account is placed there")
	cmd.Flags().StringVar(&in.Owner, "owner", "", "the account's owner (an admin or a reseller)")
	cmd.Flags().StringVar(&in.Plan, "plan", "", "the account's plan")
	cmd.Flags().StringVar(&username, "username", "", "the account's username (default: the cPanel user's)")
	waitFlags(cmd, &wait, &timeout, "import")
	return cmd
}

// importOutcome turns a PARTIAL or FAILED import into a non-zero exit.
func importOutcome(im *client.CpanelImport) error {
	switch im.Status {
	case "FAILED":
		return fmt.Errorf("import %s failed: %s", im.ID, dash(oneLine(deref(im.Error))))
	case "PARTIAL":
		var failed []string
		for _, it := range im.Items {
			if it.Disposition == "FAILED" {
				failed = append(failed, it.Kind+" "+it.Name)
			}
		}
		return fmt.Errorf("import %s is PARTIAL: %s failed", im.ID, strings.Join(failed, ", "))
	}
	return nil
}

// waitImport polls an import until it has finished, printing its status
// changes on stderr (not with -o json).
func (o *ctlOptions) waitImport(cmd *cobra.Command, c *client.Client, im *client.CpanelImport, timeout time.Duration) (*client.CpanelImport, error) {
	show := o.statusChanges(cmd.ErrOrStderr())
	return poller[client.CpanelImport]{
		kind: "import", id: im.ID, every: 500 * time.Millisecond,
		get:    func(ctx context.Context) (*client.CpanelImport, error) { return c.CpanelImport(ctx, im.ID) },
		done:   (*client.CpanelImport).Finished,
		status: func(im *client.CpanelImport) string { return im.Status },
		show:   func(im *client.CpanelImport) { show(im.Status) },
	}.wait(cmd.Context(), im, timeout)
}

func importShowCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "show ID|ACCOUNT", Short: "Show an import (or the one that created an account) with its report", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			im, err := c.CpanelImport(cmd.Context(), args[0])
			if err != nil && !strings.Contains(err.Error(), "NOT_FOUND") {
				return apiError(err)
			}
			if im == nil {
				if im, err = c.AccountImport(cmd.Context(), args[0]); err != nil {
					return apiError(err)
				}
			}
			if im == nil {
				return fmt.Errorf("NOT_FOUND: no import %q, nor an account created by one", args[0])
			}
			return o.printImport(cmd, im)
		},
	}
}

func importListCmd(o *ctlOptions) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: "list", Short: "List imports, oldest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			all, err := allPages(limit, func(first int, after string) ([]client.CpanelImport, string, error) {
				return c.CpanelImports(cmd.Context(), first, after)
			})
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), all, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSTATUS\tNODE\tPATH\tUSERNAME\tACCOUNT\tCREATED")
				for _, im := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.ID, im.Status, im.Node, im.Path, dash(deref(im.Username)),
						dash(deref(im.Account)), im.CreatedAt.UTC().Format(time.RFC3339))
				}
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many")
	return cmd
}

func printCpanelItems(tw *tabwriter.Writer, items []client.CpanelItem) {
	fmt.Fprintln(tw, "KIND\tNAME\tDISPOSITION\tNOTE")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Kind, it.Name, it.Disposition, oneLine(it.Note))
	}
}

func printCpanelReport(tw *tabwriter.Writer, r *client.CpanelReport) {
	fmt.Fprintf(tw, "cPanel user:\t%s\n", r.Username)
	fmt.Fprintf(tw, "Layout:\t%s\n", r.Layout)
	fmt.Fprintf(tw, "Main domain:\t%s\n", r.MainDomain)
	fmt.Fprintf(tw, "cPanel plan:\t%s\n", dash(r.Plan))
	fmt.Fprintf(tw, "Fidelity:\t%d%%\n", r.FidelityPercent)
	fmt.Fprintf(tw, "Archive:\t%s; home %d files, %s\n", humanBytes(r.ArchiveBytes), r.HomeFiles, humanBytes(r.HomeBytes))
	fmt.Fprintln(tw)
	printCpanelItems(tw, r.Items)
}

func (o *ctlOptions) printImport(cmd *cobra.Command, im *client.CpanelImport) error {
	return o.print(cmd.OutOrStdout(), im, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\n", im.ID)
		fmt.Fprintf(tw, "Status:\t%s\n", im.Status)
		fmt.Fprintf(tw, "Archive:\t%s:%s\n", im.Node, im.Path)
		fmt.Fprintf(tw, "Account:\t%s (%s)\n", dash(deref(im.Username)), dash(deref(im.Account)))
		fmt.Fprintf(tw, "Owner, plan:\t%s, %s\n", im.Owner, im.Plan)
		fmt.Fprintf(tw, "Created:\t%s by %s\n", im.CreatedAt.UTC().Format(time.RFC3339), im.CreatedBy)
		fmt.Fprintf(tw, "Finished:\t%s\n", timeOrDash(im.FinishedAt))
		if im.Report != nil {
			fmt.Fprintf(tw, "Fidelity:\t%d%% (analysis)\n", im.Report.FidelityPercent)
		}
		if im.Error != nil {
			fmt.Fprintf(tw, "Error:\t%s\n", oneLine(*im.Error))
		}
		if len(im.Items) > 0 {
			fmt.Fprintln(tw)
			printCpanelItems(tw, im.Items)
		}
	})
}
