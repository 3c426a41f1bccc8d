package services

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestSupervisorStartReady(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	r := mustQuery(t, addr) // Ensure returned, so it must answer now
	killOnCleanup(t, r.PID)
	st := statusOf(t, s, "helper")
	if st.State != Running || st.PID != r.PID || st.Error != "" || st.Since.IsZero() {
		t.Errorf("status = %+v, want running with PID %d", st, r.PID)
	}
	if len(st.Listen) != 1 || st.Listen[0] != addr {
		t.Errorf("Listen = %v, want [%s]", st.Listen, addr)
	}

	// A second Ensure of a running daemon changes nothing.
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if got := statusOf(t, s, "helper").PID; got != r.PID {
		t.Errorf("second Ensure changed PID %d → %d", r.PID, got)
	}
}

func TestSupervisorRestartsAfterUnexpectedExit(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	old := mustQuery(t, addr).PID
	killOnCleanup(t, old)

	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "restart after the crash", func() bool {
		st := statusOf(t, s, "helper")
		return st.State == Running && st.PID != 0 && st.PID != old
	})
	st := statusOf(t, s, "helper")
	killOnCleanup(t, st.PID)
	if st.Restarts != 1 {
		t.Errorf("Restarts = %d, want 1", st.Restarts)
	}
	if r := mustQuery(t, addr); r.PID != st.PID {
		t.Errorf("serving PID %d, status says %d", r.PID, st.PID)
	}
	waitGone(t, old)
}

func TestSupervisorReloadSendsTheSignal(t *testing.T) {
	s, rec := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	spec.ReloadSignal = syscall.SIGUSR1
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	pid := mustQuery(t, addr).PID
	killOnCleanup(t, pid)

	if err := s.Reload(ctxT(t), "helper"); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitFor(t, 5*time.Second, "the signal to arrive", func() bool { return mustQuery(t, addr).USR1 > 0 })
	r := mustQuery(t, addr)
	if r.USR1 != 1 || r.HUP != 0 || r.PID != pid {
		t.Errorf("after one Reload: %+v, want usr1=1 hup=0 pid=%d", r, pid)
	}
	if n := rec.count("daemon reloaded"); n != 1 {
		t.Errorf("%d reloads logged, want 1", n)
	}
}

