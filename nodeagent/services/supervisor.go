package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Restart backoff after unexpected exits: 100 ms doubling up to 10 s, back
// to 100 ms once a daemon has stayed up for backoffReset. A daemon that
// cannot start (broken config, port taken) costs one attempt every 10 s,
// not a busy loop; one that crashes rarely comes back at once.
const (
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 10 * time.Second
	backoffReset = 30 * time.Second
)

// defaultEnv is a daemon's environment when Spec.Env is nil: enough to
// find helper binaries, nothing of the agent's own (no credentials, no
// locale surprises).
var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

var errClosed = errors.New("service manager is closed")

// Supervisor is the Manager for nodes without systemd: the daemons run in
// the foreground as children of the agent. It restarts a daemon that dies
// with exponential backoff, reloads by signal and stops every daemon, and
// everything they started, on Close.
//
// Each daemon has a one-slot lock (proc.op) that orders the operations
// that start or end its process (Ensure, Restart, Reload, Stop and the
// automatic restarts); state fields are under Supervisor.mu, which is never
// held while waiting.
type Supervisor struct {
	log     *slog.Logger
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	changes chan struct{}
	reloads *coalescer[string]
	wg      sync.WaitGroup // goroutines per child, retry timers, version calls

	mu     sync.Mutex
	procs  map[string]*proc
	closed bool
}

// proc is one managed daemon.
type proc struct {
	ctx    context.Context // cancelled when the daemon is stopped for good
	cancel context.CancelFunc
	op     chan struct{} // holds a token while an operation runs

	// Guarded by Supervisor.mu.
	spec         Spec
	removed      bool
	cur          *instance // the live child process, nil when there is none
	state        State
	since        time.Time
	errMsg       string
	restarts     int
	failures     int         // consecutive failures, for the backoff
	retry        *time.Timer // pending automatic restart
	retryGen     int         // tells a superseded timer's callback apart
	version      string
	versionAsked bool
}

// instance is one run of a daemon's process.
type instance struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	tail    *tailBuffer
	logFile *os.File // nil without Spec.LogFile

	exited   chan struct{} // closed once the process is reaped
	exitErr  error         // cmd.Wait's result, set before exited closes
	ready    chan struct{} // closed once readiness is decided
	readyErr error         // set before ready closes

	// Guarded by Supervisor.mu.
	stopping    bool      // we are ending it, so its exit is expected
	retryOnExit bool      // ended because it never became ready: restart it
	readyAt     time.Time // zero until Ready passed
}

var _ Manager = (*Supervisor)(nil)

// NewSupervisor returns a Supervisor with no daemons. Close it to stop the
// daemons it started.
func NewSupervisor(log *slog.Logger) *Supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Supervisor{
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		changes: make(chan struct{}, 1),
		procs:   make(map[string]*proc),
	}
	s.reloads = newCoalescer(ctx, reloadSpacing, s.reload)
	return s
}

func checkSupervisedSpec(spec Spec) error {
	switch {
	case spec.Name == "":
		return errors.New("service spec without a name")
	case spec.Binary == "":
		return fmt.Errorf("service %q: no binary to run", spec.Name)
	case !filepath.IsAbs(spec.Binary):
		return fmt.Errorf("service %q: binary %q is not an absolute path", spec.Name, spec.Binary)
	}
	return nil
}

