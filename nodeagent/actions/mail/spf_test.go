package mail_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/protos/agentpb"
)

// The SPF test runs Exim where its resolver answers from a DNS server the
// test controls, without touching the machine's resolver or network: the
// test binary re-runs itself (spfChildEnv set) in a new network and mount
// namespace, bind-mounts a resolv.conf naming 127.0.0.1 over
// /etc/resolv.conf there (as `ip netns exec` does with /etc/netns), serves
// the test's TXT records on the namespace's own 127.0.0.1:53 and runs
// `exim -bh` (a real SMTP dialogue through the real ACLs, SPF included,
// delivering nothing). Both namespaces disappear with the child.
const (
	spfChildEnv = "NPANEL_TEST_SPF_CHILD"
	spfZoneEnv  = "NPANEL_TEST_SPF_ZONE"   // JSON: name -> TXT value
	spfArgsEnv  = "NPANEL_TEST_SPF_ARGS"   // JSON: exim argv after the binary
	spfResolv   = "NPANEL_TEST_SPF_RESOLV" // the resolv.conf to mount
)

// spfChild is the re-run test binary inside the new namespaces.
func spfChild() int {
	fail := func(f string, a ...any) int {
		fmt.Fprintf(os.Stderr, "spf child: "+f+"\n", a...)
		return 111
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fail("make / private: %v", err)
	}
	if err := syscall.Mount(os.Getenv(spfResolv), "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		return fail("bind resolv.conf: %v", err)
	}
	if out, err := exec.Command("/usr/sbin/ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fail("lo up: %v: %s", err, out)
	}
	var zone map[string]string
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(spfZoneEnv)), &zone); err != nil {
		return fail("zone: %v", err)
	}
	if err := json.Unmarshal([]byte(os.Getenv(spfArgsEnv)), &args); err != nil || len(args) < 1 {
		return fail("args: %v", err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		found := false
		for _, q := range r.Question {
			name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
			if strings.HasPrefix(name, "servfail.") {
				m.Rcode = dns.RcodeServerFailure
				found = true
				continue
			}
			txt, ok := zone[name]
			if !ok {
				continue
			}
			found = true
			if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{txt}})
			}
		}
		if !found {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	for _, netw := range []string{"udp", "tcp"} {
		started := make(chan error, 1)
		srv := &dns.Server{Addr: "127.0.0.1:53", Net: netw, Handler: handler, NotifyStartedFunc: func() { started <- nil }}
		go func() { started <- srv.ListenAndServe() }()
		if err := <-started; err != nil {
			return fail("dns %s: %v", netw, err)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			return fail("exim: %v", err)
		}
	}
	return 0
}

