package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// There is no systemd on the test machine (nor in CI containers), so these
// tests drive Systemd through fakeSystemctl, a double that records every
// argument vector and answers like systemctl would. They test what this
// package decides: the commands it runs, how it reads their output, the
// coalescing, the polling. systemd's own behaviour is not under test.

type fakeSystemctl struct {
	mu     sync.Mutex
	calls  [][]string
	active map[string]string // unit → ActiveState
	pid    map[string]int
	// restarts is each unit's NRestarts, as systemd's Restart= logic
	// would count them.
	restarts map[string]int
	nextPID  int
	fail     map[string]string // "verb unit" → stderr of a failing call
	journal  string
	// gate, when set, blocks reloads until closed; reloading receives a
	// value as each one starts.
	gate      chan struct{}
	reloading chan struct{}
}

func newFakeSystemctl() *fakeSystemctl {
	return &fakeSystemctl{active: map[string]string{}, pid: map[string]int{}, restarts: map[string]int{}, nextPID: 100, fail: map[string]string{}}
}

func (f *fakeSystemctl) run(ctx context.Context, argv ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(argv))
	gate, reloading := f.gate, f.reloading
	f.mu.Unlock()

	if argv[0] == journalctlPath {
		return []byte(f.journal), nil
	}
	if argv[0] != systemctlPath || len(argv) < 3 {
		return nil, fmt.Errorf("fake: unexpected command %q", argv)
	}
	verb, unit := argv[1], argv[2]
	if verb == "reload" && gate != nil {
		reloading <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if stderr, ok := f.fail[verb+" "+unit]; ok {
		if verb == "start" || verb == "restart" {
			f.active[unit], f.pid[unit] = "failed", 0
		}
		return nil, fmt.Errorf("%s: exit status 1: %s", strings.Join(argv, " "), stderr)
	}
	switch verb {
	case "enable", "reload", "reload-or-restart":
	case "start":
		if f.active[unit] != "active" {
			f.nextPID++
			f.active[unit], f.pid[unit] = "active", f.nextPID
		}
	case "restart":
		f.nextPID++
		f.active[unit], f.pid[unit] = "active", f.nextPID
	case "stop":
		f.active[unit], f.pid[unit] = "inactive", 0
	case "show":
		state := f.active[unit]
		if state == "" {
			state = "inactive"
		}
		sub, result := map[string]string{"active": "running", "failed": "failed", "inactive": "dead"}[state], "success"
		if state == "failed" {
			result = "exit-code"
		}
		ts := ""
		if state == "active" {
			ts = "Sun 2024-11-24 10:00:00 UTC"
		}
		return fmt.Appendf(nil, "MainPID=%d\nActiveState=%s\nSubState=%s\nResult=%s\nActiveEnterTimestamp=%s\nNRestarts=%d\n",
			f.pid[unit], state, sub, result, ts, f.restarts[unit]), nil
	default:
		return nil, fmt.Errorf("fake: unexpected verb %q", verb)
	}
	return nil, nil
}

func (f *fakeSystemctl) setActive(unit, state string, pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[unit], f.pid[unit] = state, pid
}

// autoRestart is systemd restarting a unit after a crash (Restart=): a
// new main PID and NRestarts one up.
func (f *fakeSystemctl) autoRestart(unit string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	f.active[unit], f.pid[unit] = "active", f.nextPID
	f.restarts[unit]++
}

// commands returns the calls so far as strings, without the binary path
// for systemctl, and forgets them.
func (f *fakeSystemctl) take(filterShow bool) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if filterShow && c[0] == systemctlPath && c[1] == "show" {
			continue
		}
		out = append(out, strings.Join(c, " "))
	}
	f.calls = nil
	return out
}

func (f *fakeSystemctl) count(verb string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c[0] == systemctlPath && c[1] == verb {
			n++
		}
	}
	return n
}

func newTestSystemd(t *testing.T, poll time.Duration) (*Systemd, *fakeSystemctl) {
	t.Helper()
	f := newFakeSystemctl()
	m := newSystemd(slog.New(newRecorder()), f, poll)
	t.Cleanup(func() { _ = m.Close() })
	return m, f
}

