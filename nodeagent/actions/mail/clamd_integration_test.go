package mail_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/protos/agentpb"
)

// pingChildEnv names the unix socket a re-run test binary (started as
// another user) sends clamd's zPING to; it prints the reply or the error.
const pingChildEnv = "NPANEL_TEST_CLAMD_PING"

func clamdPingChild() int {
	c, err := net.DialTimeout("unix", os.Getenv(pingChildEnv), 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("zPING\x00")); err != nil {
		fmt.Println("error:", err)
		return 0
	}
	r, err := bufio.NewReader(c).ReadString(0)
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	fmt.Println(strings.TrimRight(r, "\x00"))
	return 0
}

// pingAs sends zPING to sock as the user name, running exe (a copy of the
// test binary other users may run), and returns the reply.
func pingAs(t *testing.T, exe, name, sock string) string {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var groups []uint32
	ids, _ := u.GroupIds()
	for _, g := range ids {
		n, _ := strconv.Atoi(g)
		groups = append(groups, uint32(n))
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), pingChildEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ping child as %s: %v: %s", name, err, out.String())
	}
	return strings.TrimSpace(out.String())
}

// tcpListenInodes returns the socket inodes of every listening TCP socket.
func tcpListenInodes(t *testing.T) map[string]bool {
	t.Helper()
	in := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fl := strings.Fields(l)
			if len(fl) > 9 && fl[3] == "0A" { // TCP_LISTEN
				in[fl[9]] = true
			}
		}
	}
	return in
}

// TestClamdUnixSocketOnly: clamd has no TCP listener; its unix socket
// answers Exim's user and root but no account or other local user; EICAR
// is still rejected at DATA (Exim's SCAN of its own spool file), and with
// clamd down a message is deferred, not passed unscanned.
func TestClamdUnixSocketOnly(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/clamd")
	s := startStack(t)
	mp := s.p.Mail()
	pid := s.m.PID(mail.ClamdService)
	if pid == 0 {
		t.Fatal("clamd does not run")
	}
	acct := s.newAccount(t)
	dom := randomDomain(t)
	rcpt := "carol@" + dom
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: rcpt, SealedPassword: s.seal(t, rcpt, pwAlice), QuotaMb: 50})

	t.Run("NoTCPListener", func(t *testing.T) {
		listening := tcpListenInodes(t)
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(l, "socket:["); ok && listening[strings.TrimSuffix(ino, "]")] {
				t.Fatalf("clamd (pid %d) listens on TCP (fd %s)", pid, fd.Name())
			}
		}
		conf, err := os.ReadFile(mp.ClamdConfig)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(conf), "TCPSocket") {
			t.Fatalf("clamd configuration has a TCP socket:\n%s", conf)
		}
	})
	t.Run("SocketModes", func(t *testing.T) {
		eximGID := groupID(t, mp.EximGroup)
		fi, err := os.Stat(mp.ClamdSocket)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o660 || int(st.Gid) != eximGID {
			t.Fatalf("socket %v gid %d, want 0660 in Exim's group %d", fi.Mode(), st.Gid, eximGID)
		}
		di, err := os.Stat(filepath.Dir(mp.ClamdSocket))
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm()&0o007 != 0 {
			t.Fatalf("socket directory %v is open to others", di.Mode())
		}
	})
	t.Run("OnlyEximAndRoot", func(t *testing.T) {
		// go test's build directory is root's alone: copy the binary
		// where the other users may run it (the prefix is 0755).
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(s.p.Prefix, "mail.test")
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if r := pingAs(t, exe, mp.EximUser, mp.ClamdSocket); r != "PONG" {
			t.Fatalf("as %s: %q, want PONG", mp.EximUser, r)
		}
		if r := pingAs(t, exe, "root", mp.ClamdSocket); r != "PONG" {
			t.Fatalf("as root: %q, want PONG", r)
		}
		for _, who := range []string{acct, "nobody", mp.DovecotUser} {
			if r := pingAs(t, exe, who, mp.ClamdSocket); !strings.Contains(r, "permission denied") {
				t.Fatalf("as %s: %q, want permission denied", who, r)
			}
		}
	})
	const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
	t.Run("EICARRejected", func(t *testing.T) {
		err := s.deliver("x@elsewhere.example.org", []string{rcpt}, message("x@elsewhere.example.org", rcpt, "eicar", eicar))
		if c := smtpCode(err); c != 550 || !strings.Contains(err.Error(), "malware") {
			t.Fatalf("EICAR: %v, want 550 malware", err)
		}
		if err := s.deliver("x@elsewhere.example.org", []string{rcpt}, message("x@elsewhere.example.org", rcpt, "clean", "a clean note")); err != nil {
			t.Fatalf("clean message: %v", err)
		}
		if msgs := s.waitMessages(t, rcpt, pwAlice, "INBOX", 1); len(msgs) != 1 || !strings.Contains(msgs[0], "a clean note") {
			t.Fatalf("INBOX: %q", msgs)
		}
	})
	t.Run("ClamdDownDefers", func(t *testing.T) {
		ctx := testenv.Context(t)
		if err := s.m.Stop(ctx, mail.ClamdService); err != nil {
			t.Fatal(err)
		}
		err := s.deliver("x@elsewhere.example.org", []string{rcpt}, message("x@elsewhere.example.org", rcpt, "unscanned", "clamd is down"))
		if c := smtpCode(err); c < 400 || c > 499 {
			t.Fatalf("with clamd down: %v, want a 4xx deferral", err)
		}
	})
}

func groupID(t *testing.T, name string) int {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return gid
}
