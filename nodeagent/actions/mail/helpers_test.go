package mail_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/webd"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestMain(m *testing.M) {
	// Dovecot's quota-warning service runs this test binary (the
	// module's Program defaults to os.Executable) as it runs npanel.
	if len(os.Args) > 1 && os.Args[1] == mail.QuotaWarningCommand {
		os.Exit(mail.QuotaWarningMain(os.Args[2:], os.Stderr))
	}
	if os.Getenv(spfChildEnv) != "" {
		os.Exit(spfChild())
	}
	if os.Getenv(pingChildEnv) != "" {
		os.Exit(clamdPingChild())
	}
	if os.Getenv(sendmailChildEnv) != "" {
		os.Exit(sendmailChild())
	}
	testenv.MainRemovingTestUsers(m)
}

// stack is a running Exim + Dovecot under a temporary prefix, with a relay
// (a go-smtp server) that captures outbound mail.
type stack struct {
	mod   *mail.Module
	env   *actions.Env
	m     *webd.Manager
	p     *platform.Profile
	key   *ecdsa.PrivateKey
	relay *testenv.SMTPSink
	specs []services.Spec
}

func startStack(t testing.TB) *stack { return startStackWith(t, true) }

// startStackWith starts the stack with or without ClamAV.
func startStackWith(t testing.TB, antivirus bool) *stack {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/exim4")
	testenv.RequireDaemon(t, "/usr/sbin/dovecot")
	if os.Geteuid() != 0 {
		t.Skip("needs root: Dovecot delivers as the accounts' users")
	}
	prefix := t.TempDir()
	for _, d := range []string{filepath.Dir(prefix), prefix} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := platform.Debian12(prefix)
	p.SMTPListen, p.SubmissionListen, p.SMTPSListen = testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	// Port 25's default listens on every address: Exim must bind both
	// families on it.
	_, port, _ := net.SplitHostPort(p.SMTPListen)
	p.SMTPListen = ":" + port
	p.IMAPListen, p.IMAPSListen, p.POP3Listen, p.POP3SListen = testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	p.MailAntivirus = antivirus
	r := testenv.StartSMTPSink(t)
	p.MailRelay = r.Addr
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := webd.NewManager(t)
	env := &actions.Env{Node: "mail.node.test", Logger: testenv.Logger(), Profile: p, Services: m, DataDir: t.TempDir(),
		Unseal: func(sealed []byte, context string) ([]byte, error) { return pki.Unseal(key, sealed, context) }}
	mod := mail.NewModule()
	ctx := testenv.Context(t)
	specs, err := mod.Setup(ctx, env)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	if len(specs) < 2 {
		t.Fatalf("setup returned %d specs", len(specs))
	}
	for _, s := range specs {
		if err := m.Ensure(ctx, s); err != nil {
			t.Fatalf("start %s: %v", s.Name, err)
		}
	}
	if err := os.MkdirAll(p.HomeBase, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("NPANEL_TEST_MAILLOG") != "" {
			for _, f := range []string{p.Mail().EximMainLog, p.Mail().DovecotLog, fmt.Sprintf(p.Mail().EximLogPat, "panic")} {
				b, _ := os.ReadFile(f)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	return &stack{mod: mod, env: env, m: m, p: p, key: key, relay: r, specs: specs}
}

// newAccount creates a Linux user named npt... with a 0711 home.
func (s *stack) newAccount(t testing.TB) string {
	t.Helper()
	name := testenv.TestUsername()
	home := filepath.Join(s.p.HomeBase, name)
	testenv.RemoveUserAtCleanup(t, name)
	out, err := exec.Command("/usr/sbin/useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", "-U", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Mkdir(home, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatal(err)
	}
	return name
}

func (s *stack) seal(t testing.TB, address, pw string) []byte {
	t.Helper()
	b, err := pki.Seal(&s.key.PublicKey, []byte(pw), agentpb.MailPasswordSealContext(address))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *stack) apply(t testing.TB, a actions.Action) (any, error) {
	t.Helper()
	if ta, ok := a.(actions.TestNameAware); ok {
		ta.AllowTestUsernames()
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return a.Apply(ctx, s.env)
}

func (s *stack) must(t testing.TB, a actions.Action) any {
	t.Helper()
	r, err := s.apply(t, a)
	if err != nil {
		t.Fatalf("%s: %v", a.Name(), err)
	}
	return r
}

func (s *stack) ensureDomain(t testing.TB, req *agentpb.EnsureMailDomainAction) *agentpb.MailDomainResult {
	t.Helper()
	return s.must(t, s.mod.NewEnsureMailDomain(req)).(*agentpb.MailDomainResult)
}

func (s *stack) ensureMailbox(t testing.TB, req *agentpb.EnsureMailboxAction) *agentpb.MailboxResult {
	t.Helper()
	return s.must(t, s.mod.NewEnsureMailbox(req)).(*agentpb.MailboxResult)
}

func randomDomain(t testing.TB) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("d%x.example.com", b)
}

var insecureTLS = &tls.Config{InsecureSkipVerify: true}

// submit sends msg over submission (STARTTLS + AUTH PLAIN) and returns the
// first error.
func (s *stack) submit(from, pw string, to []string, msg string) error {
	c, err := smtp.DialStartTLS(s.p.SubmissionListen, insecureTLS)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", from, pw)); err != nil {
		return err
	}
	return sendOn(c, from, to, msg)
}

// deliver sends msg to the MX port without AUTH, as another server would.
func (s *stack) deliver(from string, to []string, msg string) error {
	c, err := smtp.Dial(s.p.SMTPListen)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("mx.sender.test"); err != nil {
		return err
	}
	return sendOn(c, from, to, msg)
}

func sendOn(c *smtp.Client, from string, to []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func smtpCode(err error) int {
	if e, ok := err.(*smtp.SMTPError); ok {
		return e.Code
	}
	return 0
}

// imapConn is a minimal IMAP client over implicit TLS (IMAPS).
type imapConn struct {
	c   net.Conn
	r   *bufio.Reader
	tag int
}

func (s *stack) imapLogin(user, pw string) (*imapConn, error) {
	return s.imapLoginFrom(nil, user, pw)
}

// imapLoginFrom logs in from the local address src (nil: any). Dovecot's
// failed-login penalty grows per client address, so a test that fails many
// logins on purpose spreads them over 127.0.0.0/8.
func (s *stack) imapLoginFrom(src net.Addr, user, pw string) (*imapConn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}, "tcp", s.p.IMAPSListen, insecureTLS)
	if err != nil {
		return nil, err
	}
	ic := &imapConn{c: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := ic.r.ReadString('\n'); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := ic.cmd("LOGIN %s %s", imapQuote(user), imapQuote(pw)); err != nil {
		c.Close()
		return nil, err
	}
	return ic, nil
}

func imapQuote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// cmd runs one command and returns everything before the tagged reply,
// literals included; a tagged NO or BAD is an error.
func (ic *imapConn) cmd(format string, args ...any) (string, error) {
	ic.tag++
	tag := fmt.Sprintf("a%d", ic.tag)
	if _, err := fmt.Fprintf(ic.c, "%s %s\r\n", tag, fmt.Sprintf(format, args...)); err != nil {
		return "", err
	}
	var out strings.Builder
	for {
		line, err := ic.r.ReadString('\n')
		if err != nil {
			return out.String(), err
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				return out.String(), fmt.Errorf("imap: %s", strings.TrimSpace(line))
			}
			return out.String(), nil
		}
		out.WriteString(line)
		// A literal {N}: read N bytes verbatim.
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}\r\n") {
			n, err := strconv.Atoi(line[i+1 : len(line)-3])
			if err == nil {
				buf := make([]byte, n)
				if _, err := io.ReadFull(ic.r, buf); err != nil {
					return out.String(), err
				}
				out.Write(buf)
			}
		}
	}
}

