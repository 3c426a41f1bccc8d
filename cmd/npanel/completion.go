package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
)

// Dynamic shell completion: cobra calls these through the hidden
// __complete command, with the flags typed so far, so --server and the
// saved login apply. A failure completes nothing rather than printing an
// error into the user's shell.

type completeFunc = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective)

const completeTimeout = 3 * time.Second

// completeNames completes the argument at position pos (0-based) with the
// names list returns; other positions complete nothing.
func (o *ctlOptions) completeNames(pos int, list func(context.Context, *client.Client, []string, string) ([]string, error)) completeFunc {
	return func(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != pos {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := o.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
		defer cancel()
		names, err := list(ctx, c, args, prefix)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		out := make([]cobra.Completion, 0, len(names))
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func (o *ctlOptions) completeNodes(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return o.completeNames(0, func(ctx context.Context, c *client.Client, _ []string, _ string) ([]string, error) {
		nodes, err := c.Nodes(ctx)
		names := make([]string, len(nodes))
		for i, n := range nodes {
			names[i] = n.Name
		}
		return names, err
	})(cmd, args, prefix)
}

// accountNames lists usernames starting with prefix (the API's search is
// a substring match; the prefix filter in completeNames narrows it).
func accountNames(ctx context.Context, c *client.Client, _ []string, prefix string) ([]string, error) {
	accts, _, err := c.Accounts(ctx, client.AccountFilter{Search: prefix}, 200, "")
	names := make([]string, len(accts))
	for i, a := range accts {
		names[i] = a.Username
	}
	return names, err
}

func (o *ctlOptions) completeAccounts(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return o.completeNames(0, accountNames)(cmd, args, prefix)
}

func (o *ctlOptions) completeZones(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return o.completeNames(0, func(ctx context.Context, c *client.Client, _ []string, prefix string) ([]string, error) {
		zones, _, err := c.Zones(ctx, prefix, 200, "")
		names := make([]string, len(zones))
		for i, z := range zones {
			names[i] = z.Name
		}
		return names, err
	})(cmd, args, prefix)
}

// completeAccountThenDatabase completes ACCOUNT, then that account's
// DATABASE.
func (o *ctlOptions) completeAccountThenDatabase(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return o.completeAccounts(cmd, args, prefix)
	}
	return o.completeNames(1, func(ctx context.Context, c *client.Client, args []string, _ string) ([]string, error) {
		dbs, err := c.Databases(ctx, args[0])
		names := make([]string, len(dbs))
		for i, d := range dbs {
			names[i] = d.Name
		}
		return names, err
	})(cmd, args, prefix)
}

// completeZonesThenFile completes ZONE, then a file name.
func (o *ctlOptions) completeZonesThenFile(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return o.completeZones(cmd, args, prefix)
	}
	return nil, cobra.ShellCompDirectiveDefault
}
