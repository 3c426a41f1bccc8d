package services

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests supervise copies of the test binary itself: with helperEnv set,
// TestMain runs helperMain instead of the tests. The helper is a tiny
// daemon that serves its PID and the signals it received on a TCP address,
// so the tests see what a real daemon would see.
const (
	helperEnv     = "NPANEL_SERVICES_HELPER"
	helperAddrEnv = "NPANEL_SERVICES_HELPER_ADDR"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		helperMain(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperMain modes:
//
//	daemon       serve "pid=P hup=N usr1=N child=0" on the address
//	ignore-term  the same, ignoring SIGTERM
//	spawn        the same, with a /usr/bin/sleep child in its process group
//	fail         print an error to stderr and exit 1
//	agent        run a Supervisor with one sleep daemon, print its PID, block
func helperMain(mode string) {
	switch mode {
	case "fail":
		fmt.Println("helper: reading config")
		fmt.Fprintln(os.Stderr, "helper: [emerg] broken config at line 3")
		os.Exit(1)
	case "agent":
		helperAgent()
		return
	}
	var mu sync.Mutex
	var hup, usr1 int
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	}
	go func() {
		for s := range sigs {
			mu.Lock()
			if s == syscall.SIGHUP {
				hup++
			} else {
				usr1++
			}
			mu.Unlock()
		}
	}()
	child := 0
	if mode == "spawn" {
		cmd := exec.Command("/usr/bin/sleep", "1000")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(2)
		}
		child = cmd.Process.Pid
	}
	l, err := net.Listen("tcp", os.Getenv(helperAddrEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(2)
		}
		mu.Lock()
		fmt.Fprintf(c, "pid=%d hup=%d usr1=%d child=%d\n", os.Getpid(), hup, usr1, child)
		mu.Unlock()
		c.Close()
	}
}

// helperAgent stands in for an agent that crashes: the test kills it and
// checks that its daemon dies with it.
func helperAgent() {
	s := NewSupervisor(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.Ensure(context.Background(), Spec{Name: "sleep", Binary: "/usr/bin/sleep", Args: []string{"1000"}}); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	fmt.Println(s.Status()[0].PID)
	select {}
}

// helperReport is what a helper daemon serves.
type helperReport struct {
	PID, HUP, USR1, Child int
}

func queryHelper(ctx context.Context, addr string) (helperReport, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return helperReport{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return helperReport{}, err
	}
	var r helperReport
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return helperReport{}, fmt.Errorf("helper said %q", line)
		}
		switch k {
		case "pid":
			r.PID = n
		case "hup":
			r.HUP = n
		case "usr1":
			r.USR1 = n
		case "child":
			r.Child = n
		}
	}
	return r, nil
}

// helperSpec is a Spec for a helper daemon in mode, serving on a fresh
// loopback port, ready once it answers.
func helperSpec(t *testing.T, name, mode string) (Spec, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	return Spec{
		Name:   name,
		Binary: exe,
		Env:    []string{helperEnv + "=" + mode, helperAddrEnv + "=" + addr},
		Ready: func(ctx context.Context) error {
			_, err := queryHelper(ctx, addr)
			return err
		},
		ReadyTimeout: 20 * time.Second, // the race-instrumented binary starts slowly on a busy machine
		Listen:       []string{addr},
	}, addr
}

func mustQuery(t *testing.T, addr string) helperReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := queryHelper(ctx, addr)
	if err != nil {
		t.Fatalf("query helper: %v", err)
	}
	return r
}

// freeAddr returns a loopback address whose port was free a moment ago.
// (internal/testenv has the same, but importing it here would be a cycle.)
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processGone reports whether pid no longer exists. An orphan (a daemon's
// worker) is reaped by PID 1, not by us, so it lingers as a zombie until
// PID 1 gets to it (about a second on the test machine), hence waitGone's
// polling.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("process %d to be gone (kill 0 → ESRCH)", pid), func() bool { return processGone(pid) })
}

// killOnCleanup makes sure a test never leaves pid behind, even when it
// fails before the Supervisor's Close. It kills only the process it saw:
// same PID and same start time, never a newcomer that reused the PID.
func killOnCleanup(t *testing.T, pid int) {
	if pid <= 0 {
		return
	}
	started := procStart(pid)
	if started == "" {
		return
	}
	t.Cleanup(func() {
		if procStart(pid) == started {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// procStart returns the start time of pid (field 22 of /proc/PID/stat),
// or "" when there is no such process.
func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // fields from 3 on: index 19 is field 22
}

// recorder is a slog.Handler that counts messages, so tests can count the
// signals the Supervisor sent (the kernel merges pending signals of one
// kind, so the daemon's own count could hide an extra one).
type recorder struct {
	mu     sync.Mutex
	counts map[string]int
	next   slog.Handler
}

func newRecorder() *recorder {
	var next slog.Handler = slog.NewTextHandler(io.Discard, nil)
	if lvl := os.Getenv("NPANEL_TEST_LOG"); lvl != "" {
		var l slog.Level
		_ = l.UnmarshalText([]byte(lvl))
		next = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})
	}
	return &recorder{counts: make(map[string]int), next: next}
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.counts[rec.Message]++
	r.mu.Unlock()
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[msg]
}

// newTestSupervisor returns a Supervisor closed at cleanup, and the
// recorder of its log.
func newTestSupervisor(t *testing.T) (*Supervisor, *recorder) {
	t.Helper()
	rec := newRecorder()
	s := NewSupervisor(slog.New(rec))
	t.Cleanup(func() { _ = s.Close() })
	return s, rec
}

func statusOf(t *testing.T, m Manager, name string) Status {
	t.Helper()
	for _, st := range m.Status() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no status for %q", name)
	return Status{}
}
