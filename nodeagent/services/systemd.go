package services

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fixed paths: the agent runs as root and never looks binaries up in PATH.
// Both are in the same place on AlmaLinux 9 and Debian 12.
const (
	systemctlPath  = "/usr/bin/systemctl"
	journalctlPath = "/usr/bin/journalctl"
)

// systemdPollInterval is how often Systemd re-reads its units' state. A
// crash is noticed within this time; operations refresh at once.
const systemdPollInterval = 5 * time.Second

// showProperties are the unit properties Status needs. NRestarts (systemd
// 235 and later) rides on the poll that reads the state anyway, so the
// restart count costs no process of its own.
const showProperties = "ActiveState,SubState,MainPID,ActiveEnterTimestamp,Result,NRestarts"

// SystemdAvailable reports whether the machine was booted with systemd as
// its init (the test sd_booted(3) uses).
func SystemdAvailable() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// runner runs a command given as an argument vector and returns its
// standard output. A failure's error carries the command's stderr, which
// is where systemctl says what went wrong. Tests substitute a double.
type runner interface {
	run(ctx context.Context, argv ...string) ([]byte, error)
}

// execRunner runs the real binaries.
type execRunner struct{}

// commandEnv makes systemctl's output predictable: C locale (English day
// names in timestamps), UTC timestamps, no pager, no colour.
var commandEnv = []string{
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	"LC_ALL=C",
	"TZ=UTC",
	"SYSTEMD_PAGER=",
	"SYSTEMD_COLORS=0",
}

func (execRunner) run(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = commandEnv
	var stdout bytes.Buffer
	stderr := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if msg := stderr.String(); msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return stdout.Bytes(), nil
}

// Systemd is the Manager for production nodes: every daemon is a systemd
// unit, driven with systemctl. Units outlive the agent, so Close only stops
// watching them.
type Systemd struct {
	log     *slog.Logger
	run     runner
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	changes chan struct{}
	reloads *coalescer[string]
	wg      sync.WaitGroup

	mu     sync.Mutex
	units  map[string]*unit
	closed bool
}

// unit is one managed daemon and its last known state.
type unit struct {
	spec         Spec
	state        State
	since        time.Time
	pid          int
	restarts     int // systemd's NRestarts
	errMsg       string
	journal      string // last journal lines, fetched when it failed
	version      string
	versionAsked bool
}

var _ Manager = (*Systemd)(nil)

// NewSystemd returns a Systemd manager with no units. It polls its units'
// state every 5 s until Close.
func NewSystemd(log *slog.Logger) *Systemd {
	return newSystemd(log, execRunner{}, systemdPollInterval)
}

func newSystemd(log *slog.Logger, r runner, poll time.Duration) *Systemd {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Systemd{
		log:     log,
		run:     r,
		ctx:     ctx,
		cancel:  cancel,
		changes: make(chan struct{}, 1),
		units:   make(map[string]*unit),
	}
	m.reloads = newCoalescer(ctx, reloadSpacing, m.reload)
	m.wg.Go(func() { m.poll(poll) })
	return m
}

// checkUnitName accepts the characters systemd allows in unit names and
// refuses a leading "-", which systemctl would take for an option.
func checkUnitName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("unit name %q: want 1 to 255 characters", name)
	}
	if name[0] == '-' || name[0] == '.' {
		return fmt.Errorf("unit name %q: must not start with %q", name, name[0])
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':', c == '_', c == '.', c == '@', c == '-', c == '\\':
		default:
			return fmt.Errorf("unit name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// systemctlTimeout bounds one systemctl call. systemctl waits for its job;
// systemd's own default job timeout is 90 s, and a hung reload must not
// block the coalescer, and every later reload, for ever.
const systemctlTimeout = 2 * time.Minute

func (m *Systemd) systemctl(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, systemctlTimeout)
	defer cancel()
	return m.run.run(ctx, append([]string{systemctlPath}, args...)...)
}

// Ensure registers spec, enables its unit (so it comes back after a
// reboot) and starts it, then waits for Spec.Ready.
func (m *Systemd) Ensure(ctx context.Context, spec Spec) error {
	if spec.Name == "" {
		return errors.New("service spec without a name")
	}
	if err := checkUnitName(spec.Unit); err != nil {
		return fmt.Errorf("service %q: %w", spec.Name, err)
	}
	spec.Listen = slices.Clone(spec.Listen)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errClosed
	}
	u := m.units[spec.Name]
	if u == nil {
		u = &unit{state: Stopped, since: time.Now()}
		m.units[spec.Name] = u
	} else if u.spec.Unit != spec.Unit {
		u.version, u.versionAsked = "", false
	}
	u.spec = spec
	m.mu.Unlock()

	if _, err := m.systemctl(ctx, "enable", spec.Unit); err != nil {
		return fmt.Errorf("enable %s: %w", spec.Name, err)
	}
	verb := "start"
	switch {
	case spec.Restart:
		verb = "restart"
	case spec.Reconfigured:
		verb = "reload-or-restart"
	}
	if _, err := m.systemctl(ctx, verb, spec.Unit); err != nil {
		m.refresh(spec.Name)
		return fmt.Errorf("%s %s: %w", verb, spec.Name, err)
	}
	return m.awaitReady(ctx, spec, "start")
}