// Ensure registers spec and starts the daemon unless it runs already. A
// running daemon keeps running under its old arguments: Restart applies
// new ones. When the start fails, Ensure returns the daemon's own output
// in the error and the Supervisor keeps retrying with backoff.
func (s *Supervisor) Ensure(ctx context.Context, spec Spec) error {
	if err := checkSupervisedSpec(spec); err != nil {
		return err
	}
	spec.Args = slices.Clone(spec.Args)
	spec.Env = slices.Clone(spec.Env)
	spec.Listen = slices.Clone(spec.Listen)
	for {
		p, err := s.register(spec)
		if err != nil {
			return err
		}
		if err := acquire(ctx, p); err != nil {
			return err
		}
		s.mu.Lock()
		removed, cur := p.removed, p.cur
		s.mu.Unlock()
		if removed {
			// Stopped between register and acquire: register anew.
			release(p)
			continue
		}
		if cur != nil && s.isStopping(cur) {
			// Being killed for not getting ready: let it go, start afresh.
			<-cur.exited
			cur = nil
		}
		if cur == nil {
			if cur, err = s.start(p); err != nil {
				release(p)
				return err
			}
		}
		err = waitReady(ctx, cur)
		release(p)
		if err != nil {
			return fmt.Errorf("start %s: %w", spec.Name, err)
		}
		return nil
	}
}

func (s *Supervisor) isStopping(in *instance) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return in.stopping
}

// register adds spec or replaces the spec of the daemon of that name.
func (s *Supervisor) register(spec Spec) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	p := s.procs[spec.Name]
	if p == nil {
		ctx, cancel := context.WithCancel(s.ctx)
		p = &proc{ctx: ctx, cancel: cancel, op: make(chan struct{}, 1), state: Stopped, since: time.Now()}
		s.procs[spec.Name] = p
	} else if p.spec.Binary != spec.Binary {
		// Another binary may be another version.
		p.version, p.versionAsked = "", false
	}
	p.spec = spec
	return p, nil
}

