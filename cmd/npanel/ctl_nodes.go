package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func nodeUpdateCmd(o *ctlOptions) *cobra.Command {
	var set, remove []string
	var roles string
	var maxAccounts int
	var diskMB int64
	cmd := &cobra.Command{
		Use:               "update NAME [--label k=v]... [--remove-label k]... [--roles web,dns] [--max-accounts N] [--disk-mb N]",
		Short:             "Change a node's labels, roles or capacity (a role its accounts, zones or databases need stays)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !anyChanged(cmd, "label", "remove-label", "roles", "max-accounts", "disk-mb") {
				return cmdline.Usagef("nothing to change: give --label, --remove-label, --roles, --max-accounts or --disk-mb")
			}
			var in client.NodeUpdate
			var err error
			if cmd.Flags().Changed("roles") {
				if in.Roles, err = parseRoles(roles); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("max-accounts") {
				if maxAccounts < 0 {
					return cmdline.Usagef("--max-accounts must not be negative")
				}
				in.MaxAccounts = &maxAccounts
			}
			if cmd.Flags().Changed("disk-mb") {
				if diskMB < 0 {
					return cmdline.Usagef("--disk-mb must not be negative")
				}
				in.DiskMB = &diskMB
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if len(set)+len(remove) > 0 {
				n, err := c.Node(cmd.Context(), args[0])
				if err != nil {
					return apiError(err)
				}
				if n == nil {
					return fmt.Errorf("NOT_FOUND: node %q not found", args[0])
				}
				current := make(map[string]string, len(n.Labels))
				for _, l := range n.Labels {
					current[l.Key] = l.Value
				}
				if in.Labels, err = mergeLabels(current, set, remove); err != nil {
					return err
				}
			}
			n, err := c.UpdateNode(cmd.Context(), args[0], in)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), n, func(tw *tabwriter.Writer) {
				labels := make(map[string]string, len(n.Labels))
				for _, l := range n.Labels {
					labels[l.Key] = l.Value
				}
				disk := "reported"
				if n.DiskMB > 0 {
					disk = fmt.Sprint(n.DiskMB)
				}
				fmt.Fprintln(tw, "NAME\tSTATUS\tROLES\tLABELS\tMAX ACCOUNTS\tDISK MB\tDRAINING")
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%t\n", n.Name, n.Status, strings.ToLower(strings.Join(n.Roles, ",")),
					formatLabelMap(labels), n.MaxAccounts, disk, n.Draining)
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&set, "label", nil, "set label key=value (repeatable)")
	f.StringArrayVar(&remove, "remove-label", nil, "remove label key (repeatable)")
	f.StringVar(&roles, "roles", "", "the node's roles, comma-separated (replaces them): web,dns,mail,db,backup")
	f.IntVar(&maxAccounts, "max-accounts", 0, "accounts the scheduler may place (0: the default)")
	f.Int64Var(&diskMB, "disk-mb", 0, "disk the scheduler may allocate in MB (0: what the agent reports)")
	return cmd
}
