package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// mailCmd is "npanel ctl mail": an account's mailboxes, forwarders,
// autoresponders, catch-all, DKIM, SPF, DMARC, webmail and spam filter,
// and the mail queue of a node. As for databases, passwords are never
// arguments: --password-stdin reads one, and without it the server
// generates one that is printed this once.
func mailCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "mail", Short: "Mailboxes, forwarders, DKIM/SPF/DMARC, spam and webmail of an account"})
	cmd.AddCommand(mailboxCmd(o), forwarderCmd(o), autoresponderCmd(o))
	cmd.AddCommand(mailDomainCmds(o)...)
	cmd.AddCommand(mailQueryCmds(o)...)
	return cmd
}

func mailboxCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "mailbox", Short: "Mailboxes of an account"})

	var quota int
	var createStdin bool
	create := &cobra.Command{
		Use: "create ACCOUNT ADDRESS [--quota MB] [--password-stdin]", Short: "Create a mailbox (default: a generated password, printed once)", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if quota < 0 {
				return cmdline.Usagef("--quota: %d is negative", quota)
			}
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			pw, err := dbPassword(cmd, createStdin)
			if err != nil {
				return err
			}
			p, err := c.CreateMailbox(cmd.Context(), id, args[1], pw, quota)
			if err != nil {
				return apiError(err)
			}
			return o.printMailboxPayload(cmd, p)
		},
	}
	create.Flags().IntVar(&quota, "quota", 0, "quota in MB, 50..10240 (default 1024, or the plan's disk when smaller)")
	create.Flags().BoolVar(&createStdin, "password-stdin", false, "read the password from standard input (default: generate one and print it once)")

	var limit int
	list := &cobra.Command{
		Use: "list ACCOUNT", Short: "List an account's mailboxes (usage live from the node)", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 {
				return cmdline.Usagef("--limit must be at least 1")
			}
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			boxes, err := allPages(limit, func(first int, after string) ([]client.Mailbox, string, error) {
				return c.Mailboxes(cmd.Context(), id, first, after)
			})
			if err != nil {
				return err
			}
			if boxes == nil {
				boxes = []client.Mailbox{}
			}
			return o.print(cmd.OutOrStdout(), boxes, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ADDRESS\tSTATUS\tQUOTA\tUSED\tMESSAGES\tAUTORESPONDER\tREASON")
				for _, m := range boxes {
					used, msgs := "?", "?"
					if m.UsedBytes != nil {
						used = humanBytes(*m.UsedBytes)
					}
					if m.Messages != nil {
						msgs = fmt.Sprint(*m.Messages)
					}
					ar := "-"
					if m.Autoresponder != nil {
						ar = m.Autoresponder.Subject
					}
					fmt.Fprintf(tw, "%s\t%s\t%d MB\t%s\t%s\t%s\t%s\n", m.Address, m.Status, m.QuotaMB, used, msgs, ar, dash(deref(m.Reason)))
				}
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 1000, "list at most this many")

	del := &cobra.Command{
		Use: "delete ADDRESS", Short: "Archive a mailbox's maildir into the account's backups, then remove it", Args: cobra.ExactArgs(1),
	}
	delYes := yesFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *delYes, "delete mailbox "+args[0]+" (its mail is archived into the account's backups)"); err != nil {
			return err
		}
		m, err := c.DeleteMailbox(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		return o.printMailbox(cmd, m)
	}

	var passwdStdin bool
	passwd := &cobra.Command{
		Use: "passwd ADDRESS [--password-stdin]", Short: "Change a mailbox's password (default: generate one)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			pw, err := dbPassword(cmd, passwdStdin)
			if err != nil {
				return err
			}
			p, err := c.SetMailboxPassword(cmd.Context(), args[0], pw)
			if err != nil {
				return apiError(err)
			}
			return o.printMailboxPayload(cmd, p)
		},
	}
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the password from standard input (default: generate one and print it once)")

	quotaCmd := &cobra.Command{
		Use: "quota ADDRESS MB", Short: "Change a mailbox's quota", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mb, err := strconv.Atoi(args[1])
			if err != nil {
				return cmdline.Usagef("quota %q is not a number of MB", args[1])
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.SetMailboxQuota(cmd.Context(), args[0], mb)
			if err != nil {
				return apiError(err)
			}
			return o.printMailbox(cmd, m)
		},
	}
	onOff := func(use, short string, call func(*client.Client, *cobra.Command, string) (*client.Mailbox, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " ADDRESS", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := o.client()
				if err != nil {
					return err
				}
				m, err := call(c, cmd, args[0])
				if err != nil {
					return apiError(err)
				}
				return o.printMailbox(cmd, m)
			},
		}
	}
	disable := onOff("disable", "Refuse a mailbox's logins (mail to it is still delivered)", func(c *client.Client, cmd *cobra.Command, a string) (*client.Mailbox, error) {
		return c.DisableMailbox(cmd.Context(), a)
	})
	enable := onOff("enable", "Allow a disabled mailbox's logins again", func(c *client.Client, cmd *cobra.Command, a string) (*client.Mailbox, error) {
		return c.EnableMailbox(cmd.Context(), a)
	})
	cmd.AddCommand(create, list, del, passwd, quotaCmd, disable, enable)
	return cmd
}

func forwarderCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "forwarder", Short: "Forwarders of an account"})
	create := &cobra.Command{
		Use: "create FROM TO...", Short: "Forward mail to FROM to every TO (local or remote; added to its targets)", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var to []string
			for _, a := range args[1:] {
				for _, t := range strings.Split(a, ",") {
					if t = strings.TrimSpace(t); t != "" {
						to = append(to, t)
					}
				}
			}
			f, err := c.CreateForwarder(cmd.Context(), args[0], to)
			if err != nil {
				return apiError(err)
			}
			return o.printForwarders(cmd, []client.Forwarder{*f})
		},
	}
	list := &cobra.Command{
		Use: "list ACCOUNT", Short: "List an account's forwarders", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fs, err := c.Forwarders(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			return o.printForwarders(cmd, fs)
		},
	}
	del := &cobra.Command{Use: "delete FROM", Short: "Remove a forwarder", Args: cobra.ExactArgs(1)}
	delYes := yesFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *delYes, "delete forwarder "+args[0]); err != nil {
			return err
		}
		f, err := c.DeleteForwarder(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		return o.printForwarders(cmd, []client.Forwarder{*f})
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func autoresponderCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "autoresponder", Short: "Vacation replies of mailboxes"})
	var subject, body, from, until string
	set := &cobra.Command{
		Use: "set ADDRESS --subject TEXT --body TEXT|- [--from ADDRESS] [--until RFC3339]", Short: "Reply to senders (once a day each) until a time", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if subject == "" || body == "" {
				return cmdline.Usagef("--subject and --body are required (--body - reads it from standard input)")
			}
			ar := client.Autoresponder{Subject: subject, Body: body}
			if body == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
				if err != nil {
					return fmt.Errorf("read body: %w", err)
				}
				ar.Body = string(b)
			}
			if from != "" {
				ar.From = &from
			}
			if until != "" {
				u, err := time.Parse(time.RFC3339, until)
				if err != nil {
					return cmdline.Usagef("--until %q: want a time such as 2027-01-31T18:00:00Z", until)
				}
				ar.Until = &u
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.SetAutoresponder(cmd.Context(), args[0], ar)
			if err != nil {
				return apiError(err)
			}
			return o.printMailbox(cmd, m)
		},
	}
	set.Flags().StringVar(&subject, "subject", "", "subject of the replies")
	set.Flags().StringVar(&body, "body", "", "text of the replies (- reads it from standard input)")
	set.Flags().StringVar(&from, "from", "", "From address of the replies (default: the mailbox)")
	set.Flags().StringVar(&until, "until", "", "no replies after this time (RFC 3339)")
	del := &cobra.Command{
		Use: "delete ADDRESS", Short: "Stop a mailbox's vacation replies", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			m, err := c.DeleteAutoresponder(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return o.printMailbox(cmd, m)
		},
	}
	cmd.AddCommand(set, del)
	return cmd
}

