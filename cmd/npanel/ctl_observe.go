package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// logFlags are the filters of ctl logs domain and logs service.
type logFlags struct {
	lines int
	since string
	grep  string
}

func (f *logFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVarP(&f.lines, "lines", "n", 100, "number of lines (1..1000)")
	fl.StringVar(&f.since, "since", "", "only lines from this long ago (1h, 30m) or this time (RFC 3339) on")
	fl.StringVar(&f.grep, "grep", "", "only lines containing this text (case-sensitive, at most 200 bytes)")
}

// query checks the flags before anything is sent.
func (f *logFlags) query(now time.Time) (client.LogQuery, error) {
	q := client.LogQuery{Lines: f.lines, Grep: f.grep}
	if f.lines < 1 || f.lines > 1000 {
		return q, cmdline.Usagef("--lines %d: give 1 to 1000", f.lines)
	}
	if len(f.grep) > 200 {
		return q, cmdline.Usagef("--grep: at most 200 bytes")
	}
	if f.since != "" {
		since, err := parseSince(f.since, now)
		if err != nil {
			return q, err
		}
		if since.After(now) {
			return q, cmdline.Usagef("--since %s is in the future", f.since)
		}
		q.Since = since
	}
	return q, nil
}

func (o *ctlOptions) printLines(cmd *cobra.Command, ls []string) error {
	if o.output == "json" {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(ls)
	}
	for _, l := range ls {
		fmt.Fprintln(cmd.OutOrStdout(), printable(l))
	}
	return nil
}

// domainLogs runs both spellings, "logs domain" and "domain logs".
func (o *ctlOptions) domainLogs(cmd *cobra.Command, domain, kind string, f *logFlags) error {
	q, err := f.query(time.Now())
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ls, err := c.DomainLogs(cmd.Context(), domain, kind, q)
	if err != nil {
		return apiError(err)
	}
	return o.printLines(cmd, ls)
}

func logsCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "logs", Short: "Read domains' and daemons' logs on their nodes"})
	var df logFlags
	var kind string
	domain := &cobra.Command{
		Use:   "domain DOMAIN [--kind access|error] [--lines N] [--since DURATION|TIME] [--grep TEXT]",
		Short: "Show the last lines of a domain's access or error log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k := strings.ToUpper(kind)
			if k != "ACCESS" && k != "ERROR" {
				return cmdline.Usagef("--kind %q: access or error", kind)
			}
			return o.domainLogs(cmd, args[0], k, &df)
		},
	}
	domain.Flags().StringVar(&kind, "kind", "access", "access or error")
	df.add(domain)
	var sf logFlags
	service := &cobra.Command{
		Use:   "service NODE SERVICE [--lines N] [--since DURATION|TIME] [--grep TEXT]",
		Short: "Show the last lines of a daemon's log on a node (agent: the agent's own)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := sf.query(time.Now())
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ls, err := c.ServiceLogs(cmd.Context(), args[0], args[1], q)
			if err != nil {
				return apiError(err)
			}
			return o.printLines(cmd, ls)
		},
	}
	sf.add(service)
	cmd.AddCommand(domain, service)
	return cmd
}

func periodArg(p string) (string, error) {
	switch up := strings.ToUpper(p); up {
	case "HOUR", "DAY", "WEEK", "MONTH":
		return up, nil
	}
	return "", cmdline.Usagef("--period %q: hour, day, week or month", p)
}

func printSeries(tw *tabwriter.Writer, series []client.TrafficPoint) {
	if len(series) == 0 {
		return
	}
	fmt.Fprintln(tw, "\nSTART\tREQUESTS\tBYTES")
	for _, p := range series {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", p.Start.UTC().Format(time.RFC3339), p.Requests, humanBytes(p.Bytes))
	}
}

func trafficCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "traffic", Short: "Requests and bytes served, from the nodes' access log counters"})
	var period string
	bandwidth := &cobra.Command{
		Use: "bandwidth ACCOUNT [--period hour|day|week|month]", Short: "An account's traffic over its domains", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := periodArg(period)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			b, err := c.Bandwidth(cmd.Context(), args[0], p)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), b, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Account:\t%s\nPeriod:\t%s\nRequests:\t%d\nBytes:\t%s\n", b.Account, b.Period, b.Requests, humanBytes(b.Bytes))
				printSeries(tw, b.Series)
			})
		},
	}
	bandwidth.Flags().StringVar(&period, "period", "day", "hour, day, week or month")
	var rperiod string
	requests := &cobra.Command{
		Use: "requests DOMAIN [--period hour|day|week|month]", Short: "A domain's requests by status class", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := periodArg(rperiod)
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			r, err := c.Requests(cmd.Context(), args[0], p)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Domain:\t%s\nPeriod:\t%s\nRequests:\t%d\nBytes:\t%s\n", r.Domain, r.Period, r.Requests, humanBytes(r.Bytes))
				fmt.Fprintf(tw, "Status:\t1xx %d  2xx %d  3xx %d  4xx %d  5xx %d\n", r.Status.S1xx, r.Status.S2xx, r.Status.S3xx, r.Status.S4xx, r.Status.S5xx)
				fmt.Fprintf(tw, "Mean time:\t%.3fs\n", r.MeanSeconds)
				printSeries(tw, r.Series)
			})
		},
	}
	requests.Flags().StringVar(&rperiod, "period", "day", "hour, day, week or month")
	cmd.AddCommand(bandwidth, requests)
	return cmd
}

func nodeTopCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "top NODE", Short: "A node's CPU, load, memory, filesystems and daemons, read now", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.NodeMetrics(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), m, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Node:\t%s\n", m.Node)
				fmt.Fprintf(tw, "CPU:\t%.0f%% busy of %d\n", m.CPUBusy*100, m.CPUs)
				fmt.Fprintf(tw, "Load:\t%.2f %.2f %.2f\n", m.Load1, m.Load5, m.Load15)
				fmt.Fprintf(tw, "Memory:\t%s available of %s\n", humanBytes(m.MemoryAvailableBytes), humanBytes(m.MemoryTotalBytes))
				fmt.Fprintf(tw, "Uptime:\t%s\n", (time.Duration(m.UptimeSeconds) * time.Second).String())
				fmt.Fprintln(tw, "\nMOUNT\tDEVICE\tTYPE\tSIZE\tAVAIL\tUSED\tINODES FREE")
				for _, f := range m.Filesystems {
					used := 0.0
					if f.SizeBytes > 0 {
						used = 100 * float64(f.SizeBytes-f.AvailBytes) / float64(f.SizeBytes)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.0f%%\t%d/%d\n", f.Mountpoint, f.Device, f.Fstype,
						humanBytes(f.SizeBytes), humanBytes(f.AvailBytes), used, f.FilesFree, f.Files)
				}
				fmt.Fprintln(tw, "\nSERVICE\tSTATE\tUP\tVERSION\tRESTARTS")
				for _, s := range m.Services {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", s.Name, s.State, yesNo(s.Up), dash(deref(s.Version)), s.Restarts)
				}
			})
		},
	}
}

func nodeStatusCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "status NODE SERVICE", Short: "One daemon of a node, as the node last reported it", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			s, err := c.ServiceStatus(cmd.Context(), args[0], args[1])
			if err != nil {
				return apiError(err)
			}
			if s == nil {
				return fmt.Errorf("NOT_FOUND: node %s reports no service %q", args[0], args[1])
			}
			return o.print(cmd.OutOrStdout(), s, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Node:\t%s\nService:\t%s\nState:\t%s\nUp:\t%s\nVersion:\t%s\nListen:\t%s\nRestarts:\t%d\n",
					s.Node, s.Service.Name, s.Service.State, yesNo(s.Up), dash(deref(s.Service.Version)),
					dash(strings.Join(s.Service.Listen, ",")), s.Service.Restarts)
				if s.Service.Since != nil {
					fmt.Fprintf(tw, "Since:\t%s\n", s.Service.Since.Local().Format(time.RFC3339))
				}
				if s.Service.Error != nil {
					fmt.Fprintf(tw, "Error:\t%s\n", printable(strings.ReplaceAll(*s.Service.Error, "\n", " ")))
				}
				if s.ReportedAt != nil {
					fmt.Fprintf(tw, "Reported:\t%s\n", s.ReportedAt.Local().Format(time.RFC3339))
				}
			})
		},
	}
}

func scrapeTokenCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "scrape-token", Short: "Tokens for Prometheus (discovery, /metrics) and Alertmanager (/v1/alerts)"})
	var scopes []string
	create := &cobra.Command{
		Use: "create NAME [--scope discovery,metrics,alerts]", Short: "Create a scrape token (shown once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sc []string
			if cmd.Flags().Changed("scope") {
				var err error
				if sc, err = parseScrapeScopes(scopes); err != nil {
					return err
				}
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			tok, rec, err := c.CreateScrapeToken(cmd.Context(), args[0], sc...)
			if err != nil {
				return apiError(err)
			}
			if o.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"token": tok, "scrapeToken": rec})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Scrape token %s (id %s, scopes %s). It is shown only now:\n\n%s\n",
				rec.Name, rec.ID, strings.ToLower(strings.Join(rec.Scopes, ",")), tok)
			return nil
		},
	}
	create.Flags().StringSliceVar(&scopes, "scope", nil,
		"what the token opens: discovery (/v1/prometheus/sd), metrics (/metrics), alerts (/v1/alerts); repeatable or comma-separated (default all three)")
	list := &cobra.Command{
		Use: "list", Short: "List the scrape tokens", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ts, err := c.ScrapeTokens(cmd.Context())
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), ts, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, strings.ToLower(strings.Join(t.Scopes, ",")),
						t.CreatedAt.Local().Format(time.RFC3339))
				}
			})
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a scrape token; scrapes with it are refused", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.DeleteScrapeToken(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Scrape token %s deleted.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// scrapeScopes are what a scrape token can open, as the CLI spells them.
var scrapeScopes = []string{"discovery", "metrics", "alerts"}

// parseScrapeScopes reads --scope (repeatable, comma-separated, any
// case; cobra has split the commas): at least one known scope, each once.
// The result is upper-case, as the API's ScrapeScope enum.
func parseScrapeScopes(in []string) ([]string, error) {
	return parseEnumList("scope", "--scope", scrapeScopes, in)
}