// awaitReady waits for spec.Ready after systemctl returned (which for most
// units means the main process is up, not that it serves yet).
func (m *Systemd) awaitReady(ctx context.Context, spec Spec, op string) error {
	timeout := readyTimeout(spec)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := pollReady(rctx, spec.Ready, nil)
	cancel()
	m.refresh(spec.Name)
	if err != nil {
		return fmt.Errorf("%s %s: not ready after %s: %w", op, spec.Name, timeout, err)
	}
	return nil
}

func (m *Systemd) lookup(name string) (Spec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Spec{}, errClosed
	}
	u := m.units[name]
	if u == nil {
		return Spec{}, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	return u.spec, nil
}

// Reload runs `systemctl reload` (the unit's ExecReload), or `systemctl
// restart` for a daemon without a graceful reload (ReloadSignal 0).
// Overlapping calls are coalesced as Manager documents.
func (m *Systemd) Reload(ctx context.Context, name string) error {
	if _, err := m.lookup(name); err != nil {
		return err
	}
	return m.reloads.Do(ctx, name)
}

func (m *Systemd) reload(ctx context.Context, name string) error {
	spec, err := m.lookup(name)
	if err != nil {
		return err
	}
	verb := "reload"
	if spec.ReloadSignal == 0 {
		verb = "restart"
	}
	_, err = m.systemctl(ctx, verb, spec.Unit)
	m.refresh(name)
	if err != nil {
		return fmt.Errorf("reload %s: %w", name, err)
	}
	m.log.Info("unit reloaded", "service", name, "unit", spec.Unit, "how", verb)
	return nil
}

// Restart runs `systemctl restart` and waits for Spec.Ready.
func (m *Systemd) Restart(ctx context.Context, name string) error {
	spec, err := m.lookup(name)
	if err != nil {
		return err
	}
	if _, err := m.systemctl(ctx, "restart", spec.Unit); err != nil {
		m.refresh(name)
		return fmt.Errorf("restart %s: %w", name, err)
	}
	return m.awaitReady(ctx, spec, "restart")
}

// Stop runs `systemctl stop` and forgets the unit. It leaves the unit
// enabled: what is installed on the node is Ansible's business.
func (m *Systemd) Stop(ctx context.Context, name string) error {
	spec, err := m.lookup(name)
	if err != nil {
		return err
	}
	if _, err := m.systemctl(ctx, "stop", spec.Unit); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	m.mu.Lock()
	delete(m.units, name)
	m.mu.Unlock()
	notify(m.changes)
	return nil
}

// Status reports the units' state as of the last poll or operation,
// sorted by name.
func (m *Systemd) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.units))
	for _, u := range m.units {
		out = append(out, Status{
			Name:     u.spec.Name,
			State:    u.state,
			Version:  u.version,
			Listen:   slices.Clone(u.spec.Listen),
			PID:      u.pid,
			Since:    u.since,
			Error:    u.errMsg,
			Restarts: u.restarts,
			Unit:     u.spec.Unit,
			LogFiles: logFiles(u.spec),
		})
		if !u.versionAsked && u.spec.Version != nil && !m.closed {
			u.versionAsked = true
			m.wg.Add(1)
			go m.fetchVersion(u, u.spec)
		}
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *Systemd) fetchVersion(u *unit, spec Spec) {
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(m.ctx, versionTimeout)
	defer cancel()
	v, err := spec.Version(ctx)
	if err != nil {
		m.log.Warn("daemon version", "service", spec.Name, "err", err)
		return
	}
	m.mu.Lock()
	if u.spec.Unit == spec.Unit {
		u.version = v
	}
	m.mu.Unlock()
	notify(m.changes)
}

// Changes receives a value after a unit changed state. It is never closed.
func (m *Systemd) Changes() <-chan struct{} { return m.changes }

// Close stops polling. The units keep running: they belong to systemd.
func (m *Systemd) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.reloads.wait()
	m.wg.Wait()
	return nil
}

func (m *Systemd) poll(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		names := make([]string, 0, len(m.units))
		for name := range m.units {
			names = append(names, name)
		}
		m.mu.Unlock()
		for _, name := range names {
			m.refresh(name)
		}
	}
}