func acquire(ctx context.Context, p *proc) error {
	select {
	case p.op <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func release(p *proc) { <-p.op }

func waitReady(ctx context.Context, in *instance) error {
	select {
	case <-in.ready:
		return in.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lookup returns the daemon called name, or ErrUnknown.
func (s *Supervisor) lookup(name string) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	p := s.procs[name]
	if p == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	return p, nil
}

// start spawns the daemon's process and the goroutines that reap it and
// decide its readiness. The caller holds p.op and p.cur is nil.
func (s *Supervisor) start(p *proc) (*instance, error) {
	s.mu.Lock()
	spec := p.spec
	s.stopRetryLocked(p)
	s.mu.Unlock()

	cmd := exec.Command(spec.Binary, spec.Args...)
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = defaultEnv
	}
	cmd.Dir = "/"
	tail := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = tail, tail
	var logFile *os.File
	if spec.LogFile != "" {
		// The daemon's whole output, as the journal keeps it under
		// systemd; the tail alone only explains the last failure.
		if f, err := os.OpenFile(spec.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
			s.log.Warn("open daemon log; keeping only the tail", "service", spec.Name, "err", err)
		} else {
			logFile = f // closed once the process is reaped and its output copied
			w := io.MultiWriter(tail, f)
			cmd.Stdout, cmd.Stderr = w, w
		}
	}
	cmd.SysProcAttr = sysProcAttr()
	// A daemon's descendant that left its process group can hold the
	// output pipe open after the daemon is gone; don't let it block Wait.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		s.mu.Lock()
		s.setStateLocked(p, Failed, err.Error())
		s.scheduleRetryLocked(p)
		s.mu.Unlock()
		s.log.Error("start daemon", "service", spec.Name, "err", err)
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	in := &instance{
		logFile: logFile,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		started: time.Now(),
		tail:    tail,
		exited:  make(chan struct{}),
		ready:   make(chan struct{}),
	}
	s.mu.Lock()
	p.cur = in
	s.mu.Unlock()
	s.log.Info("daemon started", "service", spec.Name, "pid", in.pid)
	s.wg.Add(2)
	go s.watch(p, in)
	go s.awaitReady(p, in, spec)
	notify(s.changes)
	return in, nil
}

// watch reaps the process and, unless we ended it, reports it failed and
// schedules its restart.
func (s *Supervisor) watch(p *proc, in *instance) {
	defer s.wg.Done()
	in.exitErr = reap(in)
	if in.logFile != nil {
		in.logFile.Close()
	}
	close(in.exited)

	s.mu.Lock()
	if p.cur == in {
		p.cur = nil
	}
	// A newer process (Restart, or Ensure after a failed readiness) owns
	// the state: this exit must not overwrite it.
	newer := p.cur != nil
	switch {
	case newer:
	case in.stopping && !in.retryOnExit:
		if !p.removed {
			s.setStateLocked(p, Stopped, "")
		}
	case in.retryOnExit:
		// awaitReady has set Failed with the reason.
		s.scheduleRetryLocked(p)
	default:
		msg := withOutput(fmt.Sprintf("exited unexpectedly (%s)", describeExit(in.exitErr)), in.tail)
		s.log.Warn("daemon exited", "service", p.spec.Name, "pid", in.pid, "err", msg)
		s.setStateLocked(p, Failed, msg)
		if !in.readyAt.IsZero() && time.Since(in.readyAt) >= backoffReset {
			p.failures = 0
		}
		s.scheduleRetryLocked(p)
	}
	s.mu.Unlock()
	notify(s.changes)
}

// awaitReady polls spec.Ready for a new process. A process that is alive
// but not ready in time is ended and restarted later like one that died.
func (s *Supervisor) awaitReady(p *proc, in *instance, spec Spec) {
	defer s.wg.Done()
	timeout := readyTimeout(spec)
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	err := pollReady(ctx, spec.Ready, func() bool {
		select {
		case <-in.exited:
			return true
		default:
			return false
		}
	})
	cancel()

	kill := false
	s.mu.Lock()
	switch {
	case errors.Is(err, errGone):
		// watch reports the exit and schedules the restart.
		err = fmt.Errorf("exited before it was ready (%s)", describeExit(in.exitErr))
	case p.ctx.Err() != nil || in.stopping || p.cur != in:
		if err != nil {
			err = errors.New("stopped before it was ready")
		}
	case err != nil:
		err = fmt.Errorf("not ready after %s: %w", timeout, err)
		in.stopping, in.retryOnExit = true, true
		s.setStateLocked(p, Failed, withOutput(err.Error(), in.tail))
		kill = true
	default:
		in.readyAt = time.Now()
		s.setStateLocked(p, Running, "")
		// A restart may start the new process before watch has seen the
		// old one exit, so the state never left Running: this process's
		// run still begins now.
		p.since = in.readyAt
	}
	s.mu.Unlock()

	if err == nil {
		s.log.Info("daemon ready", "service", spec.Name, "pid", in.pid, "after", time.Since(in.started).Round(time.Millisecond))
	} else {
		s.log.Warn("daemon not ready", "service", spec.Name, "pid", in.pid, "err", err)
	}
	if kill {
		s.terminate(context.Background(), in, spec)
	}
	if err != nil {
		// After an exit the tail is complete: reap waited for the output.
		err = errors.New(withOutput(err.Error(), in.tail))
	}
	in.readyErr = err
	close(in.ready)
	notify(s.changes)
}

// terminate ends a process: the spec's stop signal, then SIGKILL after
// its stop timeout or as soon as ctx ends. It returns once the process is
// reaped (watch kills the rest of its group before that).
func (s *Supervisor) terminate(ctx context.Context, in *instance, spec Spec) {
	s.mu.Lock()
	in.stopping = true
	s.mu.Unlock()
	select {
	case <-in.exited:
		return
	default:
	}
	// Process.Signal goes through a pidfd: it cannot hit a reused PID.
	if err := in.cmd.Process.Signal(stopSignal(spec)); err == nil {
		t := time.NewTimer(stopTimeout(spec))
		select {
		case <-in.exited:
			t.Stop()
			return
		case <-t.C:
			s.log.Warn("daemon did not stop in time, killing it", "service", spec.Name, "pid", in.pid, "timeout", stopTimeout(spec))
		case <-ctx.Done():
			t.Stop()
		}
	}
	_ = in.cmd.Process.Kill()
	<-in.exited
}

func (s *Supervisor) setStateLocked(p *proc, st State, msg string) {
	if p.state != st {
		p.since = time.Now()
	}
	p.state, p.errMsg = st, msg
}

// scheduleRetryLocked arranges an automatic restart after the backoff.
func (s *Supervisor) scheduleRetryLocked(p *proc) {
	if p.removed || s.closed || p.retry != nil {
		return
	}
	d := min(backoffMin<<min(p.failures, 16), backoffMax)
	p.failures++
	p.retryGen++
	gen := p.retryGen
	s.wg.Add(1)
	p.retry = time.AfterFunc(d, func() { s.retryStart(p, gen) })
}

func (s *Supervisor) stopRetryLocked(p *proc) {
	if p.retry != nil && p.retry.Stop() {
		s.wg.Done() // the callback will not run
	}
	p.retry = nil
}

func (s *Supervisor) retryStart(p *proc, gen int) {
	defer s.wg.Done()
	if acquire(p.ctx, p) != nil {
		return // stopped for good
	}
	defer release(p)
	s.mu.Lock()
	if p.removed || p.cur != nil || p.retry == nil || p.retryGen != gen {
		// Stopped, or started meanwhile by Ensure or Restart (and maybe
		// failed again, with a new timer that will do its own retry).
		s.mu.Unlock()
		return
	}
	p.retry = nil
	p.restarts++
	name := p.spec.Name
	s.mu.Unlock()
	s.log.Info("restarting daemon", "service", name)
	if in, err := s.start(p); err == nil {
		_ = waitReady(p.ctx, in)
	}
}

// Reload sends the daemon its ReloadSignal (or restarts it when it has
// none), coalescing overlapping calls as Manager documents. The signal goes
// to the daemon's main process only: masters pass it on to their workers.
func (s *Supervisor) Reload(ctx context.Context, name string) error {
	if _, err := s.lookup(name); err != nil {
		return err
	}
	return s.reloads.Do(ctx, name)
}

// reload is one coalesced reload. ctx is the Supervisor's, not a caller's.
func (s *Supervisor) reload(ctx context.Context, name string) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	if err := acquire(ctx, p); err != nil {
		return err
	}
	defer release(p)
	s.mu.Lock()
	removed, cur, spec, errMsg := p.removed, p.cur, p.spec, p.errMsg
	s.mu.Unlock()
	if removed {
		return fmt.Errorf("%w %q", ErrUnknown, name)
	}
	if spec.ReloadSignal == 0 {
		return s.restartHeld(ctx, p)
	}
	if cur == nil {
		if errMsg != "" {
			return fmt.Errorf("reload %s: not running: %s", name, errMsg)
		}
		return fmt.Errorf("reload %s: not running", name)
	}
	// A daemon that has not installed its handlers yet would die of HUP.
	if err := waitReady(ctx, cur); err != nil {
		return fmt.Errorf("reload %s: %w", name, err)
	}
	var await func(context.Context) error
	if spec.AwaitReload != nil {
		await = spec.AwaitReload(cur.pid)
	}
	if err := cur.cmd.Process.Signal(spec.ReloadSignal); err != nil {
		return fmt.Errorf("reload %s: signal %d: %w", name, cur.pid, err)
	}
	if await != nil {
		if err := await(ctx); err != nil {
			return fmt.Errorf("reload %s: %w", name, err)
		}
	}
	s.log.Info("daemon reloaded", "service", name, "pid", cur.pid, "signal", spec.ReloadSignal)
	return nil
}

// Restart stops the daemon (StopSignal, then SIGKILL after StopTimeout)
// and starts it again, returning once it is ready. It also starts a daemon
// that is down.
func (s *Supervisor) Restart(ctx context.Context, name string) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	if err := acquire(ctx, p); err != nil {
		return err
	}
	defer release(p)
	s.mu.Lock()
	removed := p.removed
	s.mu.Unlock()
	if removed {
		return fmt.Errorf("%w %q", ErrUnknown, name)
	}
	return s.restartHeld(ctx, p)
}

