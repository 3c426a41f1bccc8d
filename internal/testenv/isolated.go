package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/validate"
)

// IsolatedAgent is a node agent running as a process of the test build of
// npanel, with a user database of its own: its /etc (Etc) is a copy of
// the host's made at start, bound over /etc in a private mount namespace,
// with the system users (www-data, mysql, Debian-exim, dovecot) but not
// the test users. The users its accounts create, and those its deletes
// remove, are in Etc only: an in-process agent and an isolated one can
// each hold an account user of the same name with a different home, as
// two machines would.
type IsolatedAgent struct {
	Name string
	// Config is what its command line was made from.
	Config nodeagent.Config
	// Etc is its /etc: Etc/passwd is its user list.
	Etc string
	// Log is the agent's log file (stdout and stderr), of every start.
	Log string

	t    testing.TB
	s    *Server
	bin  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// connects is how many stream connections the log held at the
	// last start: a restarted node is READY in the API before its new
	// process has connected.
	connects int
}

// userDBFiles are the user and group databases useradd, usermod and
// userdel change; their test users are left out of the copy.
var userDBFiles = map[string]bool{"passwd": true, "shadow": true, "group": true, "gshadow": true, "subuid": true, "subgid": true}

// StartIsolatedAgent is StartAgent for an agent with its own user database
// (see IsolatedAgent), run as a subprocess in a private mount namespace.
// It takes the same options; each must set only config fields the agent's
// command line carries. It skips the test when not root or when the
// machine does not allow mount namespaces.
func (s *Server) StartIsolatedAgent(t testing.TB, name string, opts ...AgentOption) *IsolatedAgent {
	t.Helper()
	return s.startIsolatedAgent(t, name, "127.0.0.1", opts...)
}

func (s *Server) startIsolatedAgent(t testing.TB, name, address string, opts ...AgentOption) *IsolatedAgent {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("an isolated agent needs root (mount namespace, a bind over /etc, useradd)")
	}
	bin := testBinary(t)
	probeOwnEtc(t, bin)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := s.Admin.CreateJoinToken(ctx, name, address, []string{"WEB", "DNS", "MAIL"}, map[string]string{"test": "true"})
	if err != nil {
		t.Fatalf("join token for %s: %v", name, err)
	}
	cfg := nodeagent.Config{
		Servers:      []string{s.Config.AgentListen},
		JoinToken:    tok.Token,
		DataDir:      t.TempDir(),
		GossipListen: "127.0.0.1:0",
		Prefix:       nodePrefix(t, ""),
		// Not the command's default :9469, which every isolated agent
		// would contend for.
		MetricsListen: "127.0.0.1:0",
	}
	for _, o := range opts {
		o(&cfg)
	}
	dir := t.TempDir()
	a := &IsolatedAgent{Name: name, Config: cfg, t: t, s: s, bin: bin,
		Etc: filepath.Join(dir, "etc"), Log: filepath.Join(dir, name+".log")}
	copyEtc(t, a.Etc)
	a.Start()
	t.Cleanup(a.Stop)
	a.WaitReady()
	return a
}

// WaitReady waits until the process of the last start has connected and
// the control plane lists the node READY, failing with the agent's log if
// the process exits first.
func (a *IsolatedAgent) WaitReady() {
	a.t.Helper()
	WaitFor(a.t, 30*time.Second, a.Name+" READY", func() bool {
		if !a.Running() {
			a.t.Fatalf("agent %s exited:\n%s", a.Name, a.tail())
		}
		if a.connected() <= a.connects {
			return false
		}
		nodes, err := a.s.Admin.Nodes(context.Background())
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.Name == a.Name && n.Status == "READY" {
				return true
			}
		}
		return false
	})
}

// Start (re)starts the agent process on its data dir and /etc. After the
// first start the join token is no longer needed and is dropped.
func (a *IsolatedAgent) Start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		a.t.Fatalf("agent %s already running", a.Name)
	}
	args, err := agentArgs(a.Config)
	if err != nil {
		a.t.Fatalf("agent %s: %v", a.Name, err)
	}
	a.connects = a.connected()
	argv := append([]string{ownEtcCommand, "--etc", a.Etc, "--", "agent"}, args...)
	f, err := os.OpenFile(a.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(a.bin, argv...)
	// The token goes in the environment, not the command line (ps).
	cmd.Env = append(os.Environ(), "NPANEL_JOIN_TOKEN="+a.Config.JoinToken)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, killed whole at Stop; and a test binary
	// that dies takes the agent with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		a.t.Fatalf("start agent %s: %v", a.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	a.cmd, a.done = cmd, done
	a.Config.JoinToken = ""
}