// mailDomainCmds are the per-domain settings: catchall, dkim, spf, dmarc,
// webmail, spam, and the domains listing.
func mailDomainCmds(o *ctlOptions) []*cobra.Command {
	// domainCall builds "VERB DOMAIN ARGS..." running call on the domain.
	domainCall := func(use, short string, nargs int, call func(cmd *cobra.Command, c *client.Client, args []string) (*client.MailDomain, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(nargs),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := o.client()
				if err != nil {
					return err
				}
				d, err := call(cmd, c, args)
				if err != nil {
					return apiError(err)
				}
				return o.printMailDomains(cmd, []client.MailDomain{*d})
			},
		}
	}
	catchall := group(&cobra.Command{Use: "catchall", Short: "Where mail to unknown addresses of a domain goes"})
	catchall.AddCommand(domainCall("set DOMAIN TARGET", "Set the catch-all: a mailbox of the domain, :fail:, :blackhole:, or \"\" for none", 2,
		func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
			return c.SetCatchAll(cmd.Context(), a[0], a[1])
		}))
	dkim := group(&cobra.Command{Use: "dkim", Short: "DKIM keys of a domain (published in its zone)"})
	dkim.AddCommand(
		domainCall("enable DOMAIN", "Create a DKIM key on the mail node, publish it, then sign with it", 1,
			func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
				return c.EnableDKIM(cmd.Context(), a[0])
			}),
		domainCall("rotate DOMAIN", "Publish a new DKIM key, then sign with it; the old one goes after 7 days", 1,
			func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
				return c.RotateDKIM(cmd.Context(), a[0])
			}))
	spf := group(&cobra.Command{Use: "spf", Short: "SPF record of a domain"})
	spf.AddCommand(domainCall("set DOMAIN RECORD", "Replace the domain's SPF record (\"v=spf1 mx a -all\")", 2,
		func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
			return c.SetSPF(cmd.Context(), a[0], a[1])
		}))
	dmarc := group(&cobra.Command{Use: "dmarc", Short: "DMARC record of a domain"})
	dmarc.AddCommand(domainCall("set DOMAIN POLICY", "Replace the domain's DMARC record (\"v=DMARC1; p=quarantine\")", 2,
		func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
			return c.SetDMARC(cmd.Context(), a[0], a[1])
		}))
	webmail := group(&cobra.Command{Use: "webmail", Short: "Roundcube at webmail.DOMAIN"})
	webmail.AddCommand(domainCall("enable DOMAIN", "Serve Roundcube at webmail.DOMAIN on the mail node", 1,
		func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
			return c.EnableWebmail(cmd.Context(), a[0])
		}))

	spam := group(&cobra.Command{Use: "spam", Short: "Spam filter of a domain, and training"})
	var enabled bool
	var score float64
	var action string
	spamSet := domainCall("set DOMAIN [--enabled=false] [--score 5.0] [--action tag|junk_folder|reject]", "Set a domain's spam filter", 1,
		func(cmd *cobra.Command, c *client.Client, a []string) (*client.MailDomain, error) {
			act := strings.ToUpper(action)
			switch act {
			case "", "TAG", "JUNK_FOLDER", "REJECT":
			default:
				return nil, cmdline.Usagef("--action %q: want tag, junk_folder or reject", action)
			}
			return c.SetSpamFilter(cmd.Context(), a[0], enabled, score, act)
		})
	spamSet.Flags().BoolVar(&enabled, "enabled", true, "filter the domain's mail")
	spamSet.Flags().Float64Var(&score, "score", 0, "threshold in points, 1.0..20.0 (default 5.0)")
	spamSet.Flags().StringVar(&action, "action", "", "what happens to spam: tag (default), junk_folder or reject")
	var asHam bool
	train := &cobra.Command{
		Use: "train ADDRESS UID [--ham]", Short: "Teach the filter that a message (IMAP UID in INBOX) is spam (or, --ham, not)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			uid, err := strconv.Atoi(args[1])
			if err != nil || uid <= 0 {
				return cmdline.Usagef("UID %q is not a message UID", args[1])
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			learned, err := c.TrainMail(cmd.Context(), args[0], uid, !asHam)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), map[string]bool{"learned": learned}, func(tw *tabwriter.Writer) {
				if learned {
					fmt.Fprintln(tw, "Learned.")
				} else {
					fmt.Fprintln(tw, "Already learned.")
				}
			})
		},
	}
	train.Flags().BoolVar(&asHam, "ham", false, "the message is not spam")
	spam.AddCommand(spamSet, train)

	domains := &cobra.Command{
		Use: "domains ACCOUNT", Short: "List an account's mail domains with DKIM, SPF, DMARC, spam and webmail", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeAccounts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, id, err := o.accountRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ds, err := c.MailDomains(cmd.Context(), id)
			if err != nil {
				return apiError(err)
			}
			return o.printMailDomains(cmd, ds)
		},
	}
	return []*cobra.Command{catchall, dkim, spf, dmarc, webmail, spam, domains}
}

