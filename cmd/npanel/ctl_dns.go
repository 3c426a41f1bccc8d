package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

func dnsCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "dns", Short: "DNS zones and records"})
	var search string
	var limit int
	list := &cobra.Command{
		Use: "list [--search TEXT]", Short: "List zones", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			all, err := allPages(limit, func(first int, after string) ([]client.Zone, string, error) {
				return c.Zones(cmd.Context(), search, first, after)
			})
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), all, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ZONE\tSTATUS\tNODE\tSERIAL\tDNSSEC\tRECORDS")
				for _, z := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%d\n", z.Name, z.Status, dash(deref(z.Node)), serialText(z.Serial), z.DNSSEC, len(z.Records))
				}
			})
		},
	}
	list.Flags().StringVar(&search, "search", "", "substring of the zone name")
	list.Flags().IntVar(&limit, "limit", 1000, "most zones to list")

	show := &cobra.Command{
		Use: "show ZONE", Short: "Show a zone and its records", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			z, err := c.Zone(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if z == nil {
				return fmt.Errorf("NOT_FOUND: zone %q not found", args[0])
			}
			return o.printZone(cmd, z)
		},
	}

	var rec client.RecordInput
	var ttl, prio int
	recordFlags := func(c *cobra.Command) {
		c.Flags().IntVar(&ttl, "ttl", 0, "TTL in seconds (default: 3600 for a new record, unchanged on update)")
		c.Flags().IntVar(&prio, "priority", -1, "priority (MX, SRV)")
	}
	fill := func(args []string) {
		rec = client.RecordInput{Name: args[0], Type: strings.ToUpper(args[1]), Content: args[2]}
		if ttl > 0 {
			rec.TTL = &ttl
		}
		if prio >= 0 {
			rec.Priority = &prio
		}
	}
	add := &cobra.Command{
		Use: "add ZONE NAME TYPE CONTENT [--ttl N] [--priority N]", Short: "Add a record (NAME: @, relative, or absolute with a dot)", Args: cobra.ExactArgs(4),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			fill(args[1:])
			r, err := c.AddRecord(cmd.Context(), args[0], rec)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "Record %s added: %s\n", r.ID, recordText(*r)) })
		},
	}
	recordFlags(add)
	update := &cobra.Command{
		Use:   "update ZONE ID [NAME TYPE CONTENT] [--ttl N] [--priority N]",
		Short: "Change a record; what is not given keeps its value",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 && len(args) != 5 {
				return cmdline.Usagef("want ZONE ID, optionally followed by NAME TYPE CONTENT")
			}
			return nil
		},
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			z, err := c.Zone(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if z == nil {
				return fmt.Errorf("NOT_FOUND: zone %q not found", args[0])
			}
			i := slices.IndexFunc(z.Records, func(r client.DNSRecord) bool { return r.ID == args[1] })
			if i < 0 {
				return fmt.Errorf("NOT_FOUND: zone %s has no record %q", args[0], args[1])
			}
			old := z.Records[i]
			if len(args) == 5 {
				fill(args[2:])
			} else {
				fill([]string{absolute(old.Name), old.Type, old.Content})
			}
			if rec.TTL == nil {
				rec.TTL = &old.TTL
			}
			if rec.Priority == nil && strings.EqualFold(rec.Type, old.Type) {
				rec.Priority = old.Priority
			}
			r, err := c.UpdateRecord(cmd.Context(), args[0], args[1], rec)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "Record %s: %s\n", r.ID, recordText(*r)) })
		},
	}
	recordFlags(update)
	var delYes *bool
	del := &cobra.Command{
		Use: "delete ZONE ID", Short: "Delete a record", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := confirm(cmd, *delYes, fmt.Sprintf("delete record %s of zone %s", args[1], args[0])); err != nil {
				return err
			}
			if err := c.DeleteRecord(cmd.Context(), args[0], args[1]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Record %s deleted.\n", args[1])
			return nil
		},
	}
	delYes = yesFlag(del)
	imp := &cobra.Command{
		Use: "import ZONE FILE", Short: "Import a BIND zone file (- for stdin)", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeZonesThenFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			var text []byte
			var err error
			if args[1] == "-" {
				text, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 8<<20))
			} else {
				text, err = os.ReadFile(args[1])
			}
			if err != nil {
				return cmdline.Usagef("read %s: %v", args[1], err)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			res, err := c.ImportZone(cmd.Context(), args[0], string(text))
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Imported %d records, refused %d entries, skipped %d.\n", len(res.Imported), len(res.Refused), len(res.Skipped))
				for _, l := range res.Refused {
					fmt.Fprintf(tw, "  refused line %d\t%s\t%s\n", l.Line, l.Text, deref(l.Reason))
				}
				for _, l := range res.Skipped {
					fmt.Fprintf(tw, "  skipped line %d\t%s\t%s\n", l.Line, l.Text, deref(l.Reason))
				}
			})
		},
	}
	validateCmd := &cobra.Command{
		Use: "validate ZONE", Short: "Check a zone's records as a whole", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ok, errs, err := c.ValidateZone(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if !ok {
				return fmt.Errorf("zone %s is not valid:\n  %s", args[0], strings.Join(errs, "\n  "))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Zone %s is valid.\n", args[0])
			return nil
		},
	}
	dnssec := group(&cobra.Command{Use: "dnssec", Short: "Sign zones and roll their keys"})
	dnssec.AddCommand(&cobra.Command{
		Use: "enable ZONE", Short: "Sign a zone; prints the DS records for the registrar", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			z, ds, err := c.EnableDNSSEC(cmd.Context(), args[0], 60)
			if err != nil {
				return apiError(err)
			}
			if len(ds) == 0 {
				return fmt.Errorf("zone %s is %s, not signed yet: %s", z.Name, z.Status, deref(z.Reason))
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.Join(ds, "\n"))
			return nil
		},
	}, zoneMutationCmd(o, "disable", "disableDNSSEC", "Stop signing a zone (remove its DS at the registrar first)"),
		zoneMutationCmd(o, "rotate", "rotateDNSSECKeys", "Start a pre-published ZSK rollover"))

	nameservers := &cobra.Command{
		Use: "nameservers NS...", Short: "Set the nameservers every zone names (admin)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ns, err := c.SetNameservers(cmd.Context(), args)
			if err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Nameservers: %s\n", strings.Join(ns, " "))
			return nil
		},
	}
	addReverse := func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		zs, err := c.AddReverseZone(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		for _, z := range zs {
			fmt.Fprintf(cmd.OutOrStdout(), "Zone %s created.\n", z.Name)
		}
		return nil
	}
	// "reverse CIDR" stays as it was; "reverse add" and "reverse delete"
	// name the two directions.
	reverse := &cobra.Command{
		Use: "reverse CIDR | reverse add CIDR | reverse delete NAME", Short: "Create or remove the reverse zones of node networks (admin)",
		Args: cobra.ExactArgs(1), RunE: addReverse,
	}
	reverse.AddCommand(&cobra.Command{
		Use: "add CIDR", Short: "Create the reverse zones of a node network, e.g. 192.0.2.0/24 (admin)", Args: cobra.ExactArgs(1), RunE: addReverse,
	})
	reverseDelete := &cobra.Command{
		Use: "delete NAME", Short: "Remove a reverse zone, e.g. 2.0.192.in-addr.arpa (admin)", Args: cobra.ExactArgs(1),
	}
	reverseYes := yesFlag(reverseDelete)
	reverseDelete.RunE = func(cmd *cobra.Command, args []string) error {
		if err := confirm(cmd, *reverseYes, "Remove reverse zone "+args[0]+" from every DNS server"); err != nil {
			return err
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := c.DeleteReverseZone(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Reverse zone %s is being removed.\n", args[0])
		return nil
	}
	reverse.AddCommand(reverseDelete)

	zone := group(&cobra.Command{Use: "zone", Short: "Whole zones"})
	zoneDelete := &cobra.Command{
		Use:   "delete NAME",
		Short: "Stop serving a domain's DNS zone on the cluster; the site stays",
		Long: `Stop serving the DNS zone of one of an account's domains (primary, add-on or
alias) on the cluster's DNS servers, for a domain whose DNS is hosted
elsewhere: the zone and all its records are removed from every DNS server.
The domain's website keeps being served, and the domain stays the account's.

This does not remove the domain: "npanel ctl domain remove ACCOUNT DOMAIN"
does (and removes its zone with it). Reverse zones are removed with
"npanel ctl dns reverse delete NAME". Admins and resellers only.`,
		Args: cobra.ExactArgs(1),
	}
	zoneYes := yesFlag(zoneDelete)
	zoneDelete.RunE = func(cmd *cobra.Command, args []string) error {
		if err := confirm(cmd, *zoneYes, "Remove zone "+args[0]+" and all its records from every DNS server"); err != nil {
			return err
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := c.DeleteZone(cmd.Context(), args[0]); err != nil {
			return apiError(err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Zone %s is being removed; its site stays.\n", args[0])
		return nil
	}
	zoneCreate := &cobra.Command{
		Use:   "create NAME",
		Short: "Serve a domain's DNS zone again after \"zone delete\" (default records)",
		Long: `Serve the DNS zone of one of an account's domains again, after "npanel ctl
dns zone delete": a new zone with the default records (the node's address at
the apex and www, mail with its MX, an SPF policy) on the account's node and
its secondaries. Admins and resellers only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			z, err := c.CreateZone(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), z, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Zone %s created (%s); its node serves it once applied.\n", z.Name, z.Status)
			})
		},
	}
	zone.AddCommand(zoneDelete, zoneCreate)
	cmd.AddCommand(list, show, add, update, del, imp, validateCmd, dnssec, nameservers, reverse, zone)
	return cmd
}

// absolute makes a record's owner name absolute, as the API takes it.
func absolute(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

func zoneMutationCmd(o *ctlOptions, use, mutation, short string) *cobra.Command {
	return &cobra.Command{
		Use: use + " ZONE", Short: short, Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			z, err := c.ZoneMutation(cmd.Context(), mutation, args[0])
			if err != nil {
				return apiError(err)
			}
			return o.printZone(cmd, z)
		},
	}
}

func (o *ctlOptions) printZone(cmd *cobra.Command, z *client.Zone) error {
	return o.print(cmd.OutOrStdout(), z, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "Zone:\t%s\nStatus:\t%s\nNode:\t%s\nSerial:\t%s\nDNSSEC:\t%t\n", z.Name, z.Status, dash(deref(z.Node)), serialText(z.Serial), z.DNSSEC)
		if z.Reason != nil {
			fmt.Fprintf(tw, "Reason:\t%s\n", *z.Reason)
		}
		for _, ds := range z.DS {
			fmt.Fprintf(tw, "DS:\t%s\n", ds)
		}
		fmt.Fprintln(tw, "Records:")
		for _, r := range z.Records {
			fmt.Fprintf(tw, "  %s\t%s\n", r.ID, recordText(r))
		}
	})
}

func recordText(r client.DNSRecord) string {
	content := r.Content
	if r.Priority != nil {
		content = fmt.Sprintf("%d %s", *r.Priority, content)
	}
	return fmt.Sprintf("%s\t%d\t%s\t%s", r.Name, r.TTL, r.Type, content)
}

func serialText(s *int64) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprint(*s)
}