// Running reports whether the agent process has not exited.
func (a *IsolatedAgent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// PID is the agent process's id, 0 when stopped.
func (a *IsolatedAgent) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Stop ends the agent (SIGTERM, SIGKILL after 20 s) and then, by PID, the
// daemons it started, which run in process groups of their own and would
// keep their ports: what systemd's KillMode=control-group does in
// production. It is safe to call more than once.
func (a *IsolatedAgent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	// Taken before the agent dies: orphans lose the link to it.
	kids := descendants(pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		a.t.Errorf("agent %s did not stop within 20s; killed", a.Name)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, k := range append(kids, descendants(pid)...) {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	killStrays(a.t, a.Config.Prefix)
	if a.t.Failed() {
		a.t.Logf("agent %s log (end):\n%s", a.Name, a.tail())
	}
}

// User returns the home of the Linux user name in the agent's own user
// database, and whether it has the user.
func (a *IsolatedAgent) User(name string) (home string, ok bool) {
	return passwdHome(filepath.Join(a.Etc, "passwd"), name)
}

// HostUser returns the home of the Linux user name in the host's
// /etc/passwd, and whether the host has the user.
func HostUser(name string) (home string, ok bool) {
	return passwdHome("/etc/passwd", name)
}

func passwdHome(path, name string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == name {
			return f[5], true
		}
	}
	return "", false
}

// connected counts the agent's "connected" log lines (one per stream
// connection, nodeagent's Run).
func (a *IsolatedAgent) connected() int {
	b, _ := os.ReadFile(a.Log)
	return bytes.Count(b, []byte(" msg=connected "))
}

func (a *IsolatedAgent) tail() string {
	b, _ := os.ReadFile(a.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// agentFlags maps the config fields an option may set to the agent's
// flags. A field named here that the config lacks is skipped, so a flag
// can be listed before its field exists.
var agentFlags = map[string]string{
	"Platform":         "--platform",
	"HTTPListen":       "--http-listen",
	"HTTPSListen":      "--https-listen",
	"DNSListen":        "--dns-listen",
	"DNSAPIListen":     "--dns-api-listen",
	"SMTPListen":       "--smtp-listen",
	"SubmissionListen": "--submission-listen",
	"SMTPSListen":      "--smtps-listen",
	"IMAPListen":       "--imap-listen",
	"IMAPSListen":      "--imaps-listen",
	"POP3Listen":       "--pop3-listen",
	"POP3SListen":      "--pop3s-listen",
	"MailRelay":        "--mail-relay",
	"SFTPListen":       "--sftp-listen",
	"BackupUser":       "--backup-user",
	"MigrationListen":  "--migration-listen",
	"MetricsListen":    "--metrics-listen",
}

// agentArgs is the agent command line equivalent to cfg (the join token
// aside, which goes in the environment). A field set that no flag carries
// is an error: the agent would silently run without it.
func agentArgs(cfg nodeagent.Config) ([]string, error) {
	var mods []string
	for _, m := range cfg.Modules {
		mods = append(mods, m.Name())
	}
	if len(mods) == 0 {
		mods = []string{"none"}
	}
	args := []string{
		"--server", strings.Join(cfg.Servers, ","),
		"--data-dir", cfg.DataDir,
		"--prefix", cfg.Prefix,
		"--gossip-listen", cfg.GossipListen,
		"--modules", strings.Join(mods, ","),
		"--mail-antivirus=" + strconv.FormatBool(!cfg.NoMailAntivirus),
		"--log-level", "debug", "--log-format", "text",
	}
	// Set by StartIsolatedAgent itself or meaningless across a process
	// boundary (the binary allows test names; it has its own logger).
	handled := map[string]bool{"Servers": true, "DataDir": true, "Prefix": true, "GossipListen": true, "Modules": true,
		"NoMailAntivirus": true, "JoinToken": true, "Version": true, "Logger": true, "AllowTestUsernames": true}
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		field, val := v.Type().Field(i).Name, v.Field(i)
		if handled[field] || val.IsZero() {
			continue
		}
		flag, ok := agentFlags[field]
		if !ok || val.Kind() != reflect.String {
			return nil, fmt.Errorf("an option sets Config.%s, which the agent's command line cannot carry", field)
		}
		args = append(args, flag, val.String())
	}
	return args, nil
}

// ownEtcCommand is the hidden command of the test build that runs the
// agent with its own /etc (cmd/npanel/testns_on.go).
const ownEtcCommand = "test-own-etc"

// testBin is the npanel binary built with -tags npanel_testnames, shared
// by the isolated agents of the test process and removed after the last
// of them is gone.
var testBin struct {
	sync.Mutex
	path  string
	users int
}

func testBinary(t testing.TB) string {
	t.Helper()
	testBin.Lock()
	defer testBin.Unlock()
	if testBin.path == "" {
		dir, err := os.MkdirTemp("", "npanel-testbin-")
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "npanel")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command(goBin, "build", "-tags", "npanel_testnames", "-o", out, "./cmd/npanel")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			t.Fatalf("go build -tags npanel_testnames ./cmd/npanel: %v\n%s", err, b)
		}
		testBin.path = out
	}
	testBin.users++
	path := testBin.path
	t.Cleanup(func() {
		testBin.Lock()
		defer testBin.Unlock()
		if testBin.users--; testBin.users == 0 {
			_ = os.RemoveAll(filepath.Dir(testBin.path))
			testBin.path = ""
		}
	})
	return path
}

// goBin is the toolchain the test binary is built with, as chaos/ does.
const goBin = "/usr/local/go/bin/go"

// probeOwnEtc runs "version" the isolated way once: a machine (or
// container) that forbids mount namespaces skips the test with the reason
// instead of failing it.
func probeOwnEtc(t testing.TB, bin string) {
	t.Helper()
	etc := filepath.Join(t.TempDir(), "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "passwd"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, ownEtcCommand, "--etc", etc, "--", "version").CombinedOutput()
	if err == nil {
		return
	}
	if bytes.Contains(out, []byte("operation not permitted")) {
		t.Skipf("an isolated agent needs a private mount namespace, which this machine refuses: %s", bytes.TrimSpace(out))
	}
	t.Fatalf("%s %s: %v\n%s", bin, ownEtcCommand, err, out)
}

// copyEtc copies the host's /etc to dst with modes, owners and symlinks
// (shadow stays root:shadow 0640), leaving out the entries of test users
// (names under validate.TestUserPrefix) from the user databases, the
// shadow tools' lock files (a host useradd running now would otherwise
// lock the copy too) and what is neither file, directory nor symlink. A
// file that goes while it is copied (such a useradd's group.PID) is
// left out.
func copyEtc(t testing.TB, dst string) {
	t.Helper()
	err := filepath.WalkDir("/etc", func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != "/etc" {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("/etc", path)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return os.Lchown(to, int(st.Uid), int(st.Gid))
		case d.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if filepath.Dir(rel) == "." && (strings.HasSuffix(rel, ".lock") && rel != ".pwd.lock" || strings.HasSuffix(rel, "+")) {
				return nil
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if userDBFiles[rel] {
				b = withoutTestUsers(b)
			}
			if err := os.WriteFile(to, b, 0o600); err != nil {
				return err
			}
		default:
			return nil
		}
		// Owner first: chown clears the set-id bits.
		if err := os.Chown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		return os.Chmod(to, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	})
	if err != nil {
		t.Fatalf("copy /etc: %v", err)
	}
}

// withoutTestUsers drops the lines of names under the test prefix.
func withoutTestUsers(b []byte) []byte {
	var kept bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(validate.TestUserPrefix)) {
			kept.Write(line)
		}
	}
	return kept.Bytes()
}

// descendants lists the processes below pid, by their parent links.
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		if f := strings.Fields(string(st[i+1:])); len(f) > 1 {
			parent[n], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	for n := range parent {
		for q := parent[n]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// killStrays kills, by PID, every process whose command line names dir
// (the agent's prefix): daemons that lost their parent link.
func killStrays(t testing.TB, dir string) {
	t.Helper()
	if dir == "" {
		return
	}
	for range 50 {
		pids := straysOf(dir)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("processes under %s survive SIGKILL: %v", dir, straysOf(dir))
}

func straysOf(dir string) []int {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		// A zombie is gone already; its parent reaps it.
		if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			continue
		}
		if strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