// mailQueryCmds ask the node: logs, scan, queue.
func mailQueryCmds(o *ctlOptions) []*cobra.Command {
	var hours int
	logs := &cobra.Command{
		Use: "logs ADDRESS [--hours N]", Short: "Delivery and login log lines of a mailbox", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hours < 1 || hours > 168 {
				return cmdline.Usagef("--hours must be 1 to 168")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			l, err := c.MailLogs(cmd.Context(), args[0], hours)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), l, func(tw *tabwriter.Writer) {
				for _, line := range l.Lines {
					fmt.Fprintln(tw, line)
				}
				if l.Truncated {
					fmt.Fprintln(tw, "(older lines left out)")
				}
			})
		},
	}
	logs.Flags().IntVar(&hours, "hours", 24, "how far back, 1..168")

	scan := &cobra.Command{
		Use: "scan ADDRESS", Short: "Scan a mailbox's messages for malware", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			r, err := c.ScanMailbox(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Scanned:\t%d\nInfected:\t%d\n", r.Scanned, len(r.Infected))
				for _, i := range r.Infected {
					fmt.Fprintf(tw, "\t%s\t%s\n", i.Message, i.Signature)
				}
			})
		},
	}

	queue := group(&cobra.Command{Use: "queue", Short: "The mail queue of a node (admins)"})
	var limit int
	qlist := &cobra.Command{
		Use: "list NODE [--limit N]", Short: "List a node's queued messages", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 1000 {
				return cmdline.Usagef("--limit must be 1 to 1000")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			q, err := c.MailQueue(cmd.Context(), args[0], limit)
			if err != nil {
				return apiError(err)
			}
			return o.print(cmd.OutOrStdout(), q, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tAGE\tSIZE\tFROM\tTO\tFROZEN")
				for _, m := range q.Messages {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", m.ID, time.Duration(m.AgeSeconds)*time.Second, humanBytes(m.SizeBytes), dash(m.Sender), strings.Join(m.Recipients, ","), m.Frozen)
				}
				fmt.Fprintf(tw, "(%d queued)\n", q.Total)
			})
		},
	}
	qlist.Flags().IntVar(&limit, "limit", 100, "list at most this many (1..1000)")
	flush := &cobra.Command{
		Use: "flush NODE", Short: "Retry every queued message on a node now", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.FlushMailQueue(cmd.Context(), args[0]); err != nil {
				return apiError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Queue run started on %s.\n", args[0])
			return nil
		},
	}
	queue.AddCommand(qlist, flush)
	return []*cobra.Command{logs, scan, queue}
}

func (o *ctlOptions) printMailbox(cmd *cobra.Command, m *client.Mailbox) error {
	if err := o.print(cmd.OutOrStdout(), m, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "Mailbox:\t%s\nStatus:\t%s\nQuota:\t%d MB\n", m.Address, m.Status, m.QuotaMB)
		if ar := m.Autoresponder; ar != nil {
			fmt.Fprintf(tw, "Autoresponder:\t%s\n", ar.Subject)
		}
		if m.Reason != nil {
			fmt.Fprintf(tw, "Reason:\t%s\n", *m.Reason)
		}
	}); err != nil {
		return err
	}
	return stateError("mailbox "+m.Address, m.Status, m.Reason)
}

func (o *ctlOptions) printMailboxPayload(cmd *cobra.Command, p *client.MailboxPayload) error {
	if err := o.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "Mailbox:\t%s\nStatus:\t%s\nQuota:\t%d MB\n", p.Mailbox.Address, p.Mailbox.Status, p.Mailbox.QuotaMB)
		if p.Password != nil {
			fmt.Fprintf(tw, "Password:\t%s\t(shown this once; it is not stored)\n", *p.Password)
		}
	}); err != nil {
		return err
	}
	return stateError("mailbox "+p.Mailbox.Address, p.Mailbox.Status, p.Mailbox.Reason)
}

func (o *ctlOptions) printForwarders(cmd *cobra.Command, fs []client.Forwarder) error {
	if fs == nil {
		fs = []client.Forwarder{}
	}
	return o.print(cmd.OutOrStdout(), fs, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "FROM\tTO")
		for _, f := range fs {
			fmt.Fprintf(tw, "%s\t%s\n", f.From, strings.Join(f.To, ", "))
		}
	})
}

func (o *ctlOptions) printMailDomains(cmd *cobra.Command, ds []client.MailDomain) error {
	if ds == nil {
		ds = []client.MailDomain{}
	}
	return o.print(cmd.OutOrStdout(), ds, func(tw *tabwriter.Writer) {
		for i, d := range ds {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			fmt.Fprintf(tw, "Domain:\t%s\nStatus:\t%s\nCatch-all:\t%s\nSpam filter:\t%v, %.1f, %s\nWebmail:\t%v\nSPF:\t%s\nDMARC:\t%s\n",
				d.Domain, d.Status, dash(deref(d.CatchAll)), d.SpamFilter.Enabled, d.SpamFilter.Score, strings.ToLower(d.SpamFilter.Action),
				d.Webmail, dash(deref(d.SPF)), dash(deref(d.DMARC)))
			for _, k := range d.DKIM {
				state := "publishing"
				switch {
				case k.RetireAt != nil:
					state = "retired, removed " + k.RetireAt.Format(time.RFC3339)
				case k.Signing:
					state = "signing"
				}
				fmt.Fprintf(tw, "DKIM:\t%s (%s)\n", k.Selector, state)
			}
			if d.Reason != nil {
				fmt.Fprintf(tw, "Reason:\t%s\n", *d.Reason)
			}
		}
	})
}