// eximBH runs `exim -C CONF -bh clientIP` in fresh namespaces whose DNS
// serves zone, with dialogue on stdin, and returns stdout and stderr.
func (s *stack) eximBH(t *testing.T, zone map[string]string, clientIP string, dialogue []string) (string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	zj, _ := json.Marshal(zone)
	aj, _ := json.Marshal([]string{s.p.Mail().Exim, "-C", s.p.Mail().EximConfig, "-bh", clientIP})
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), spfChildEnv+"=1", spfZoneEnv+"="+string(zj), spfArgsEnv+"="+string(aj), spfResolv+"="+resolv)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = strings.NewReader(strings.Join(dialogue, "\r\n") + "\r\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("exim -bh did not finish; stderr:\n%s", errb.String())
	}
	if err != nil {
		t.Fatalf("spf child: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// TestSPFInbound: mail from another server to a local mailbox is refused at
// RCPT when the sender domain's SPF policy fails for the client address,
// and gets a Received-SPF header on pass/softfail/neutral; no policy and a
// DNS answer of NXDOMAIN pass. From loopback (where libspf2 passes
// everything) the sender is marked unverified, and from this node's own
// addresses a sender in a domain hosted here must log in.
func TestSPFInbound(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/ip"); err != nil {
		t.Skip("needs iproute2")
	}
	s := startStackWith(t, false)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	rcpt := "alice@" + dom
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: rcpt, SealedPassword: s.seal(t, rcpt, pwAlice), QuotaMb: 50})

	zone := map[string]string{
		"fail.spf.test":     "v=spf1 ip4:198.51.100.0/24 -all",
		"pass.spf.test":     "v=spf1 ip4:192.0.2.0/24 -all",
		"softfail.spf.test": "v=spf1 ip4:198.51.100.0/24 ~all",
		"neutral.spf.test":  "v=spf1 ?all",
		"helo.spf.test":     "v=spf1 -all",
	}
	const client = "192.0.2.10" // TEST-NET-1: only claimed by -bh, never dialled
	dialogue := func(helo, from string, data bool) []string {
		d := []string{"EHLO " + helo, "MAIL FROM:<" + from + ">", "RCPT TO:<" + rcpt + ">"}
		if data {
			d = append(d, "DATA", "From: <"+from+">", "To: <"+rcpt+">", "Subject: spf", "", "body", ".")
		}
		return append(d, "QUIT")
	}
	rcptReply := func(out string) string {
		// Replies in order: banner, EHLO (multi-line), MAIL, RCPT.
		var replies []string
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimRight(l, "\r")
			if len(l) >= 4 && l[3] == ' ' && l[0] >= '2' && l[0] <= '5' {
				replies = append(replies, l)
			}
		}
		if len(replies) < 4 {
			t.Fatalf("short dialogue:\n%s", out)
		}
		return replies[3]
	}

	t.Run("FailRefusedAtRCPT", func(t *testing.T) {
		out, errb := s.eximBH(t, zone, client, dialogue("mx.fail.spf.test", "someone@fail.spf.test", false))
		r := rcptReply(out)
		if !strings.HasPrefix(r, "550") || !strings.Contains(r, "SPF check failed: 192.0.2.10 is not allowed to send mail from fail.spf.test") {
			t.Fatalf("RCPT reply %q, want 550 SPF check failed\n%s\n%s", r, out, errb)
		}
	})
	t.Run("NullSenderUsesHELO", func(t *testing.T) {
		out, errb := s.eximBH(t, zone, client, dialogue("helo.spf.test", "", false))
		if r := rcptReply(out); !strings.HasPrefix(r, "550") || !strings.Contains(r, "helo.spf.test") {
			t.Fatalf("RCPT reply %q, want 550 for the HELO identity\n%s\n%s", r, out, errb)
		}
	})
	for _, c := range []struct{ domain, result string }{
		{"pass.spf.test", "pass"}, {"softfail.spf.test", "softfail"}, {"neutral.spf.test", "neutral"},
	} {
		t.Run("Header_"+c.result, func(t *testing.T) {
			out, errb := s.eximBH(t, zone, client, dialogue("mx."+c.domain, "someone@"+c.domain, true))
			if r := rcptReply(out); !strings.HasPrefix(r, "250") {
				t.Fatalf("RCPT reply %q, want 250\n%s\n%s", r, out, errb)
			}
			// -bh prints the ACL steps on stderr, the header added at DATA
			// among them.
			want := "Received-SPF: " + c.result
			if !strings.Contains(errb, want) {
				t.Fatalf("no %q in the ACL trace:\n%s\n%s", want, out, errb)
			}
		})
	}
	t.Run("NoPolicyAccepted", func(t *testing.T) {
		out, errb := s.eximBH(t, zone, client, dialogue("mx.nowhere.spf.test", "someone@nowhere.spf.test", false))
		if r := rcptReply(out); !strings.HasPrefix(r, "250") {
			t.Fatalf("RCPT reply %q, want 250\n%s\n%s", r, out, errb)
		}
	})
	t.Run("DNSFailureAccepted", func(t *testing.T) {
		// temperror is not fail: a broken DNS server does not lose mail.
		out, errb := s.eximBH(t, zone, client, dialogue("mx.servfail.spf.test", "someone@servfail.spf.test", false))
		if r := rcptReply(out); !strings.HasPrefix(r, "250") {
			t.Fatalf("RCPT reply %q, want 250\n%s\n%s", r, out, errb)
		}
	})
	t.Run("LoopbackMarkedUnverified", func(t *testing.T) {
		// libspf2 passes every loopback client; an account's program on
		// this node spoofing an outside domain gets a softfail instead.
		for _, from := range []string{"someone@fail.spf.test", "someone@pass.spf.test"} {
			out, errb := s.eximBH(t, zone, "127.0.0.1", dialogue("localhost", from, true))
			if r := rcptReply(out); !strings.HasPrefix(r, "250") {
				t.Fatalf("from %s: RCPT reply %q, want 250\n%s\n%s", from, r, out, errb)
			}
			if !strings.Contains(errb, "Received-SPF: softfail (mail.node.test: 127.0.0.1 is on this node") || strings.Contains(errb, "Received-SPF: pass") {
				t.Fatalf("from %s: want only the unverified softfail header in the ACL trace:\n%s\n%s", from, out, errb)
			}
		}
	})

	// Another account's domain on this node: its SPF policy names this
	// node, so from here only a logged-in mailbox may use it.
	other := s.newAccount(t)
	otherDom := randomDomain(t)
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: other, Domain: otherDom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: other, Address: "bob@" + otherDom, SealedPassword: s.seal(t, "bob@"+otherDom, pwBob), QuotaMb: 50})
	t.Run("LoopbackSpoofOfHostedDomainRefused", func(t *testing.T) {
		for _, from := range []string{"bob@" + otherDom, "anyone@" + otherDom, "alice@" + dom, "x@" + strings.ToUpper(otherDom)} {
			out, errb := s.eximBH(t, zone, "127.0.0.1", dialogue("localhost", from, false))
			if r := rcptReply(out); !strings.HasPrefix(r, "550") || !strings.Contains(out, "hosted here, so log in") {
				t.Fatalf("from %s: RCPT reply %q, want 550 hosted here\n%s\n%s", from, r, out, errb)
			}
		}
	})
	t.Run("RealSMTPFromLoopback", func(t *testing.T) {
		// The running Exim, dialled on 127.0.0.1 without AUTH.
		spoof := message("bob@"+otherDom, rcpt, "spoof", "not really bob")
		if err := s.deliver("bob@"+otherDom, []string{rcpt}, spoof); smtpCode(err) != 550 {
			t.Fatalf("spoof of a hosted domain from loopback: %v, want 550", err)
		}
		// Another domain from loopback arrives marked unverified.
		if err := s.deliver("x@elsewhere.example.org", []string{rcpt}, message("x@elsewhere.example.org", rcpt, "outside", "from a script")); err != nil {
			t.Fatalf("outside sender from loopback: %v", err)
		}
		got := s.waitMessages(t, rcpt, pwAlice, "INBOX", 1)
		if len(got) != 1 || !strings.Contains(got[0], "Received-SPF: softfail (mail.node.test: 127.0.0.1 is on this node") {
			t.Fatalf("alice's INBOX: %q", got)
		}
		// Logged in as bob, the same message is fine.
		if err := s.submit("bob@"+otherDom, pwBob, []string{rcpt}, spoof); err != nil {
			t.Fatalf("bob, logged in: %v", err)
		}
		msgs := s.waitMessages(t, rcpt, pwAlice, "INBOX", 2)
		if len(msgs) != 2 || !strings.Contains(msgs[1], "not really bob") || strings.Contains(msgs[1], "Received-SPF") {
			t.Fatalf("alice's INBOX: %q", msgs)
		}
	})
	t.Run("RootNamespaceResolverUntouched", func(t *testing.T) {
		// The bind mount lived in the child's mount namespace only.
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "options timeout:2 attempts:1") {
			t.Fatalf("/etc/resolv.conf changed in the test's namespace: %q", b)
		}
	})
}
