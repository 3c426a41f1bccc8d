package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func (o *ctlOptions) printUsers(cmd *cobra.Command, v any, users []client.User) error {
	return o.print(cmd.OutOrStdout(), v, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tROLE\tACCOUNT\tOWNER")
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, dash(deref(u.Account)), dash(deref(u.Owner)))
		}
	})
}

func userListCmd(o *ctlOptions) *cobra.Command {
	var f client.UserFilter
	cmd := &cobra.Command{
		Use:   "list [--role admin|reseller|user] [--search TEXT] [--account ACCOUNT]",
		Short: "List the users you manage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.Role = strings.ToUpper(f.Role)
			switch f.Role {
			case "", "ADMIN", "RESELLER", "USER":
			default:
				return cmdline.Usagef("--role %q: want admin, reseller or user", f.Role)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			users, err := c.Users(cmd.Context(), f)
			if err != nil {
				return apiError(err)
			}
			return o.printUsers(cmd, users, users)
		},
	}
	cmd.Flags().StringVar(&f.Role, "role", "", "admin, reseller or user")
	cmd.Flags().StringVar(&f.Search, "search", "", "substring of the name")
	cmd.Flags().StringVar(&f.Account, "account", "", "account id or username")
	return cmd
}

func userUpdateCmd(o *ctlOptions) *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:               "update NAME --account ACCOUNT",
		Short:             "Bind a user's login to another account (its sessions end)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, userNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			if account == "" {
				return cmdline.Usagef("nothing to change: give --account")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			u, err := c.UpdateUser(cmd.Context(), args[0], account)
			if err != nil {
				return apiError(err)
			}
			return o.printUsers(cmd, u, []client.User{*u})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "account id or username")
	return cmd
}

func userDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME [--yes]",
		Short:             "Delete a login and its API tokens",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, userNames),
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete user "+args[0]); err != nil {
			return err
		}
		if err := c.DeleteUser(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		return o.print(cmd.OutOrStdout(), map[string]any{"deleted": args[0]}, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "User %s deleted.\n", args[0])
		})
	}
	return cmd
}

func userResetPasswordCmd(o *ctlOptions) *cobra.Command {
	var pwStdin bool
	cmd := &cobra.Command{
		Use:               "reset-password NAME [--password-stdin]",
		Short:             "Set a user's password (from the terminal or standard input); its sessions end",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNames(0, userNames),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), pwStdin)
			if err != nil {
				return err
			}
			u, err := c.ResetPassword(cmd.Context(), args[0], pw)
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return o.print(cmd.OutOrStdout(), u, nil)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Password of %s reset; its login tokens are revoked.\n", u.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

func whoamiCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the token signs in as",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			u, err := c.Me(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, dash(deref(u.Account)), o.server)
			})
		},
	}
}