// restartHeld restarts p; the caller holds p.op. Once the old process is
// stopped the new one is started even if ctx has ended meanwhile: leaving
// the daemon down would be worse than the caller not waiting for it.
func (s *Supervisor) restartHeld(ctx context.Context, p *proc) error {
	s.mu.Lock()
	cur, spec := p.cur, p.spec
	s.mu.Unlock()
	if cur != nil {
		s.terminate(ctx, cur, spec)
	}
	in, err := s.start(p)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, in); err != nil {
		return fmt.Errorf("restart %s: %w", spec.Name, err)
	}
	return nil
}

// Stop stops the daemon and forgets it. It returns once the daemon's
// process group is gone; ctx only shortens the grace period before SIGKILL.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	p := s.procs[name]
	if p == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w %q", ErrUnknown, name)
	}
	delete(s.procs, name)
	s.forgetLocked(p)
	s.mu.Unlock()
	s.stopProc(ctx, p)
	notify(s.changes)
	return nil
}

// forgetLocked marks p removed so that no operation starts it again.
func (s *Supervisor) forgetLocked(p *proc) {
	p.removed = true
	s.stopRetryLocked(p)
	p.cancel() // ends a wait for readiness, which may hold p.op
}

// stopProc ends p's process. It waits for p.op without a deadline: every
// operation holding it ends promptly once p is cancelled, and returning
// early would leave the daemon running.
func (s *Supervisor) stopProc(ctx context.Context, p *proc) {
	p.op <- struct{}{}
	defer release(p)
	s.mu.Lock()
	cur, spec := p.cur, p.spec
	s.mu.Unlock()
	if cur != nil {
		s.terminate(ctx, cur, spec)
		s.log.Info("daemon stopped", "service", spec.Name, "pid", cur.pid)
	}
}

