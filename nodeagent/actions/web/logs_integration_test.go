package web_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// catAs reads path as the account's user.
func catAs(o web.Owner, path string) (string, error) {
	cmd := exec.Command("/bin/cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: o.UID, Gid: o.GID}}
	out, err := cmd.Output()
	return string(out), err
}

func readLog(t *testing.T, s *stack, o web.Owner, domain string, kind agentpb.DomainLogKind, n uint32) []string {
	t.Helper()
	act := s.web.NewReadDomainLog(&agentpb.ReadDomainLogAction{Username: o.Username, Domain: domain, Kind: kind, Lines: n})
	if err := act.Validate(); err != nil {
		t.Fatal(err)
	}
	res, err := act.Apply(testenv.Context(t), s.env)
	if err != nil {
		t.Fatal(err)
	}
	return res.(*agentpb.DomainLogResult).GetLines()
}

// A domain's logs: nginx writes them in the account's root-owned log
// directory, the account reads them as ~/logs/DOMAIN.access.log and
// .error.log (hard links) and through the read action, other accounts
// cannot, and the agent rotates them with a reopen.
func TestDomainLogs(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	b := s.newUser(t)
	const domain = "npt-logs.example.com"
	writeAs(t, a, "public_html/index.html", "hello")
	res := s.ensure(t, a, spec(site(domain, "public_html", "")), false)
	s.ensure(t, b, spec(site("npt-other.example.com", "public_html", "")), false)

	sr := res.Sites[0]
	if want := filepath.Join(s.env.Profile.Web().DomainLogDir, a.Username, domain+".access.log"); sr.AccessLog != want {
		t.Fatalf("access log at %s, want %s", sr.AccessLog, want)
	}
	for _, p := range []string{sr.AccessLog, sr.ErrorLog} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o640 || st.Gid != a.GID || st.Uid == a.UID {
			t.Errorf("%s: %v uid %d gid %d; want 0640, the account's group, not its owner", p, fi.Mode(), st.Uid, st.Gid)
		}
	}
	if fi, err := os.Lstat(filepath.Dir(sr.AccessLog)); err != nil || fi.Mode().Perm() != 0o750 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("log directory: %v %v; want root's, 0750", fi.Mode(), err)
	}

	s.get(t, domain, "/first-request")
	s.get(t, domain, "/missing-page")
	home := filepath.Join(a.Home, "logs", domain+".access.log")
	// nginx logs a request after its response: wait for both lines.
	testenv.WaitFor(t, 5*time.Second, "requests logged", func() bool {
		out, err := catAs(a, home)
		return err == nil && strings.Contains(out, "/first-request") && strings.Contains(out, "/missing-page")
	})
	if _, err := catAs(b, home); err == nil {
		t.Errorf("another account reads the log through a's link")
	}
	if _, err := catAs(b, sr.AccessLog); err == nil {
		t.Errorf("another account reads a's log in the log directory")
	}
	tee := exec.Command("/usr/bin/tee", "-a", home)
	tee.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.UID, Gid: a.GID}}
	tee.Stdin = strings.NewReader("forged")
	if tee.Run() == nil {
		t.Errorf("the account can write its log")
	}
	// Two nginx workers may log the two requests in either order.
	lines := readLog(t, s, a, domain, agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS, 2)
	if len(lines) != 2 || !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "/missing-page") }) {
		t.Errorf("last two access lines: %q", lines)
	}
	if got := readLog(t, s, a, "npt-other.example.com", agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS, 10); len(got) != 0 {
		t.Errorf("a's read of b's domain returned %q", got)
	}

	// Rotation: the log moves to .1, nginx reopens, the next request goes
	// to the new file and ~/logs follows it.
	rotated, err := web.RotateLogs(testenv.Context(t), s.web, s.env, 1)
	if err != nil || len(rotated) == 0 {
		t.Fatalf("rotate: %v %v", rotated, err)
	}
	if b, err := os.ReadFile(sr.AccessLog + ".1"); err != nil || !strings.Contains(string(b), "/first-request") {
		t.Fatalf("rotated log: %v %q", err, b)
	}
	testenv.WaitFor(t, 5*time.Second, "new requests in the new file", func() bool {
		s.get(t, domain, "/after-rotation")
		b, _ := os.ReadFile(sr.AccessLog)
		return strings.Contains(string(b), "/after-rotation") && !strings.Contains(string(b), "/first-request")
	})
	if out, err := catAs(a, home); err != nil || !strings.Contains(out, "/after-rotation") {
		t.Errorf("~/logs link not moved to the new file: %v %q", err, out)
	}
	if fi, err := os.Stat(sr.AccessLog); err != nil || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Gid != a.GID {
		t.Errorf("new log after rotation: %v %v", fi.Mode(), err)
	}

	// A domain the account no longer serves takes its logs with it: the
	// rotated generations and the links in ~/logs too.
	s.ensure(t, a, spec(site("npt-logs2.example.com", "public_html", "")), false)
	for _, p := range []string{sr.AccessLog, sr.AccessLog + ".1", sr.ErrorLog, home, filepath.Join(a.Home, "logs", domain+".error.log")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after its domain was removed: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(a.Home, "logs", "npt-logs2.example.com.access.log")); err != nil {
		t.Errorf("the remaining domain's log is not linked: %v", err)
	}
}

// The account owns its home and may put symlinks anywhere in it: neither
// nginx (which opens logs as root) nor the agent must ever follow one to a
// file the account may not write.
func TestDomainLogsSymlinkAttack(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	const domain = "npt-attack.example.com"
	writeAs(t, a, "public_html/index.html", "hello")

	// A stand-in for /etc: a root-only directory with a secret in it.
	etc := t.TempDir()
	secret := filepath.Join(etc, "shadow")
	if err := os.WriteFile(secret, []byte("root:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// ~/logs/DOMAIN.access.log is a symlink to the secret before the site
	// exists, and ~/logs itself is then swapped for a symlink to etc.
	if err := os.Symlink(secret, filepath.Join(a.Home, "logs", domain+".access.log")); err != nil {
		t.Fatal(err)
	}
	s.ensure(t, a, spec(site(domain, "public_html", "")), false)
	s.get(t, domain, "/attack-1")
	if err := os.Rename(filepath.Join(a.Home, "logs"), filepath.Join(a.Home, "logs.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(etc, filepath.Join(a.Home, "logs")); err != nil {
		t.Fatal(err)
	}
	sp := spec(site(domain, "public_html", ""), site("npt-attack2.example.com", "public_html", ""))
	s.ensure(t, a, sp, false) // a reload: nginx opens every log again
	s.get(t, domain, "/attack-2")
	if _, err := web.RotateLogs(testenv.Context(t), s.web, s.env, 1); err != nil {
		t.Fatal(err)
	}

	if b, _ := os.ReadFile(secret); string(b) != "root:secret\n" {
		t.Errorf("secret changed: %q", b)
	}
	ents, _ := os.ReadDir(etc)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files created in the symlinked directory: %v", names)
	}
	if fi, err := os.Lstat(filepath.Join(a.Home, "logs.old", domain+".access.log")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the account's own symlink was replaced: %v %v", fi, err)
	}
	// The logs went where they belong all along.
	testenv.WaitFor(t, 5*time.Second, "request logged", func() bool {
		s.get(t, domain, "/attack-3")
		lines := readLog(t, s, a, domain, agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS, 10)
		return len(lines) > 0 && strings.Contains(lines[len(lines)-1], "/attack-3")
	})
}
