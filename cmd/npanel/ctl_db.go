package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// dbCmd is "npanel ctl db": an account's databases and database users.
// Passwords are never taken as arguments (they would show in ps and shell
// history): --password-stdin reads one, and without it the server generates
// one and it is printed this once.
func dbCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "db", Short: "Databases and database users of an account"})
	var delYes, userDelYes *bool // set with the commands below

	list := &cobra.Command{
		Use: "list ACCOUNT", Short: "List an account's databases (size and tables live from the node) and users", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			dbs, err := c.Databases(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			users, err := c.DatabaseUsers(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			v := struct {
				Databases []client.Database     `json:"databases"`
				Users     []client.DatabaseUser `json:"users"`
			}{dbs, users}
			return o.print(cmd.OutOrStdout(), v, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "DATABASE\tENGINE\tSTATE\tSIZE\tTABLES\tMEASURED\tUSERS\tREASON")
				for _, d := range dbs {
					size, tables, measured := "?", "?", "-"
					if d.SizeBytes != nil {
						size = humanBytes(*d.SizeBytes)
					}
					if d.Tables != nil {
						tables = fmt.Sprint(*d.Tables)
					}
					if d.MeasuredAt != nil {
						measured = time.Since(*d.MeasuredAt).Truncate(time.Second).String() + " ago"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, strings.ToLower(d.Engine), d.State, size, tables, measured, dash(strings.Join(d.Users, ",")), dash(deref(d.Reason)))
				}
				for _, d := range dbs {
					if !d.Live {
						fmt.Fprintln(tw, "(not reported by the node yet: sizes and tables unknown, users as recorded)")
						break
					}
				}
				if len(users) > 0 {
					fmt.Fprintln(tw, "\nUSER\tENGINE\tSTATE\tGRANTS\tREASON")
					for _, u := range users {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, strings.ToLower(u.Engine), u.State, dash(grantsText(u.Grants)), dash(deref(u.Reason)))
					}
				}
			})
		},
	}

	var engine string
	create := &cobra.Command{
		Use: "create ACCOUNT NAME [--engine mariadb|postgresql]", Short: "Create the database <username>_NAME", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			d, err := c.CreateDatabase(cmd.Context(), id, args[1], engine)
			if err != nil {
				return apiError(err)
			}
			if err := o.print(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Database:\t%s\nEngine:\t%s\nState:\t%s\n", d.Name, strings.ToLower(d.Engine), d.State)
			}); err != nil {
				return err
			}
			return stateError("create database "+d.Name, d.State, d.Reason)
		},
	}
	create.Flags().StringVar(&engine, "engine", "", "mariadb (default) or postgresql")

	del := &cobra.Command{
		Use: "delete ACCOUNT DATABASE", Short: "Dump a database into the account's backups, then drop it", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccountThenDatabase,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := confirm(cmd, *delYes, fmt.Sprintf("delete database %s of %s (a dump is kept in its backups)", args[1], args[0])); err != nil {
				return err
			}
			d, err := c.DeleteDatabase(cmd.Context(), id, args[1])
			if err != nil {
				return apiError(err)
			}
			if err := o.print(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Database:\t%s\nState:\t%s\n", d.Name, d.State)
				if d.Dump != nil {
					fmt.Fprintf(tw, "Dump:\t%s (%s)\n", *d.Dump, humanBytes(deref64(d.DumpBytes)))
				}
			}); err != nil {
				return err
			}
			return stateError("delete database "+d.Name, d.State, d.Reason)
		},
	}

	delYes = yesFlag(del)

	var pwStdin bool
	var userEngine string
	userCreate := &cobra.Command{
		Use: "user-create ACCOUNT NAME [--password-stdin] [--engine mariadb|postgresql]", Short: "Create the database user <username>_NAME", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			pw, err := dbPassword(cmd, pwStdin)
			if err != nil {
				return err
			}
			u, err := c.CreateDatabaseUser(cmd.Context(), id, args[1], pw, userEngine)
			if err != nil {
				return apiError(err)
			}
			return o.printUserPayload(cmd, u)
		},
	}
	userCreate.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input (default: generate one and print it once)")
	userCreate.Flags().StringVar(&userEngine, "engine", "", "mariadb (default) or postgresql")

	userDelete := &cobra.Command{
		Use: "user-delete ACCOUNT USER", Short: "Drop a database user", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := confirm(cmd, *userDelYes, fmt.Sprintf("drop database user %s of %s", args[1], args[0])); err != nil {
				return err
			}
			u, err := c.DeleteDatabaseUser(cmd.Context(), id, args[1])
			if err != nil {
				return apiError(err)
			}
			if err := o.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "User:\t%s\nState:\t%s\n", u.Name, u.State)
			}); err != nil {
				return err
			}
			return stateError("delete database user "+u.Name, u.State, u.Reason)
		},
	}

	userDelYes = yesFlag(userDelete)

	grant := &cobra.Command{
		Use:   "grant ACCOUNT DATABASE USER [PRIVILEGE,...|ALL|none]",
		Short: "Set exactly the privileges a user holds on a database (none revokes them)", Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			privs := []string{}
			if !strings.EqualFold(args[3], "none") {
				for _, p := range strings.Split(args[3], ",") {
					privs = append(privs, strings.TrimSpace(p))
				}
			}
			u, err := c.SetDatabasePrivileges(cmd.Context(), id, args[1], args[2], privs)
			if err != nil {
				return apiError(err)
			}
			if err := o.printUser(cmd, u); err != nil {
				return err
			}
			return stateError("grant to "+u.Name, u.State, u.Reason)
		},
	}

	var passwdStdin bool
	passwd := &cobra.Command{
		Use: "passwd ACCOUNT USER [--password-stdin]", Short: "Change a database user's password (default: generate one)", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			pw, err := dbPassword(cmd, passwdStdin)
			if err != nil {
				return err
			}
			u, err := c.ChangeDatabaseUserPassword(cmd.Context(), id, args[1], pw)
			if err != nil {
				return apiError(err)
			}
			return o.printUserPayload(cmd, u)
		},
	}
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the password from standard input (default: generate one and print it once)")

	optimize := &cobra.Command{
		Use: "optimize ACCOUNT DATABASE", Short: "Optimize a database's tables", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccountThenDatabase,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			r, err := c.OptimizeDatabase(cmd.Context(), id, args[1])
			if err != nil {
				return apiError(err)
			}
			if err := o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Database:\t%s\nStatus:\t%s\n", r.Name, r.Status)
				if r.Tables != nil {
					fmt.Fprintf(tw, "Tables:\t%d\n", *r.Tables)
				}
			}); err != nil {
				return err
			}
			if r.Status == "FAILED" {
				return fmt.Errorf("optimize %s: %s", r.Name, deref(r.Reason))
			}
			return nil
		},
	}

	cmd.AddCommand(list, create, del, userCreate, userDelete, grant, passwd, optimize)
	return cmd
}