// Status reports every daemon, sorted by name. The first call for a daemon
// starts fetching its version in the background; a later report has it.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.procs))
	for _, p := range s.procs {
		st := Status{
			Name:     p.spec.Name,
			State:    p.state,
			Version:  p.version,
			Listen:   slices.Clone(p.spec.Listen),
			Since:    p.since,
			Error:    p.errMsg,
			Restarts: p.restarts,
			LogFiles: logFiles(p.spec),
		}
		if p.cur != nil {
			st.PID = p.cur.pid
		}
		out = append(out, st)
		if !p.versionAsked && p.spec.Version != nil && !s.closed {
			p.versionAsked = true
			s.wg.Add(1)
			go s.fetchVersion(p, p.spec)
		}
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Supervisor) fetchVersion(p *proc, spec Spec) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, versionTimeout)
	defer cancel()
	v, err := spec.Version(ctx)
	if err != nil {
		s.log.Warn("daemon version", "service", spec.Name, "err", err)
		return
	}
	s.mu.Lock()
	if p.spec.Binary == spec.Binary {
		p.version = v
	}
	s.mu.Unlock()
	notify(s.changes)
}

// Changes receives a value after a daemon changed state. It is never
// closed.
func (s *Supervisor) Changes() <-chan struct{} { return s.changes }

// Close stops every daemon, in parallel, and returns once all of them and
// everything they started are gone. The Supervisor cannot be used after.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	procs := make([]*proc, 0, len(s.procs))
	for _, p := range s.procs {
		s.forgetLocked(p)
		procs = append(procs, p)
	}
	clear(s.procs)
	s.mu.Unlock()
	s.cancel()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { s.stopProc(context.Background(), p) })
	}
	wg.Wait()
	s.reloads.wait()
	s.wg.Wait()
	notify(s.changes)
	return nil
}

// describeExit renders cmd.Wait's error: "exit status 1", "signal: killed".
func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return ee.Error()
	default:
		return err.Error()
	}
}

// withOutput appends the daemon's last output to msg: that is where the
// daemon says what is wrong.
func withOutput(msg string, tail *tailBuffer) string {
	if out := tail.String(); out != "" {
		return msg + ": " + out
	}
	return msg
}