func TestSupervisorReloadBurstIsCoalesced(t *testing.T) {
	s, rec := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	spec.ReloadSignal = syscall.SIGHUP
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	pid := mustQuery(t, addr).PID
	killOnCleanup(t, pid)

	// Hold the daemon's operation lock, as a slow Restart would, so that
	// the burst is entirely in flight before the first signal goes out:
	// then the count does not depend on how fast goroutines start.
	p, err := s.lookup("helper")
	if err != nil {
		t.Fatal(err)
	}
	if err := acquire(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	const callers = 50
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range callers {
		wg.Go(func() {
			if err := s.Reload(ctxT(t), "helper"); err != nil {
				t.Errorf("Reload: %v", err)
				failed.Add(1)
			}
		})
	}
	waitFor(t, 10*time.Second, "all Reloads to be waiting", func() bool { return s.reloads.waiting("helper") == callers })
	release(p)
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	// The first caller's reload was already running (blocked on the lock);
	// everyone else shares the next.
	sent := rec.count("daemon reloaded")
	if sent < 1 || sent > 2 {
		t.Errorf("%d concurrent Reloads sent %d signals, want 1 or 2", callers, sent)
	}
	waitFor(t, 5*time.Second, "the signals to arrive", func() bool { return mustQuery(t, addr).HUP > 0 })
	if r := mustQuery(t, addr); r.HUP > 2 || r.PID != pid {
		t.Errorf("daemon saw %+v, want ≤ 2 HUPs and PID %d", r, pid)
	}
	t.Logf("%d concurrent Reloads → %d signals", callers, sent)
}

func TestSupervisorReloadWithoutSignalRestarts(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	old := mustQuery(t, addr).PID
	killOnCleanup(t, old)
	if err := s.Reload(ctxT(t), "helper"); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	now := mustQuery(t, addr).PID
	killOnCleanup(t, now)
	if now == old {
		t.Errorf("Reload without ReloadSignal kept PID %d, want a restart", old)
	}
	if st := statusOf(t, s, "helper"); st.Restarts != 0 || st.State != Running {
		t.Errorf("status %+v: a requested restart is not a crash", st)
	}
	waitGone(t, old)
}

func TestSupervisorRestartGivesNewPID(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	old := mustQuery(t, addr).PID
	killOnCleanup(t, old)
	before := statusOf(t, s, "helper").Since
	if err := s.Restart(ctxT(t), "helper"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	st := statusOf(t, s, "helper")
	killOnCleanup(t, st.PID)
	if st.PID == old || st.State != Running || st.Restarts != 0 {
		t.Errorf("after Restart: %+v (old PID %d)", st, old)
	}
	if !st.Since.After(before) {
		t.Errorf("Since %v not after the old process's %v", st.Since, before)
	}
	if r := mustQuery(t, addr); r.PID != st.PID {
		t.Errorf("serving PID %d, status says %d", r.PID, st.PID)
	}
	if !processGone(old) {
		t.Errorf("old process %d still exists after Restart returned", old)
	}
}

func TestSupervisorStopLeavesNoProcess(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "spawn")
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	r := mustQuery(t, addr)
	killOnCleanup(t, r.PID)
	killOnCleanup(t, r.Child)
	if r.Child == 0 || processGone(r.Child) {
		t.Fatalf("helper has no child: %+v", r)
	}
	if err := s.Stop(ctxT(t), "helper"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !processGone(r.PID) {
		t.Errorf("daemon %d still exists after Stop returned", r.PID)
	}
	waitGone(t, r.Child) // an orphan: PID 1 reaps it
	if st := s.Status(); len(st) != 0 {
		t.Errorf("Status after Stop = %+v, want nothing", st)
	}
	if err := s.Stop(ctxT(t), "helper"); !errors.Is(err, ErrUnknown) {
		t.Errorf("second Stop: %v, want ErrUnknown", err)
	}
}

func TestSupervisorStopKillsAfterTimeout(t *testing.T) {
	s, rec := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "ignore-term")
	spec.StopTimeout = 300 * time.Millisecond
	if err := s.Ensure(ctxT(t), spec); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	pid := mustQuery(t, addr).PID
	killOnCleanup(t, pid)
	if err := s.Stop(ctxT(t), "helper"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !processGone(pid) {
		t.Errorf("daemon %d ignoring SIGTERM still exists after Stop", pid)
	}
	if rec.count("daemon did not stop in time, killing it") != 1 {
		t.Errorf("no SIGKILL after the stop timeout")
	}
}

func TestSupervisorCloseLeavesNoProcess(t *testing.T) {
	s, _ := newTestSupervisor(t)
	var pids []int
	for _, name := range []string{"a", "b", "c"} {
		spec, addr := helperSpec(t, name, "spawn")
		if err := s.Ensure(ctxT(t), spec); err != nil {
			t.Fatalf("Ensure %s: %v", name, err)
		}
		r := mustQuery(t, addr)
		killOnCleanup(t, r.PID)
		killOnCleanup(t, r.Child)
		pids = append(pids, r.PID, r.Child)
	}
	// One that keeps failing, so a restart is pending at Close.
	failing, _ := helperSpec(t, "failing", "fail")
	_ = s.Ensure(ctxT(t), failing)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
	if err := s.Ensure(ctxT(t), failing); err == nil {
		t.Error("Ensure after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSupervisorStartFailureReportsOutput(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, _ := helperSpec(t, "broken", "fail")
	err := s.Ensure(ctxT(t), spec)
	if err == nil {
		t.Fatal("Ensure of a daemon that exits at once succeeded")
	}
	for _, want := range []string{"start broken", "exited before it was ready", "exit status 1", "[emerg] broken config at line 3", "reading config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	st := statusOf(t, s, "broken")
	if st.State != Failed || !strings.Contains(st.Error, "broken config at line 3") || st.PID != 0 {
		t.Errorf("status = %+v, want failed with the daemon's message", st)
	}
	// It keeps trying, with backoff, while it is failed.
	waitFor(t, 10*time.Second, "automatic restarts", func() bool { return statusOf(t, s, "broken").Restarts >= 2 })
	if st := statusOf(t, s, "broken"); st.State != Failed {
		t.Errorf("state %s between attempts, want failed", st.State)
	}
	if err := s.Reload(ctxT(t), "broken"); err != nil {
		// ReloadSignal 0: Reload restarts, which fails again.
		if !strings.Contains(err.Error(), "broken config") {
			t.Errorf("Reload error %q lacks the daemon's message", err)
		}
	} else {
		t.Error("Reload of a broken daemon succeeded")
	}
}

func TestSupervisorMissingBinary(t *testing.T) {
	s, _ := newTestSupervisor(t)
	err := s.Ensure(ctxT(t), Spec{Name: "ghost", Binary: "/nonexistent/ghostd"})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Ensure = %v, want a no-such-file error", err)
	}
	if st := statusOf(t, s, "ghost"); st.State != Failed || st.Error == "" {
		t.Errorf("status = %+v, want failed", st)
	}
}

func TestSupervisorReadyTimeout(t *testing.T) {
	s, _ := newTestSupervisor(t)
	spec, addr := helperSpec(t, "helper", "daemon")
	spec.ReadyTimeout = 300 * time.Millisecond
	spec.Ready = func(context.Context) error { return errors.New("health check says no") }
	err := s.Ensure(ctxT(t), spec)
	if err == nil || !strings.Contains(err.Error(), "not ready after 300ms") || !strings.Contains(err.Error(), "health check says no") {
		t.Fatalf("Ensure = %v, want a readiness timeout with the last check's error", err)
	}
	// The process that never became ready was ended.
	waitFor(t, 10*time.Second, "the unready daemon to be stopped", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := queryHelper(ctx, addr)
		return err != nil || statusOf(t, s, "helper").Restarts > 0
	})
	if st := statusOf(t, s, "helper"); st.State != Failed || !strings.Contains(st.Error, "not ready") {
		t.Errorf("status = %+v, want failed: not ready", st)
	}
}

func TestSupervisorStatusSortedAndUnknown(t *testing.T) {
	s, _ := newTestSupervisor(t)
	var calls atomic.Int32
	for _, name := range []string{"zeta", "alpha", "mid"} {
		spec := Spec{Name: name, Binary: "/usr/bin/sleep", Args: []string{"1000"}}
		if name == "alpha" {
			spec.Version = func(context.Context) (string, error) {
				calls.Add(1)
				return "1.2.3", nil
			}
		}
		if err := s.Ensure(ctxT(t), spec); err != nil {
			t.Fatalf("Ensure %s: %v", name, err)
		}
		killOnCleanup(t, statusOf(t, s, name).PID)
	}
	var names []string
	for _, st := range s.Status() {
		names = append(names, st.Name)
		if st.State != Running || st.PID == 0 {
			t.Errorf("%s: %+v, want running", st.Name, st)
		}
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Errorf("Status order %v, want alpha,mid,zeta", names)
	}
	waitFor(t, 5*time.Second, "the version", func() bool { return statusOf(t, s, "alpha").Version == "1.2.3" })
	for range 5 {
		s.Status()
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Version called %d times, want once", n)
	}

	ctx := ctxT(t)
	for op, err := range map[string]error{
		"Reload":  s.Reload(ctx, "nope"),
		"Restart": s.Restart(ctx, "nope"),
		"Stop":    s.Stop(ctx, "nope"),
	} {
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("%s(unknown) = %v, want ErrUnknown", op, err)
		}
	}
	for _, bad := range []Spec{{}, {Name: "x"}, {Name: "x", Binary: "sleep"}} {
		if err := s.Ensure(ctx, bad); err == nil {
			t.Errorf("Ensure(%+v) accepted", bad)
		}
	}
}

func TestSupervisorChanges(t *testing.T) {
	s, _ := newTestSupervisor(t)
	// Drain what is there, then expect a value for a start.
	select {
	case <-s.Changes():
	default:
	}
	if err := s.Ensure(ctxT(t), Spec{Name: "sleep", Binary: "/usr/bin/sleep", Args: []string{"1000"}}); err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, statusOf(t, s, "sleep").PID)
	select {
	case <-s.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported for a start")
	}
	pid := statusOf(t, s, "sleep").PID
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-s.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported for a crash")
	}
}

