package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
)

// mailNode is a READY node mail-1 with the roles web, dns and mail running
// the real nginx, PHP-FPM, PowerDNS, Exim and Dovecot, relaying outbound
// mail to sink.
type mailNode struct {
	s    *testenv.Server
	ag   *testenv.Agent
	sink *testenv.SMTPSink
}

func startMailNode(t testing.TB) *mailNode {
	t.Helper()
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/sbin/exim4", "/usr/sbin/dovecot"} {
		testenv.RequireDaemon(t, d)
	}
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users needs root")
	}
	n := &mailNode{sink: testenv.StartSMTPSink(t), s: testenv.StartServer(t)}
	n.ag = n.s.StartAgent(t, "mail-1", testenv.WithModules(t, "web", "dns", "mail"),
		func(c *nodeagent.Config) { c.MailRelay = n.sink.Addr })
	ctx := context.Background()
	testenv.WaitFor(t, 20*time.Second, "mail-1 READY", func() bool {
		svcs, _, err := n.s.Admin.Services(ctx, "mail-1")
		running := map[string]bool{}
		for _, sv := range svcs {
			running[sv.Name] = sv.State == "RUNNING"
		}
		return err == nil && running["exim"] && running["dovecot"] && running["nginx"]
	})
	if _, err := n.s.Admin.UpdateNode(ctx, "mail-1", client.NodeUpdate{Roles: []string{"WEB", "DNS", "MAIL"}}); err != nil {
		t.Fatal(err)
	}
	return n
}

// account creates a plan allowing mailboxes and an account on mail-1,
// and waits for its domain.
func (n *mailNode) account(t testing.TB, user string, mailboxes int) (*client.Account, string) {
	t.Helper()
	ctx := context.Background()
	plan := "mail-" + user
	if _, err := n.s.Admin.CreatePlan(ctx, client.Plan{Name: plan, DiskMB: 20000, BandwidthMB: 1000, Domains: 2, Mailboxes: mailboxes, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	domain := user + ".example.com"
	acct, err := n.s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, user+" ACTIVE", func() bool {
		a, err := n.s.Admin.Account(ctx, acct.ID)
		return err == nil && a.Status == "ACTIVE"
	})
	return acct, domain
}

func imapDial(t testing.TB, addr, user, pw string) (*imapclient.Client, error) {
	t.Helper()
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(user, pw).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// inbox returns the full text of every message in the user's INBOX.
func inbox(t testing.TB, addr, user, pw string) []string {
	t.Helper()
	c, err := imapDial(t, addr, user, pw)
	if err != nil {
		t.Fatalf("IMAP login %s: %v", user, err)
	}
	defer c.Close()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if sel.NumMessages > 0 {
		section := &imap.FetchItemBodySection{}
		var all imap.SeqSet
		all.AddRange(1, sel.NumMessages)
		msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			out = append(out, string(m.FindBodySection(section)))
		}
	}
	_ = c.Logout().Wait()
	return out
}

// submit sends msg on the submission port with STARTTLS and AUTH PLAIN.
func submit(addr, user, pw, from string, to []string, msg string) error {
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pw)); err != nil {
		return err
	}
	if err := c.SendMail(from, to, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// txtFrom reads TXT records from the node's PowerDNS, the only resolver a
// test may use.
func txtFrom(server string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
		in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, server)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range in.Answer {
			if txt, ok := rr.(*dns.TXT); ok {
				out = append(out, strings.Join(txt.Txt, ""))
			}
		}
		return out, nil
	}
}

