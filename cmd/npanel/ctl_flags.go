package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/validate"
)

// withCommands adds subcommands to a command group built elsewhere, so
// that new verbs live in their own files without moving the old ones.
func withCommands(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

// anyChanged reports whether any of the named flags was given.
func anyChanged(cmd *cobra.Command, names ...string) bool {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// nodeRoles are the roles a node may have, as the API spells them.
var nodeRoles = []string{"web", "dns", "mail", "db", "backup"}

// parseRoles reads --roles: a comma-separated list of node roles, any
// case, each once; the result is upper-case, as the API's NodeRole enum.
func parseRoles(s string) ([]string, error) {
	return parseEnumList("role", "--roles", nodeRoles, strings.Split(s, ","))
}

// parseEnumList reads a list flag of values of an API enum: any case,
// blanks skipped, at least one, each once, each one of allowed (as the
// CLI spells them). The result is upper-case, as the enum.
func parseEnumList(what, flag string, allowed, in []string) ([]string, error) {
	var out []string
	for _, v := range in {
		v = strings.ToLower(strings.TrimSpace(v))
		if v == "" {
			continue
		}
		if !slices.Contains(allowed, v) {
			return nil, cmdline.Usagef("%s %q: want any of %s", what, v, strings.Join(allowed, ","))
		}
		up := strings.ToUpper(v)
		if slices.Contains(out, up) {
			return nil, cmdline.Usagef("%s %q given twice", what, v)
		}
		out = append(out, up)
	}
	if len(out) == 0 {
		return nil, cmdline.Usagef("%s needs at least one of %s", flag, strings.Join(allowed, ","))
	}
	return out, nil
}

// mergeLabels applies --label key=value (set) and --remove-label key to a
// node's current labels and returns the whole new set, checked with the
// server's label rules. Setting and removing one key is refused, as is
// removing a label the node does not have (most likely a typo).
func mergeLabels(current map[string]string, set, remove []string) (map[string]string, error) {
	out := maps.Clone(current)
	if out == nil {
		out = map[string]string{}
	}
	setKeys := map[string]bool{}
	for _, l := range set {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, cmdline.Usagef("label %q: want key=value", l)
		}
		if setKeys[k] {
			return nil, cmdline.Usagef("label %q given twice", k)
		}
		setKeys[k] = true
		out[k] = v
	}
	for _, k := range remove {
		if setKeys[k] {
			return nil, cmdline.Usagef("label %q both set and removed", k)
		}
		if _, ok := current[k]; !ok {
			return nil, cmdline.Usagef("the node has no label %q to remove", k)
		}
		delete(out, k)
	}
	if err := validate.Labels(out); err != nil {
		return nil, cmdline.Usagef("%v", err)
	}
	return out, nil
}

func formatLabelMap(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%s", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// planNames, resellerNames and userNames list what the caller may name,
// for completion.
func planNames(ctx context.Context, c *client.Client, _ []string, _ string) ([]string, error) {
	plans, err := c.Plans(ctx)
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.Name
	}
	return names, err
}

func resellerNames(ctx context.Context, c *client.Client, _ []string, _ string) ([]string, error) {
	rs, err := c.Resellers(ctx)
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return names, err
}

func userNames(ctx context.Context, c *client.Client, _ []string, prefix string) ([]string, error) {
	us, err := c.Users(ctx, client.UserFilter{Search: prefix})
	names := make([]string, len(us))
	for i, u := range us {
		names[i] = u.Name
	}
	return names, err
}

// completeAccountThenPlan completes an account, then a plan.
func (o *ctlOptions) completeAccountThenPlan(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 1 {
		return o.completeNames(1, planNames)(cmd, args, prefix)
	}
	return o.completeAccounts(cmd, args, prefix)
}

// completeAccountThenOwner completes an account, then a reseller.
func (o *ctlOptions) completeAccountThenOwner(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 1 {
		return o.completeNames(1, resellerNames)(cmd, args, prefix)
	}
	return o.completeAccounts(cmd, args, prefix)
}
