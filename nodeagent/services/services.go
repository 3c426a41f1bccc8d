// Package services manages the daemons an agent is responsible for (nginx,
// PHP-FPM, PowerDNS, MariaDB, PostgreSQL): start them, reload or restart
// them after a configuration change, and report their state.
//
// There are two managers behind one interface. On production nodes the
// daemons are systemd units (Systemd). Where there is no systemd, in tests,
// in `npanel dev` and on the CI machine, the agent supervises the daemons
// itself under its prefix (Supervisor): they run as its children, are
// restarted when they die and are reloaded by signal. Actions never know
// which one they talk to.
package services

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

// State is a daemon's state as reported to the control plane.
type State string

const (
	Running State = "running"
	Stopped State = "stopped"
	Failed  State = "failed"
)

// Spec describes one managed daemon.
type Spec struct {
	// Name is the stable service name shown to operators and used by
	// restartService: "nginx", "php-fpm8.2", "pdns", "mariadb", "postgresql".
	Name string
	// Unit is the systemd unit (Systemd manager only), e.g. "nginx.service".
	Unit string

	// Binary and Args start the daemon in the foreground (Supervisor only).
	// Binary is a fixed absolute path from the platform profile. The daemon
	// runs in "/", so paths in Args should be absolute too.
	Binary string
	Args   []string
	// Env is the daemon's complete environment (Supervisor only); nil gives
	// it a minimal PATH-only environment, never the agent's own.
	Env []string
	// LogFile, when set, receives the daemon's output (Supervisor only;
	// systemd units log to the journal). Its directory must exist.
	LogFile string
	// LogFiles are the files the daemon writes its own logs to (nginx's
	// error.log, PHP-FPM's error_log, MariaDB's log-error), besides
	// LogFile: serviceLogs reads them and the log shipper follows them.
	LogFiles []string
	// ReloadSignal reloads the configuration of a running daemon (HUP for
	// nginx, USR2 for PHP-FPM). Zero means the daemon has no graceful
	// reload and Reload restarts it. Systemd runs `systemctl reload` (the
	// unit's ExecReload) when it is set, `systemctl restart` when it is not.
	ReloadSignal syscall.Signal
	// AwaitReload, when set, is called with the daemon's main PID just
	// before the reload signal (Supervisor only) and returns a wait that
	// blocks until the reload has taken effect, so that Reload returns only
	// once new requests see the new configuration (nginx: new workers
	// started, old ones told to finish).
	AwaitReload func(pid int) func(ctx context.Context) error
	// StopSignal ends the daemon (default SIGTERM); it gets StopTimeout
	// (default 10 s) before SIGKILL.
	StopSignal  syscall.Signal
	StopTimeout time.Duration

	// Ready reports whether a started daemon serves (a socket accepts, an
	// API answers). Start and Restart wait for it, up to ReadyTimeout
	// (default 30 s). Nil: the daemon counts as ready once started.
	Ready        func(ctx context.Context) error
	ReadyTimeout time.Duration

	// Version returns the daemon's version for status reports; nil or an
	// error leaves it empty. Called rarely and its result cached.
	Version func(ctx context.Context) (string, error)
	// Listen lists the addresses the daemon serves on (ip:port or a unix
	// socket path), for status reports.
	Listen []string
	// Reconfigured says Setup changed configuration a daemon that already
	// runs must re-read: Systemd's Ensure runs `systemctl
	// reload-or-restart` instead of `start`. (A supervised daemon always
	// starts from its current configuration.)
	Reconfigured bool
	// Restart says Setup changed what a running daemon takes only when it
	// starts (its user's groups): Systemd's Ensure runs `systemctl
	// restart`.
	Restart bool
}

// Status is one daemon as reported in nodes { services }.
type Status struct {
	Name    string    `json:"name"`
	State   State     `json:"state"`
	Version string    `json:"version,omitempty"`
	Listen  []string  `json:"listen,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Since   time.Time `json:"since"`
	// Error says why a daemon is failed or stopped against our wish; it
	// carries the daemon's own message (last lines of its output).
	Error string `json:"error,omitempty"`
	// Restarts counts restarts after unexpected exits: the Supervisor's
	// own count, or systemd's NRestarts.
	Restarts int `json:"restarts,omitempty"`
	// Unit is the systemd unit (Systemd only): its journal is the log.
	Unit string `json:"unit,omitempty"`
	// LogFiles are the daemon's log files: Spec.LogFile, then
	// Spec.LogFiles.
	LogFiles []string `json:"logFiles,omitempty"`
}

// logFiles lists every file spec says the daemon logs to.
func logFiles(spec Spec) []string {
	var out []string
	if spec.LogFile != "" {
		out = append(out, spec.LogFile)
	}
	return append(out, spec.LogFiles...)
}

// Proto is st as the agent reports it to the control plane.
func (st Status) Proto() *agentpb.ServiceStatus {
	ss := &agentpb.ServiceStatus{Name: st.Name, State: string(st.State), Version: st.Version,
		Listen: st.Listen, Error: st.Error, Restarts: uint32(st.Restarts)}
	if !st.Since.IsZero() {
		ss.SinceUnixNano = st.Since.UnixNano()
	}
	return ss
}

// ErrUnknown is returned for a service name the manager does not manage.
var ErrUnknown = errors.New("unknown service")

// Manager runs the daemons of one node.
type Manager interface {
	// Ensure registers spec (replacing an earlier spec of the same name)
	// and starts the daemon if it is not running; it returns once the
	// daemon is ready or has failed to start.
	Ensure(ctx context.Context, spec Spec) error
	// Reload makes a running daemon re-read its configuration. Calls that
	// overlap are coalesced: every caller returns after one reload that
	// started after its call, so a burst of changes costs one or two
	// reloads, not one each.
	Reload(ctx context.Context, name string) error
	// Restart stops and starts the daemon.
	Restart(ctx context.Context, name string) error
	// Stop stops the daemon and forgets it.
	Stop(ctx context.Context, name string) error
	// Status reports every managed daemon, sorted by name.
	Status() []Status
	// Changes receives a value whenever a daemon's state changes, so the
	// agent can report promptly; it never blocks the manager.
	Changes() <-chan struct{}
	// Close stops supervised daemons (Supervisor) or only lets go of them
	// (Systemd: units outlive the agent).
	Close() error
}
