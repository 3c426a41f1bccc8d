package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func planUpdateCmd(o *ctlOptions) *cobra.Command {
	var in client.PlanUpdate
	var disk, bandwidth int64
	var domains, mailboxes, databases int
	var php string
	var allowExec bool
	cmd := &cobra.Command{
		Use:               "update NAME [--disk-mb N] [--bandwidth-mb N] [--domains N] [--mailboxes N] [--databases N] [--php 8.2,8.3] [--allow-exec=true|false]",
		Short:             "Change a plan; the accounts on it follow (refused if they use more than it would allow)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, planNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !anyChanged(cmd, "disk-mb", "bandwidth-mb", "domains", "mailboxes", "databases", "php", "allow-exec") {
				return cmdline.Usagef("nothing to change: give at least one of --disk-mb, --bandwidth-mb, --domains, --mailboxes, --databases, --php, --allow-exec")
			}
			if f.Changed("disk-mb") {
				in.DiskMB = &disk
			}
			if f.Changed("bandwidth-mb") {
				in.BandwidthMB = &bandwidth
			}
			if f.Changed("domains") {
				in.Domains = &domains
			}
			if f.Changed("mailboxes") {
				in.Mailboxes = &mailboxes
			}
			if f.Changed("databases") {
				in.Databases = &databases
			}
			if f.Changed("php") {
				in.PHPVersions = cmdline.SplitList(php)
				if len(in.PHPVersions) == 0 {
					return cmdline.Usagef("--php needs at least one version")
				}
			}
			if f.Changed("allow-exec") {
				in.AllowExec = &allowExec
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			p, err := c.UpdatePlan(cmd.Context(), args[0], in)
			if err != nil {
				return apiError(err)
			}
			return o.printPlan(cmd, p)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&disk, "disk-mb", 0, "disk quota in MB")
	f.Int64Var(&bandwidth, "bandwidth-mb", 0, "monthly bandwidth in MB")
	f.IntVar(&domains, "domains", 0, "domains including the primary")
	f.IntVar(&mailboxes, "mailboxes", 0, "mailboxes")
	f.IntVar(&databases, "databases", 0, "databases")
	f.StringVar(&php, "php", "", "comma-separated PHP versions allowed (replaces the list)")
	f.BoolVar(&allowExec, "allow-exec", false, "let the accounts' PHP start processes; admins only")
	return cmd
}

func (o *ctlOptions) printPlan(cmd *cobra.Command, p *client.Plan) error {
	return o.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tDISK MB\tBANDWIDTH MB\tDOMAINS\tMAILBOXES\tDATABASES\tPHP\tEXEC\tOWNER")
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%t\t%s\n", p.Name, p.DiskMB, p.BandwidthMB, p.Domains, p.Mailboxes, p.Databases,
			strings.Join(p.PHPVersions, ","), p.AllowExec, dash(deref(p.Owner)))
	})
}

func planDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME [--yes]",
		Short:             "Delete a plan no account uses",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, planNames),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete plan "+args[0]); err != nil {
			return err
		}
		if err := c.DeletePlan(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		return o.print(cmd.OutOrStdout(), map[string]any{"deleted": args[0]}, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "Plan %s deleted.\n", args[0])
		})
	}
	return cmd
}

func resellerUpdateCmd(o *ctlOptions) *cobra.Command {
	var in client.ResellerUpdate
	var maxAccounts int
	var maxDisk int64
	var plans, selector string
	cmd := &cobra.Command{
		Use:               "update NAME [--max-accounts N] [--max-disk-mb N] [--plans a,b] [--node-selector SEL]",
		Short:             "Change a reseller's limits (not below its usage), plans or node selector",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, resellerNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !anyChanged(cmd, "max-accounts", "max-disk-mb", "plans", "node-selector") {
				return cmdline.Usagef("nothing to change: give at least one of --max-accounts, --max-disk-mb, --plans, --node-selector")
			}
			if f.Changed("max-accounts") {
				in.MaxAccounts = &maxAccounts
			}
			if f.Changed("max-disk-mb") {
				in.MaxDiskMB = &maxDisk
			}
			if f.Changed("plans") {
				in.Plans = nonNilList(cmdline.SplitList(plans))
			}
			if f.Changed("node-selector") {
				in.NodeSelector = &selector
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			r, err := c.UpdateReseller(cmd.Context(), args[0], in)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tACCOUNTS\tDISK MB\tPLANS\tNODE SELECTOR")
				fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\t%s\t%s\n", r.Name, r.Usage.Accounts, r.MaxAccounts, r.Usage.DiskMB, r.MaxDiskMB,
					dash(strings.Join(r.Plans, ",")), dash(r.NodeSelector))
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&maxAccounts, "max-accounts", 0, "most accounts the reseller may own")
	f.Int64Var(&maxDisk, "max-disk-mb", 0, "most disk (MB) the reseller's accounts may add up to")
	f.StringVar(&plans, "plans", "", "comma-separated admin plans the reseller may sell (replaces the list; \"\" for none)")
	f.StringVar(&selector, "node-selector", "", "label selector for the nodes its accounts may use (\"\" for any)")
	return cmd
}

func nonNilList(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func resellerDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME [--yes]",
		Short:             "Delete a reseller that owns no accounts, with its login and own plans",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, resellerNames),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete reseller "+args[0]); err != nil {
			return err
		}
		if err := c.DeleteReseller(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		return o.print(cmd.OutOrStdout(), map[string]any{"deleted": args[0]}, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "Reseller %s deleted.\n", args[0])
		})
	}
	return cmd
}

func accountChangePlanCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:               "change-plan ACCOUNT PLAN",
		Short:             "Move an account (id or username) to another plan; its node applies it",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccountThenPlan,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			a, err := c.ChangeAccountPlan(cmd.Context(), args[0], args[1])
			if err != nil {
				return apiError(err)
			}
			return o.printAccount(cmd.OutOrStdout(), a)
		},
	}
}

func accountChangeOwnerCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:               "change-owner ACCOUNT OWNER",
		Short:             "Give an account (id or username) to another reseller or admin (admin)",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccountThenOwner,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			a, err := c.ChangeAccountOwner(cmd.Context(), args[0], args[1])
			if err != nil {
				return apiError(err)
			}
			return o.printAccount(cmd.OutOrStdout(), a)
		},
	}
}