func (ic *imapConn) close() { _, _ = ic.cmd("LOGOUT"); ic.c.Close() }

// fetchAll returns the full text of every message in mailbox.
func (ic *imapConn) fetchAll(mailbox string) ([]string, error) {
	out, err := ic.cmd("SELECT %s", imapQuote(mailbox))
	if err != nil {
		return nil, err
	}
	n := 0
	for _, l := range strings.Split(out, "\r\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "EXISTS" {
			n, _ = strconv.Atoi(f[1])
		}
	}
	var msgs []string
	for i := 1; i <= n; i++ {
		raw, err := ic.cmd("FETCH %d BODY.PEEK[]", i)
		if err != nil {
			return nil, err
		}
		// Between the literal's header line and the closing ")".
		start := strings.Index(raw, "}\r\n")
		end := strings.LastIndex(raw, ")")
		if start < 0 || end < start {
			return nil, fmt.Errorf("fetch %d: %q", i, raw)
		}
		msgs = append(msgs, raw[start+3:end])
	}
	return msgs, nil
}

// waitMessages polls until mailbox holds at least n messages.
func (s *stack) waitMessages(t testing.TB, user, pw, mailbox string, n int) []string {
	t.Helper()
	var msgs []string
	testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("%d messages in %s of %s", n, mailbox, user), func() bool {
		ic, err := s.imapLogin(user, pw)
		if err != nil {
			return false
		}
		defer ic.close()
		msgs, err = ic.fetchAll(mailbox)
		return err == nil && len(msgs) >= n
	})
	return msgs
}

func lookupName(uid uint32) string {
	u, err := user.LookupId(strconv.Itoa(int(uid)))
	if err != nil {
		return strconv.Itoa(int(uid))
	}
	return u.Username
}

func smtpDialPlain(addr string) (*smtp.Client, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return nil, err
	}
	if err := c.Hello("client.test"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// pop3Login logs in over POP3 with STARTTLS (STLS) and USER/PASS.
func pop3Login(addr, user, pw string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	expect := func() error {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(l, "+OK") {
			return fmt.Errorf("pop3: %s", strings.TrimSpace(l))
		}
		return nil
	}
	if err := expect(); err != nil {
		return err
	}
	fmt.Fprintf(c, "STLS\r\n")
	if err := expect(); err != nil {
		return err
	}
	tc := tls.Client(c, insecureTLS)
	r = bufio.NewReader(tc)
	for _, cmd := range []string{"USER " + user, "PASS " + pw, "STAT", "QUIT"} {
		fmt.Fprintf(tc, "%s\r\n", cmd)
		if err := expect(); err != nil {
			return err
		}
	}
	return nil
}

// smtpSubmitAs logs in as user and tries MAIL FROM:<from> RCPT TO:<to>;
// it returns the first error.
func smtpSubmitAs(s *stack, user, pw, from, to string) (string, error) {
	c, err := smtp.DialStartTLS(s.p.SubmissionListen, insecureTLS)
	if err != nil {
		return "dial", err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pw)); err != nil {
		return "auth", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "mail", err
	}
	return "rcpt", c.Rcpt(to, nil)
}
