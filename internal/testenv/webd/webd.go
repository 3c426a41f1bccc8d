// Package webd runs web daemons (nginx, PHP-FPM) for tests without systemd
// and without the agent's supervisor: Manager is a services.Manager test
// double that starts each daemon by hand as a child of the test, in the
// foreground, reloads it by signalling its PID and stops it by PID in
// t.Cleanup, also when the test fails.
package webd

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/services"
)

// Manager is a services.Manager for tests.
type Manager struct {
	t       testing.TB
	mu      sync.Mutex
	procs   map[string]*proc
	changes chan struct{}
}

var _ services.Manager = (*Manager)(nil)

type proc struct {
	spec   services.Spec
	cmd    *exec.Cmd
	out    *tailBuffer
	exited chan struct{}
	since  time.Time

	// Reload coalescing: a caller needs a reload that started after its
	// call; one in flight when it arrives does not count.
	rmu      sync.Mutex
	cond     *sync.Cond
	running  bool
	started  int
	finished int
	lastErr  error
	reloads  int
}

// NewManager returns a manager whose daemons are stopped at cleanup.
func NewManager(t testing.TB) *Manager {
	m := &Manager{t: t, procs: make(map[string]*proc), changes: make(chan struct{}, 1)}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("webd: stop daemons: %v", err)
		}
	})
	return m
}

// Ensure starts spec's daemon unless it runs, and waits until it is ready.
func (m *Manager) Ensure(ctx context.Context, spec services.Spec) error {
	m.mu.Lock()
	if p, ok := m.procs[spec.Name]; ok && !p.done() {
		p.spec = spec
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	if spec.Binary == "" {
		return fmt.Errorf("webd: %s: no binary (a systemd-only spec)", spec.Name)
	}
	cmd := exec.Command(spec.Binary, spec.Args...)
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: a ^C in the terminal reaches the test, which then
	// stops the daemon itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("webd: start %s: %w", spec.Name, err)
	}
	p := &proc{spec: spec, cmd: cmd, out: out, exited: make(chan struct{}), since: time.Now()}
	p.cond = sync.NewCond(&p.rmu)
	go func() {
		_ = cmd.Wait()
		close(p.exited)
		m.notify()
	}()
	m.mu.Lock()
	m.procs[spec.Name] = p
	m.mu.Unlock()
	m.notify()

	timeout := spec.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for spec.Ready != nil {
		err := spec.Ready(ctx)
		if err == nil {
			break
		}
		if p.done() {
			return fmt.Errorf("webd: %s exited during start: %s", spec.Name, strings.TrimSpace(out.String()))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("webd: %s not ready after %s: %v; output: %s", spec.Name, timeout, err, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (p *proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (m *Manager) get(name string) (*proc, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.procs[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", services.ErrUnknown, name)
	}
	return p, nil
}

// Reload signals the daemon with its ReloadSignal and waits as the spec's
// AwaitReload says. Overlapping calls are coalesced as services.Manager
// promises.
func (m *Manager) Reload(ctx context.Context, name string) error {
	p, err := m.get(name)
	if err != nil {
		return err
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	target := p.started + 1
	for p.finished < target {
		if p.running {
			p.cond.Wait()
			continue
		}
		p.running = true
		p.started++
		gen := p.started
		p.rmu.Unlock()
		err := p.reload(ctx)
		p.rmu.Lock()
		p.running = false
		p.finished = gen
		p.lastErr = err
		p.reloads++
		p.cond.Broadcast()
	}
	return p.lastErr
}

func (p *proc) reload(ctx context.Context) error {
	if p.done() {
		return fmt.Errorf("webd: %s is not running", p.spec.Name)
	}
	sig := p.spec.ReloadSignal
	if sig == 0 {
		return fmt.Errorf("webd: %s has no reload signal", p.spec.Name)
	}
	pid := p.cmd.Process.Pid
	// The same wait the agent's supervisor does (nginx: new workers run
	// the new configuration), so that a test can send a request right after.
	var await func(context.Context) error
	if p.spec.AwaitReload != nil {
		await = p.spec.AwaitReload(pid)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("webd: signal %s: %w", p.spec.Name, err)
	}
	if await == nil {
		return nil
	}
	if err := await(ctx); err != nil {
		return fmt.Errorf("webd: %s: %w: %s", p.spec.Name, err, p.out.String())
	}
	return nil
}

// Reloads counts the reloads done for name.
func (m *Manager) Reloads(name string) int {
	p, err := m.get(name)
	if err != nil {
		return 0
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	return p.reloads
}

// PID is the daemon's process ID, 0 when it is not running.
func (m *Manager) PID(name string) int {
	p, err := m.get(name)
	if err != nil || p.done() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Output is what the daemon wrote to stdout and stderr (the last 16 KiB).
func (m *Manager) Output(name string) string {
	p, err := m.get(name)
	if err != nil {
		return ""
	}
	return p.out.String()
}

// Restart stops and starts the daemon.
func (m *Manager) Restart(ctx context.Context, name string) error {
	p, err := m.get(name)
	if err != nil {
		return err
	}
	spec := p.spec
	if err := m.Stop(ctx, name); err != nil {
		return err
	}
	return m.Ensure(ctx, spec)
}

// Stop stops the daemon by PID and forgets it.
func (m *Manager) Stop(ctx context.Context, name string) error {
	p, err := m.get(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.procs, name)
	m.mu.Unlock()
	defer m.notify()
	return p.stop()
}

func (p *proc) stop() error {
	if p.done() {
		return nil
	}
	sig := p.spec.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	timeout := p.spec.StopTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("webd: %s ignored %s for %s and was killed", p.spec.Name, sig, timeout)
}

// Status reports the daemons, sorted by name.
func (m *Manager) Status() []services.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []services.Status
	for name, p := range m.procs {
		st := services.Status{Name: name, State: services.Running, Listen: p.spec.Listen, Since: p.since,
			LogFiles: append(slices.DeleteFunc([]string{p.spec.LogFile}, func(s string) bool { return s == "" }), p.spec.LogFiles...)}
		if p.done() {
			st.State = services.Failed
			st.Error = p.out.String()
		} else {
			st.PID = p.cmd.Process.Pid
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b services.Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Changes implements services.Manager.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

func (m *Manager) notify() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// Close stops every daemon.
func (m *Manager) Close() error {
	m.mu.Lock()
	procs := m.procs
	m.procs = make(map[string]*proc)
	m.mu.Unlock()
	var errs []error
	for _, p := range procs {
		errs = append(errs, p.stop())
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