// refresh reads a unit's state from systemd and records it, fetching the
// journal's last lines when the unit has just failed.
//
// It runs on the manager's context, not the caller's: a caller that gave up
// should not leave a stale state behind.
func (m *Systemd) refresh(name string) {
	spec, err := m.lookup(name)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	out, err := m.systemctl(ctx, "show", spec.Unit, "--property="+showProperties)
	if err != nil {
		m.log.Warn("unit status", "service", name, "unit", spec.Unit, "err", err)
		return
	}
	props, err := parseShow(out)
	if err != nil {
		m.log.Warn("unit status", "service", name, "unit", spec.Unit, "err", err)
		return
	}
	st := props.state()

	m.mu.Lock()
	u := m.units[name]
	if u == nil || u.spec.Unit != spec.Unit {
		m.mu.Unlock()
		return
	}
	fetchJournal := st == Failed && u.state != Failed
	m.mu.Unlock()

	journal := ""
	if fetchJournal {
		jout, err := m.run.run(ctx, journalctlPath, "--unit="+spec.Unit, "--lines=20", "--output=cat", "--no-pager", "--quiet")
		if err != nil {
			m.log.Warn("unit journal", "service", name, "unit", spec.Unit, "err", err)
		}
		var tb tailBuffer
		_, _ = tb.Write(jout)
		journal = tb.String()
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.units[name] != u {
		return
	}
	changed := u.state != st || u.pid != props.MainPID
	if u.state != st {
		u.since = time.Now()
	}
	if st == Running && !props.ActiveEnter.IsZero() {
		u.since = props.ActiveEnter
	}
	if fetchJournal {
		u.journal = journal
	}
	u.state, u.pid, u.restarts = st, props.MainPID, props.NRestarts
	u.errMsg = props.problem()
	if st == Failed && u.journal != "" {
		u.errMsg += ": " + u.journal
	}
	if changed {
		m.log.Info("unit state", "service", name, "unit", spec.Unit, "state", st, "pid", props.MainPID)
		notify(m.changes)
	}
}

// unitProps are the properties `systemctl show` reports.
type unitProps struct {
	ActiveState, SubState, Result string
	MainPID                       int
	// NRestarts counts the restarts systemd's Restart= logic made; systemd
	// resets it when the unit is started by hand, so it is a counter with
	// resets, as Prometheus' rate and increase expect.
	NRestarts   int
	ActiveEnter time.Time
}

// parseShow parses `systemctl show --property=...` output: one Key=Value a
// line. Unknown keys are ignored; ActiveState is required.
func parseShow(out []byte) (unitProps, error) {
	var p unitProps
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "ActiveState":
			p.ActiveState = v
		case "SubState":
			p.SubState = v
		case "Result":
			p.Result = v
		case "MainPID":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return unitProps{}, fmt.Errorf("systemctl show: MainPID %q", v)
			}
			p.MainPID = n
		case "NRestarts":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return unitProps{}, fmt.Errorf("systemctl show: NRestarts %q", v)
			}
			p.NRestarts = n
		case "ActiveEnterTimestamp":
			t, err := parseTimestamp(v)
			if err != nil {
				return unitProps{}, fmt.Errorf("systemctl show: ActiveEnterTimestamp: %w", err)
			}
			p.ActiveEnter = t
		}
	}
	if err := sc.Err(); err != nil {
		return unitProps{}, fmt.Errorf("systemctl show: %w", err)
	}
	if p.ActiveState == "" {
		return unitProps{}, errors.New("systemctl show: no ActiveState in its output")
	}
	return p, nil
}

// parseTimestamp reads systemd's timestamps: "Sun 2024-11-24 10:00:00 UTC"
// (we run systemctl with TZ=UTC), "@1732442400" (--timestamp=unix), or
// empty / "n/a" for never.
func parseTimestamp(v string) (time.Time, error) {
	switch {
	case v == "" || v == "n/a" || v == "0":
		return time.Time{}, nil
	case strings.HasPrefix(v, "@"):
		secs, err := strconv.ParseInt(v[1:], 10, 64)
		if err != nil || secs < 0 {
			return time.Time{}, fmt.Errorf("timestamp %q", v)
		}
		return time.Unix(secs, 0).UTC(), nil
	}
	t, err := time.Parse("Mon 2006-01-02 15:04:05 MST", v)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q", v)
	}
	return t, nil
}

// state maps systemd's ActiveState onto ours. "reloading" is a running
// daemon re-reading its configuration.
func (p unitProps) state() State {
	switch p.ActiveState {
	case "active", "reloading":
		return Running
	case "failed":
		return Failed
	default:
		return Stopped
	}
}

// problem explains a unit that is not running, in systemd's words.
func (p unitProps) problem() string {
	switch p.state() {
	case Running:
		return ""
	case Failed:
		return fmt.Sprintf("unit failed (result %s, %s)", p.Result, p.SubState)
	default:
		return fmt.Sprintf("unit %s (%s)", p.ActiveState, p.SubState)
	}
}