func TestSupervisorMinimalEnv(t *testing.T) {
	s, _ := newTestSupervisor(t)
	t.Setenv("NPANEL_AGENT_SECRET", "must-not-leak")
	// env prints its environment and exits: the "crash" carries the output.
	if err := s.Ensure(ctxT(t), Spec{Name: "env", Binary: "/usr/bin/env"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "env's output in the status", func() bool {
		return strings.Contains(statusOf(t, s, "env").Error, "PATH=")
	})
	msg := statusOf(t, s, "env").Error
	if strings.Contains(msg, "NPANEL_AGENT_SECRET") || strings.Contains(msg, "HOME=") {
		t.Errorf("daemon saw the agent's environment: %s", msg)
	}
}

// TestSupervisorAgentCrashKillsDaemons kills an agent (a helper process
// running a Supervisor) with SIGKILL: its daemon must not survive it.
func TestSupervisorAgentCrashKillsDaemons(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(exe)
	agent.Env = []string{helperEnv + "=agent"}
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	killOnCleanup(t, agent.Process.Pid)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read daemon PID from the agent: %v", err)
	}
	daemon, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || daemon <= 0 {
		t.Fatalf("agent said %q", line)
	}
	killOnCleanup(t, daemon)
	if processGone(daemon) {
		t.Fatalf("daemon %d is not running", daemon)
	}
	_ = agent.Process.Kill()
	_ = agent.Wait()
	waitGone(t, daemon)
}

// BenchmarkSupervisorStartStop measures the Supervisor's own cost of a
// daemon's life cycle: fork/exec, the reaper and readiness goroutines,
// SIGTERM and reaping, with /usr/bin/sleep as the daemon.
func BenchmarkSupervisorStartStop(b *testing.B) {
	s := NewSupervisor(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer s.Close()
	ctx := context.Background()
	spec := Spec{Name: "sleep", Binary: "/usr/bin/sleep", Args: []string{"1000"}}
	for b.Loop() {
		if err := s.Ensure(ctx, spec); err != nil {
			b.Fatal(err)
		}
		if err := s.Stop(ctx, "sleep"); err != nil {
			b.Fatal(err)
		}
	}
}