// dbPassword reads a password from stdin when asked to; "" lets the server
// generate one.
func dbPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	if !fromStdin {
		return "", nil
	}
	pw, err := readPassword(cmd.InOrStdin(), true)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if pw == "" {
		return "", cmdline.Usagef("--password-stdin: empty password")
	}
	return pw, nil
}

// stateError turns a FAILED outcome into a non-zero exit with the node's
// reason.
func stateError(what, state string, reason *string) error {
	if state == "FAILED" {
		return fmt.Errorf("%s failed: %s", what, deref(reason))
	}
	return nil
}

func grantsText(gs []client.DatabaseGrant) string {
	parts := make([]string, 0, len(gs))
	for _, g := range gs {
		parts = append(parts, g.Database+":"+strings.Join(g.Privileges, "+"))
	}
	return strings.Join(parts, " ")
}

func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func (o *ctlOptions) printUser(cmd *cobra.Command, u *client.DatabaseUser) error {
	return o.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "User:\t%s\nEngine:\t%s\nState:\t%s\n", u.Name, strings.ToLower(u.Engine), u.State)
		for _, g := range u.Grants {
			fmt.Fprintf(tw, "Grant:\t%s: %s\n", g.Database, strings.Join(g.Privileges, ", "))
		}
		if u.Reason != nil {
			fmt.Fprintf(tw, "Reason:\t%s\n", *u.Reason)
		}
	})
}

func (o *ctlOptions) printUserPayload(cmd *cobra.Command, p *client.DatabaseUserPayload) error {
	if err := o.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "User:\t%s\nEngine:\t%s\nState:\t%s\n", p.User.Name, strings.ToLower(p.User.Engine), p.User.State)
		if p.Password != nil {
			fmt.Fprintf(tw, "Password:\t%s\t(shown this once; it is not stored)\n", *p.Password)
		}
		if p.User.Reason != nil {
			fmt.Fprintf(tw, "Reason:\t%s\n", *p.User.Reason)
		}
	}); err != nil {
		return err
	}
	return stateError("database user "+p.User.Name, p.User.State, p.User.Reason)
}

// humanBytes prints a size in binary units ("1.5 MiB"); -o json keeps bytes.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