// Mail end to end through the API: a mailbox created by createMailbox logs
// in over IMAP with the password the API generated, a message submitted
// with SMTP AUTH arrives in it, DKIM enabled through the API signs outbound
// mail with a key that our PowerDNS serves, and disabling the mailbox and
// suspending the account reach Dovecot.
func TestMailEndToEnd(t *testing.T) {
	n := startMailNode(t)
	ctx := testenv.Context(t)
	user := testUsername(t)
	acct, domain := n.account(t, user, 5)
	cfg := n.ag.Config
	addr := "info@" + domain

	p, err := n.s.Admin.CreateMailbox(ctx, acct.ID, addr, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if p.Password == nil || len(*p.Password) < 12 {
		t.Fatalf("no generated password in %+v", p)
	}
	pw := *p.Password
	waitMailbox(t, n.s.Admin, acct.ID, addr, "ACTIVE")

	// The SPF and DMARC defaults are served by the node's PowerDNS.
	lookup := txtFrom(cfg.DNSListen)
	testenv.WaitFor(t, 30*time.Second, "SPF and DMARC served", func() bool {
		spf, _ := lookup(domain)
		dmarc, _ := lookup("_dmarc." + domain)
		return len(spf) == 1 && strings.HasPrefix(spf[0], "v=spf1 mx a ip4:127.0.0.1") &&
			len(dmarc) == 1 && dmarc[0] == "v=DMARC1; p=quarantine; rua=mailto:postmaster@"+domain
	})

	// Submission → Exim → LMTP → Dovecot → IMAP, byte for byte.
	msg := "From: " + addr + "\r\nTo: " + addr + "\r\nSubject: end to end\r\nMessage-ID: <e2e-1@" + domain + ">\r\n\r\nhello through the API\r\n"
	if err := submit(cfg.SubmissionListen, addr, pw, addr, []string{addr}, msg); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "message in INBOX", func() bool {
		msgs := inbox(t, cfg.IMAPSListen, addr, pw)
		return len(msgs) == 1 && strings.HasSuffix(msgs[0], msg)
	})

	// DKIM: the key's record is published in our PowerDNS, then it signs.
	if _, err := n.s.Admin.EnableDKIM(ctx, domain); err != nil {
		t.Fatal(err)
	}
	var selector string
	testenv.WaitFor(t, 60*time.Second, "DKIM signing", func() bool {
		ds, err := n.s.Admin.MailDomains(ctx, acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			for _, k := range d.DKIM {
				if d.Domain == domain && k.Signing {
					selector = k.Selector
					return true
				}
			}
		}
		return false
	})
	testenv.WaitFor(t, 30*time.Second, "DKIM key served", func() bool {
		txt, _ := lookup(selector + "._domainkey." + domain)
		return len(txt) == 1 && strings.HasPrefix(txt[0], "v=DKIM1; k=rsa; p=")
	})
	out := "From: " + addr + "\r\nTo: someone@example.net\r\nSubject: signed\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <e2e-2@" + domain + ">\r\n\r\nsigned by the node\r\n"
	// The node may have applied the signing ensure a moment after the API
	// showed it: send until a signed copy leaves.
	var verified bool
	testenv.WaitFor(t, 30*time.Second, "a DKIM-signed message at the smarthost", func() bool {
		if err := submit(cfg.SubmissionListen, addr, pw, addr, []string{"someone@example.net"}, out); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for _, m := range n.sink.Messages() {
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				if v.Err == nil && v.Domain == domain {
					verified = true
				}
			}
		}
		return verified
	})

	// Disabled: no login, mail still delivered. Enabled again: login works.
	if _, err := n.s.Admin.DisableMailbox(ctx, addr); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, n.s.Admin, acct.ID, addr, "DISABLED")
	testenv.WaitFor(t, 10*time.Second, "disabled mailbox refuses IMAP", func() bool {
		c, err := imapDial(t, cfg.IMAPSListen, addr, pw)
		if c != nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := n.s.Admin.EnableMailbox(ctx, addr); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, n.s.Admin, acct.ID, addr, "ACTIVE")
	testenv.WaitFor(t, 10*time.Second, "enabled mailbox logs in", func() bool {
		c, err := imapDial(t, cfg.IMAPSListen, addr, pw)
		if c != nil {
			c.Close()
		}
		return err == nil
	})

	// A suspended account's mailboxes refuse logins.
	if _, err := n.s.Admin.AccountAction(ctx, "suspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "suspended account refuses IMAP", func() bool {
		c, err := imapDial(t, cfg.IMAPSListen, addr, pw)
		if c != nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := n.s.Admin.AccountAction(ctx, "unsuspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "unsuspended account logs in", func() bool {
		c, err := imapDial(t, cfg.IMAPSListen, addr, pw)
		if c != nil {
			c.Close()
		}
		return err == nil
	})

	// Live usage from the node, then the mailbox goes.
	testenv.WaitFor(t, 10*time.Second, "usage", func() bool {
		list, _, err := n.s.Admin.Mailboxes(ctx, acct.ID, 10, "")
		return err == nil && len(list) == 1 && list[0].Messages != nil && *list[0].Messages == 1
	})
	if _, err := n.s.Admin.DeleteMailbox(ctx, addr); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "mailbox gone", func() bool {
		list, _, err := n.s.Admin.Mailboxes(ctx, acct.ID, 10, "")
		return err == nil && len(list) == 0
	})
	// Dovecot reads a changed passwd-file within a second.
	testenv.WaitFor(t, 5*time.Second, "deleted mailbox refuses IMAP", func() bool {
		c, err := imapDial(t, cfg.IMAPSListen, addr, pw)
		if c != nil {
			c.Close()
		}
		return err != nil
	})
}

// BenchmarkCreateMailboxToLogin measures createMailbox through the API
// until the new mailbox's first IMAP login succeeds, one at a time, and
// reports p50 and p99 (ms) besides ns/op.
func BenchmarkCreateMailboxToLogin(b *testing.B) {
	n := startMailNode(b)
	ctx := context.Background()
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(b, user)
	acct, domain := n.account(b, user, b.N+1)
	cfg := n.ag.Config
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Each new address sorts first, so mailboxActive reads one.
		addr := fmt.Sprintf("b%05d@%s", 99999-i, domain)
		start := time.Now()
		p, err := n.s.Admin.CreateMailbox(ctx, acct.ID, addr, "", 50)
		if err != nil {
			b.Fatal(err)
		}
		// Poll the API, not IMAP: Dovecot delays every failed login by
		// two seconds (auth_failure_delay).
		for !mailboxActive(b, n.s.Admin, acct.ID, addr) {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("%s: not ACTIVE after 30s", addr)
			}
			time.Sleep(2 * time.Millisecond)
		}
		c, err := imapDial(b, cfg.IMAPSListen, addr, *p.Password)
		if err != nil {
			b.Fatalf("%s: ACTIVE but no login: %v", addr, err)
		}
		c.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// mailboxActive reports whether address, the first of the account's