var nginxUnit = Spec{Name: "nginx", Unit: "nginx.service", ReloadSignal: 1, Listen: []string{"0.0.0.0:80"}}

func TestSystemdCommands(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	ctx := ctxT(t)
	sc := systemctlPath

	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"Ensure", func() error { return m.Ensure(ctx, nginxUnit) }, []string{
			sc + " enable nginx.service",
			sc + " start nginx.service",
			sc + " show nginx.service --property=ActiveState,SubState,MainPID,ActiveEnterTimestamp,Result,NRestarts",
		}},
		{"Reload", func() error { return m.Reload(ctx, "nginx") }, []string{
			sc + " reload nginx.service",
			sc + " show nginx.service --property=ActiveState,SubState,MainPID,ActiveEnterTimestamp,Result,NRestarts",
		}},
		{"Restart", func() error { return m.Restart(ctx, "nginx") }, []string{
			sc + " restart nginx.service",
			sc + " show nginx.service --property=ActiveState,SubState,MainPID,ActiveEnterTimestamp,Result,NRestarts",
		}},
		{"Stop", func() error { return m.Stop(ctx, "nginx") }, []string{
			sc + " stop nginx.service",
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := f.take(false); !slices.Equal(got, s.want) {
			t.Errorf("%s ran\n  %s\nwant\n  %s", s.name, strings.Join(got, "\n  "), strings.Join(s.want, "\n  "))
		}
	}
	if st := m.Status(); len(st) != 0 {
		t.Errorf("Status after Stop: %+v", st)
	}
}