// mailboxes in address order, is listed ACTIVE.
func mailboxActive(t testing.TB, c *client.Client, account, address string) bool {
	list, _, err := c.Mailboxes(context.Background(), account, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if m.Address == address {
			return m.Status == "ACTIVE"
		}
	}
	return false
}

// BenchmarkMailboxesOnOneNode fills one node with b.N mailboxes through the
// API (20 accounts, 8 clients at once) and reports the rate until all are
// ACTIVE, the p50/p99 of mailboxes(first: 50), and the resident memory of
// the node's Exim and Dovecot with them in place and idle.
func BenchmarkMailboxesOnOneNode(b *testing.B) {
	const accounts, clients = 20, 8
	n := startMailNode(b)
	ctx := context.Background()
	perAccount := (b.N + accounts - 1) / accounts
	type acct struct{ id, domain string }
	accts := make([]acct, accounts)
	base := "mn" + testenv.TestUsername()
	if _, err := n.s.Admin.CreatePlan(ctx, client.Plan{Name: base, DiskMB: 1000, BandwidthMB: 1000, Domains: 1, Mailboxes: perAccount, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		b.Fatal(err)
	}
	for i := range accts {
		user := testenv.TestUsername()
		testenv.RemoveUserAtCleanup(b, user)
		a, err := n.s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: base})
		if err != nil {
			b.Fatal(err)
		}
		accts[i] = acct{a.ID, user + ".example.com"}
	}
	for _, a := range accts {
		testenv.WaitFor(b, 120*time.Second, a.domain+" ACTIVE", func() bool {
			got, err := n.s.Admin.Account(ctx, a.id)
			if err == nil && got.Status == "FAILED" {
				b.Fatalf("%s FAILED: %s", a.domain, deref(got.Reason))
			}
			return err == nil && got.Status == "ACTIVE"
		})
	}
	b.ResetTimer()
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, clients)
	for w := 0; w < clients; w++ {
		go func() {
			for i := range work {
				a := accts[i%accounts]
				if _, err := n.s.Admin.CreateMailbox(ctx, a.id, fmt.Sprintf("m%06d@%s", i, a.domain), "", 50); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- i
	}
	close(work)
	for w := 0; w < clients; w++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	accepted := time.Since(start)
	for i, a := range accts {
		want := b.N / accounts
		if i < b.N%accounts {
			want++
		}
		testenv.WaitFor(b, 30*time.Minute, a.domain+" mailboxes ACTIVE", func() bool {
			list, _, err := n.s.Admin.Mailboxes(ctx, a.id, perAccount, "")
			if err != nil {
				b.Fatal(err)
			}
			active := 0
			for _, m := range list {
				if m.Status == "ACTIVE" {
					active++
				}
			}
			return active == want
		})
	}
	active := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/active.Seconds(), "active/s")
	lat := make([]time.Duration, 0, 200)
	for i := 0; i < 200; i++ {
		t0 := time.Now()
		if _, _, err := n.s.Admin.Mailboxes(ctx, accts[i%accounts].id, 50, ""); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportNamed(b, "list50_", lat)
	time.Sleep(5 * time.Second) // idle
	b.ReportMetric(daemonRSSMB(b, "/usr/sbin/exim4", n.ag.Config.Prefix), "exim_rss_MB")
	b.ReportMetric(daemonRSSMB(b, "/usr/sbin/dovecot", n.ag.Config.Prefix), "dovecot_rss_MB")
}

// daemonRSSMB sums the resident memory (VmRSS) of the processes whose
// command line runs binary with an argument under prefix, and of all
// their descendants.
func daemonRSSMB(b *testing.B, binary, prefix string) float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	parent := map[int]int{}
	rss := map[int]float64{}
	var roots []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err1 := os.ReadFile("/proc/" + e.Name() + "/status")
		cmd, err2 := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err1 != nil || err2 != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) >= 2 && f[0] == "PPid:":
				parent[pid], _ = strconv.Atoi(f[1])
			case len(f) >= 2 && f[0] == "VmRSS:":
				kb, _ := strconv.ParseFloat(f[1], 64)
				rss[pid] = kb / 1024
			}
		}
		if args := strings.Split(string(cmd), "\x00"); args[0] == binary && strings.Contains(string(cmd), prefix) {
			roots = append(roots, pid)
		}
	}
	var total float64
	for pid := range rss {
		for p := pid; p > 1; p = parent[p] {
			if slices.Contains(roots, p) {
				total += rss[pid]
				break
			}
		}
	}
	return total
}