func TestSystemdReloadWithoutSignalRestarts(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	spec := Spec{Name: "mariadb", Unit: "mariadb.service"}
	if err := m.Ensure(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	f.take(true)
	if err := m.Reload(ctxT(t), "mariadb"); err != nil {
		t.Fatal(err)
	}
	if got := f.take(true); !slices.Equal(got, []string{systemctlPath + " restart mariadb.service"}) {
		t.Errorf("Reload of a daemon without reload signal ran %q", got)
	}
}

func TestSystemdStatus(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	if err := m.Ensure(ctxT(t), nginxUnit); err != nil {
		t.Fatal(err)
	}
	st := statusOf(t, m, "nginx")
	want := time.Date(2024, 11, 24, 10, 0, 0, 0, time.UTC)
	if st.State != Running || st.PID != 101 || !st.Since.Equal(want) || st.Error != "" || !slices.Equal(st.Listen, nginxUnit.Listen) {
		t.Errorf("status = %+v, want running, PID 101, since %v", st, want)
	}
	if err := m.Ensure(ctxT(t), Spec{Name: "pdns", Unit: "pdns.service", Version: func(context.Context) (string, error) { return "4.7.3", nil }}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range m.Status() {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"nginx", "pdns"}) {
		t.Errorf("Status order %v", names)
	}
	waitFor(t, 5*time.Second, "the version", func() bool { return statusOf(t, m, "pdns").Version == "4.7.3" })
	_ = f
}

func TestSystemdStartFailureCarriesStderrAndJournal(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	f.fail["start nginx.service"] = `Job for nginx.service failed because the control process exited with error code.`
	f.journal = "nginx: [emerg] unknown directive \"lisen\" in /etc/nginx/sites/a.conf:3\nnginx: configuration file /etc/nginx/nginx.conf test failed\n"
	err := m.Ensure(ctxT(t), nginxUnit)
	if err == nil || !strings.Contains(err.Error(), "start nginx") || !strings.Contains(err.Error(), "control process exited with error code") {
		t.Fatalf("Ensure = %v, want systemctl's stderr", err)
	}
	st := statusOf(t, m, "nginx")
	if st.State != Failed || !strings.Contains(st.Error, "result exit-code") || !strings.Contains(st.Error, `unknown directive "lisen"`) {
		t.Errorf("status = %+v, want failed with the journal's lines", st)
	}
	var journal []string
	for _, c := range f.take(false) {
		if strings.HasPrefix(c, journalctlPath) {
			journal = append(journal, c)
		}
	}
	want := journalctlPath + " --unit=nginx.service --lines=20 --output=cat --no-pager --quiet"
	if len(journal) != 1 || journal[0] != want {
		t.Errorf("journal read as %q, want once as %q", journal, want)
	}
}

func TestSystemdPollNoticesChanges(t *testing.T) {
	m, f := newTestSystemd(t, 20*time.Millisecond)
	if err := m.Ensure(ctxT(t), nginxUnit); err != nil {
		t.Fatal(err)
	}
	for len(m.Changes()) > 0 {
		<-m.Changes()
	}
	f.journal = "nginx: worker process exited on signal 11"
	f.setActive("nginx.service", "failed", 0)
	select {
	case <-m.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported when the unit failed")
	}
	waitFor(t, 5*time.Second, "the failure in the status", func() bool {
		st := statusOf(t, m, "nginx")
		return st.State == Failed && strings.Contains(st.Error, "signal 11") && st.PID == 0
	})
	f.setActive("nginx.service", "active", 555)
	waitFor(t, 5*time.Second, "the recovery in the status", func() bool {
		st := statusOf(t, m, "nginx")
		return st.State == Running && st.PID == 555 && st.Error == ""
	})
}

func TestSystemdReloadBurstIsCoalesced(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	if err := m.Ensure(ctxT(t), nginxUnit); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.gate, f.reloading = make(chan struct{}), make(chan struct{}, 8)
	gate, reloading := f.gate, f.reloading
	f.mu.Unlock()

	first := make(chan error, 1)
	go func() { first <- m.Reload(ctxT(t), "nginx") }()
	<-reloading
	const n = 50
	errs := make(chan error, n)
	for range n {
		go func() { errs <- m.Reload(ctxT(t), "nginx") }()
	}
	waitFor(t, 10*time.Second, "the callers to join", func() bool { return m.reloads.joined("nginx") == n })
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := f.count("reload"); got != 2 {
		t.Errorf("1 + %d overlapping Reloads ran systemctl reload %d times, want 2", n, got)
	}
}

func TestSystemdErrors(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	ctx := ctxT(t)
	for _, bad := range []Spec{
		{Unit: "nginx.service"},
		{Name: "nginx"},
		{Name: "nginx", Unit: "--now"},
		{Name: "nginx", Unit: "nginx service"},
		{Name: "nginx", Unit: "nginx;reboot"},
		{Name: "nginx", Unit: strings.Repeat("a", 256)},
	} {
		if err := m.Ensure(ctx, bad); err == nil {
			t.Errorf("Ensure(%q, %q) accepted", bad.Name, bad.Unit)
		}
	}
	if got := f.take(false); len(got) != 0 {
		t.Errorf("invalid specs ran %q", got)
	}
	for op, err := range map[string]error{
		"Reload":  m.Reload(ctx, "nope"),
		"Restart": m.Restart(ctx, "nope"),
		"Stop":    m.Stop(ctx, "nope"),
	} {
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("%s(unknown) = %v, want ErrUnknown", op, err)
		}
	}
	if err := m.Ensure(ctx, nginxUnit); err != nil {
		t.Fatal(err)
	}
	f.fail["reload nginx.service"] = "nginx.service is not active, cannot reload."
	if err := m.Reload(ctx, "nginx"); err == nil || !strings.Contains(err.Error(), "cannot reload") {
		t.Errorf("Reload = %v, want systemctl's stderr", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, nginxUnit); err == nil {
		t.Error("Ensure after Close succeeded")
	}
}

func TestParseShow(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      unitProps
		state     State
		problem   string
		bad       bool
	}{
		{
			name:  "running",
			out:   "MainPID=1234\nActiveState=active\nSubState=running\nActiveEnterTimestamp=Sun 2024-11-24 10:00:00 UTC\nResult=success\n",
			want:  unitProps{ActiveState: "active", SubState: "running", Result: "success", MainPID: 1234, ActiveEnter: time.Date(2024, 11, 24, 10, 0, 0, 0, time.UTC)},
			state: Running,
		},
		{
			name:    "failed",
			out:     "MainPID=0\nActiveState=failed\nSubState=failed\nActiveEnterTimestamp=Sun 2024-11-24 10:00:00 UTC\nResult=exit-code\n",
			want:    unitProps{ActiveState: "failed", SubState: "failed", Result: "exit-code", ActiveEnter: time.Date(2024, 11, 24, 10, 0, 0, 0, time.UTC)},
			state:   Failed,
			problem: "unit failed (result exit-code, failed)",
		},
		{
			name:    "never started",
			out:     "MainPID=0\nActiveState=inactive\nSubState=dead\nActiveEnterTimestamp=\nResult=success\n",
			want:    unitProps{ActiveState: "inactive", SubState: "dead", Result: "success"},
			state:   Stopped,
			problem: "unit inactive (dead)",
		},
		{
			name:    "restarting after a crash",
			out:     "ActiveState=activating\nSubState=auto-restart\nMainPID=0\nResult=signal\nActiveEnterTimestamp=n/a",
			want:    unitProps{ActiveState: "activating", SubState: "auto-restart", Result: "signal"},
			state:   Stopped,
			problem: "unit activating (auto-restart)",
		},
		{
			name:  "restarted by systemd",
			out:   "ActiveState=active\nSubState=running\nMainPID=90\nNRestarts=4\nActiveEnterTimestamp=@1732442400\n",
			want:  unitProps{ActiveState: "active", SubState: "running", MainPID: 90, NRestarts: 4, ActiveEnter: time.Unix(1732442400, 0).UTC()},
			state: Running,
		},
		{
			name:  "reloading, unix timestamp",
			out:   "ActiveState=reloading\nSubState=reload\nMainPID=77\nActiveEnterTimestamp=@1732442400\n",
			want:  unitProps{ActiveState: "reloading", SubState: "reload", MainPID: 77, ActiveEnter: time.Unix(1732442400, 0).UTC()},
			state: Running,
		},
		{name: "empty", out: "", bad: true},
		{name: "no active state", out: "MainPID=1\nSubState=running\n", bad: true},
		{name: "bad pid", out: "ActiveState=active\nMainPID=x\n", bad: true},
		{name: "negative pid", out: "ActiveState=active\nMainPID=-1\n", bad: true},
		{name: "bad restarts", out: "ActiveState=active\nNRestarts=[not set]\n", bad: true},
		{name: "negative restarts", out: "ActiveState=active\nNRestarts=-2\n", bad: true},
		{name: "bad timestamp", out: "ActiveState=active\nActiveEnterTimestamp=yesterday\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseShow([]byte(tc.out))
			if tc.bad {
				if err == nil {
					t.Fatalf("parseShow accepted %q: %+v", tc.out, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.state() != tc.state || got.problem() != tc.problem {
				t.Errorf("state %s problem %q, want %s %q", got.state(), got.problem(), tc.state, tc.problem)
			}
		})
	}
}

func TestSystemdAvailable(t *testing.T) {
	_, err := os.Stat("/run/systemd/system")
	if SystemdAvailable() != (err == nil) {
		t.Errorf("SystemdAvailable() = %v with /run/systemd/system: %v", SystemdAvailable(), err)
	}
}

// TestExecRunner runs a real command through the production runner: the
// error of a failing one carries its stderr.
func TestExecRunner(t *testing.T) {
	out, err := execRunner{}.run(ctxT(t), "/usr/bin/env")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, commandEnv) {
		t.Errorf("command environment %q, want %q", got, commandEnv)
	}
	_, err = execRunner{}.run(ctxT(t), "/usr/bin/ls", "/nonexistent-npanel-test")
	if err == nil || !strings.Contains(err.Error(), "/usr/bin/ls /nonexistent-npanel-test: exit status 2: ") || !strings.Contains(err.Error(), "No such file or directory") {
		t.Errorf("error %v, want the command, its status and its stderr", err)
	}
}

func FuzzParseShow(f *testing.F) {
	f.Add([]byte("MainPID=1234\nActiveState=active\nSubState=running\nActiveEnterTimestamp=Sun 2024-11-24 10:00:00 UTC\nResult=success\n"))
	f.Add([]byte("ActiveState=failed\nMainPID=0\nActiveEnterTimestamp=@1732442400\n"))
	f.Add([]byte("ActiveEnterTimestamp=n/a\nActiveState=inactive"))
	f.Add([]byte("ActiveState=active\nNRestarts=12\nMainPID=7\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		p, err := parseShow(out)
		if err != nil {
			return
		}
		if p.ActiveState == "" || p.MainPID < 0 || p.NRestarts < 0 {
			t.Errorf("accepted %q as %+v", out, p)
		}
		if st := p.state(); st != Running && st != Stopped && st != Failed {
			t.Errorf("state %q", st)
		}
		if (p.state() == Running) != (p.problem() == "") {
			t.Errorf("state %s with problem %q", p.state(), p.problem())
		}
	})
}

func FuzzCheckUnitName(f *testing.F) {
	for _, s := range []string{"nginx.service", "php8.2-fpm.service", "postgresql@15-main.service", "-x", "a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if checkUnitName(name) != nil {
			return
		}
		if name == "" || name[0] == '-' || strings.ContainsAny(name, " \t\n/;'\"$`=") {
			t.Errorf("accepted %q", name)
		}
	})
}

// A daemon whose configuration Setup changed re-reads it on Ensure, also
// when it already runs (pools closed at the agent's start, issue 23).
func TestSystemdEnsureReconfigured(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	f.setActive("php8.2-php-fpm.service", "active", 42)
	spec := Spec{Name: "php-fpm8.2", Unit: "php8.2-php-fpm.service", Reconfigured: true}
	if err := m.Ensure(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	want := []string{systemctlPath + " enable php8.2-php-fpm.service", systemctlPath + " reload-or-restart php8.2-php-fpm.service"}
	if got := f.take(true); !slices.Equal(got, want) {
		t.Errorf("Ensure of a reconfigured daemon ran %q, want %q", got, want)
	}
}

// A daemon that takes a change only when it starts (clamd joining Exim's
// group) is restarted, not reloaded, also when it already runs.
func TestSystemdEnsureRestart(t *testing.T) {
	m, f := newTestSystemd(t, time.Hour)
	f.setActive("clamav-daemon.service", "active", 42)
	spec := Spec{Name: "clamd", Unit: "clamav-daemon.service", Reconfigured: true, Restart: true}
	if err := m.Ensure(ctxT(t), spec); err != nil {
		t.Fatal(err)
	}
	want := []string{systemctlPath + " enable clamav-daemon.service", systemctlPath + " restart clamav-daemon.service"}
	if got := f.take(true); !slices.Equal(got, want) {
		t.Errorf("Ensure of a daemon to restart ran %q, want %q", got, want)
	}
}

// On systemd nodes the restart count is the unit's NRestarts, read by the
// poll that reads its state (no systemctl call of its own): restarts
// systemd made after crashes show in Status, and so in
// npanel_service_restarts_total.
func TestSystemdRestartCount(t *testing.T) {
	m, f := newTestSystemd(t, 20*time.Millisecond)
	if err := m.Ensure(ctxT(t), nginxUnit); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, m, "nginx"); st.Restarts != 0 {
		t.Fatalf("restarts after start: %d", st.Restarts)
	}
	for range 3 {
		f.autoRestart("nginx.service")
	}
	waitFor(t, 5*time.Second, "three restarts in the status", func() bool {
		st := statusOf(t, m, "nginx")
		return st.Restarts == 3 && st.State == Running && st.Proto().GetRestarts() == 3
	})
	for _, c := range f.take(false) {
		if strings.Contains(c, "NRestarts") && !strings.Contains(c, " show nginx.service --property=") {
			t.Errorf("NRestarts read by a call of its own: %s", c)
		}
	}
}
