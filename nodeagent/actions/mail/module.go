// Package mail drives a node's mail service: Exim (SMTP, submission,
// SMTPS), Dovecot (IMAP, POP3, LMTP, Sieve, quota) and the lookup files and
// passwd-files that tell them which domains, mailboxes and aliases the node
// serves.
//
// Exim and Dovecot run from main configurations the agent renders once per
// node setting (listeners, relay). Every domain and mailbox change is a
// change of lookup files only: Exim reads lsearch/dsearch files per lookup
// and Dovecot re-reads a passwd-file when it changes, so no action reloads
// a daemon (Dovecot's auth cache is flushed when a password or login switch
// changes; flushes of concurrent actions are coalesced).
//
// Supervised (a prefix), Exim runs with -C on a file outside
// TRUSTED_CONFIG_LIST and so gives up root: it runs, receives and delivers
// as its own user. That is enough because every local delivery goes to
// Dovecot over LMTP (a socket Exim's group may open) and Dovecot's LMTP
// writes the maildir as the account's user; Exim never writes to a home.
package mail

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// ModuleName is the module's stable name.
const ModuleName = "mail"

// Service names in nodes { services }.
const (
	EximService    = "exim"
	DovecotService = "dovecot"
	SpamdService   = "spamd"
	ClamdService   = "clamd"
)

// Module is the mail service area of one agent. It holds the state the
// actions share: per-domain locks (a domain's passwd-file and lookup files
// are rewritten whole) and the auth-cache flusher.
type Module struct {
	locks actions.KeyedLocks

	// BcryptCost is the cost of new mailbox password hashes.
	BcryptCost int
	// Program is the npanel binary Dovecot runs for quota warnings
	// (QuotaWarningMain); os.Executable() when empty.
	Program string

	// Group commit of the hosts' certificates (certs.go): sniMu guards
	// the queue and whether its committer runs.
	sniMu      sync.Mutex
	sniPending []*sniJob
	sniRunning bool
	// sniOwed: the last reload after a certificate change failed (the
	// committing loop's only).
	sniOwed bool

	flushMu   sync.Mutex
	flushedAt time.Time // start of the last successful auth-cache flush
	// lateFlush is set while a second flush is scheduled; see
	// flushAuthCache.
	lateFlush bool

	webmail webmailState // webmail.go
}

var _ actions.Module = (*Module)(nil)

// DefaultBcryptCost is the cost new hashes get: the lowest the issue
// allows. Measured here (2 cores, BenchmarkIMAPLogin, IMAPS login
// including TLS): about 105 ms at cost 10 and 0.9 s at cost 14. Dovecot
// 2.3's auth cache keeps the passdb entry, hash included, so a cached
// login still runs one bcrypt verification (in an auth worker): the cost
// is paid on every IMAP, POP3 and SMTP AUTH login, and 14 would make a
// login storm a denial of service.
const DefaultBcryptCost = 10

// NewModule returns the mail module of one agent.
func NewModule() *Module { return &Module{BcryptCost: DefaultBcryptCost} }

// Name implements actions.Module.
func (*Module) Name() string { return ModuleName }

// installed reports whether Exim and Dovecot are on this node.
func installed(env *actions.Env) bool {
	m := env.Profile.Mail()
	for _, b := range []string{m.Exim, m.Dovecot, m.Doveconf} {
		if _, err := os.Stat(b); err != nil {
			return false
		}
	}
	return true
}

// Setup implements actions.Module: it lays out the module's directories,
// the node's TLS certificate and the two main configurations (each
// validated by its daemon before it replaces the old one), and returns the
// daemons' specs.
func (m *Module) Setup(ctx context.Context, env *actions.Env) ([]services.Spec, error) {
	if env == nil || env.Profile == nil {
		return nil, errors.New("mail: no platform profile")
	}
	if !installed(env) {
		return nil, nil
	}
	p := env.Profile
	mp := p.Mail()
	l, err := parseListeners(p)
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	eximUID, eximGID, err := lookupIDs(mp.EximUser)
	if err != nil {
		return nil, fmt.Errorf("mail: exim user: %w", err)
	}
	_, dovecotGID, err := lookupIDs(mp.DovecotUser)
	if err != nil {
		return nil, fmt.Errorf("mail: dovecot user: %w", err)
	}
	type dir struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}
	dirs := []dir{
		{filepath.Dir(mp.DomainsDir), 0o755, 0, 0},
		{mp.DomainsDir, 0o750, 0, eximGID},
		{mp.UsersDir, 0o750, 0, dovecotGID},
		{mp.DKIMDir, 0o750, 0, eximGID},
		{mp.TLSDir, 0o755, 0, 0},
		{mp.SieveDir, 0o755, 0, 0},
	}
	if mp.Supervised {
		dirs = append(dirs,
			dir{filepath.Dir(mp.EximConfig), 0o755, 0, 0},
			dir{mp.SpoolDir, 0o750, eximUID, eximGID},
			dir{filepath.Dir(mp.EximMainLog), 0o750, eximUID, eximGID},
			dir{mp.LogDir, 0o750, eximUID, 0},
			dir{mp.RunDir, 0o755, eximUID, eximGID},
			dir{mp.DovecotBaseDir, 0o755, 0, 0},
			dir{mp.DovecotStateDir, 0o750, 0, 0})
	}
	for _, d := range dirs {
		if err := mkdirPublicParents(p.Prefix, d.path); err != nil {
			return nil, fmt.Errorf("mail: %w", err)
		}
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("mail: %w", err)
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return nil, fmt.Errorf("mail: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("mail: %w", err)
		}
	}
	if err := ensureCert(mp.TLSDir, mailname(env), eximGID); err != nil {
		return nil, fmt.Errorf("mail: tls: %w", err)
	}
	// The SNI indexes exist before the configurations that read them.
	if err := ensureSNIDir(mp, eximGID); err != nil {
		return nil, err
	}
	if err := writeSNIIndex(mp); err != nil {
		return nil, err
	}
	// Global scripts are compiled here: Dovecot's LMTP runs as the
	// accounts' users and may not write their binaries.
	if err := atomicfile.WriteFile(loginDenyFile(mp), []byte(loginDeny), 0o644, nil); err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	junk := filepath.Join(mp.SieveDir, "junk.sieve")
	if err := atomicfile.WriteFile(junk, []byte(junkSieve), 0o644, nil); err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	if out, err := exec.CommandContext(ctx, mp.Sievec, junk).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mail: sievec: %w: %s", err, tail(out))
	}
	av, restartClamd, err := setupClamd(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("mail: clamd: %w", err)
	}
	in := configInput{Node: env.Node, Paths: mp, Listen: l, Relay: p.MailRelay, Mailname: mailname(env), Antivirus: av}
	exim, err := renderExim(in)
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	changedE, err := replaceConfig(ctx, mp.EximConfig, []byte(exim), func(path string) *exec.Cmd {
		return exec.CommandContext(ctx, mp.Exim, "-C", path, "-bV")
	})
	if err != nil {
		return nil, fmt.Errorf("mail: exim configuration: %w", err)
	}
	if in.QuotaWarning, err = m.quotaWarningCommand(env.Logger, mp, in.Mailname); err != nil {
		return nil, fmt.Errorf("mail: quota warning: %w", err)
	}
	dovecot, err := renderDovecot(in)
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	changedD, err := replaceConfig(ctx, mp.DovecotConfig, []byte(dovecot), func(path string) *exec.Cmd {
		return exec.CommandContext(ctx, mp.Doveconf, "-n", "-c", path)
	})
	if err != nil {
		return nil, fmt.Errorf("mail: dovecot configuration: %w", err)
	}
	es := m.eximSpec(env, l)
	es.Reconfigured = changedE
	ds := m.dovecotSpec(env, l)
	ds.Reconfigured = changedD
	specs := []services.Spec{ds, es}
	if _, err := os.Stat(mp.Spamd); err == nil {
		spamd, err := m.spamdSpec(env)
		if err != nil {
			return nil, fmt.Errorf("mail: spamd: %w", err)
		}
		specs = append(specs, spamd)
	}
	if av {
		cs := m.clamdSpec(env)
		cs.Restart = restartClamd
		specs = append(specs, cs)
	}
	return specs, nil
}

// eicarSignature is the one signature of the test database a supervised
// node's clamd gets when it has none (tests, npanel dev: signatures cannot
// be downloaded there): the EICAR test string anywhere in a file.
const eicarSignature = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// setupClamd reports whether this node scans mail with ClamAV: the
// profile wants it, clamd is installed and has signatures. Supervised, it
// writes clamd's configuration and, when the database directory holds no
// signatures, the EICAR test database.
//
// clamd listens only on its unix socket, 0660 in Exim's group: a TCP port
// on loopback would let any account's program reach it (and stop it with
// SHUTDOWN). Over a unix socket Exim's clamd scanner sends a file name
// (SCAN), so clamd's user joins Exim's group to read Exim's scan files
// (0640, in 0750 directories of the spool).
func setupClamd(ctx context.Context, env *actions.Env) (av, restart bool, err error) {
	p := env.Profile
	mp := p.Mail()
	if !p.MailAntivirus {
		return false, false, nil
	}
	if _, err := os.Stat(mp.Clamd); err != nil {
		return false, false, nil
	}
	uid, gid, err := lookupIDs(mp.ClamdUser)
	if err != nil {
		return false, false, nil
	}
	_, eximGID, err := lookupIDs(mp.EximGroup)
	if err != nil {
		return false, false, err
	}
	// A running clamd has the groups it started with: it is restarted
	// when its user joins Exim's group (it reads Exim's scan files).
	if restart, err = ensureInGroup(ctx, env.Logger, p.Usermod, mp.ClamdUser, mp.EximGroup, eximGID); err != nil {
		return false, false, err
	}
	if mp.Supervised {
		sockDir := filepath.Dir(mp.ClamdSocket)
		for _, d := range []struct {
			path string
			mode os.FileMode
			gid  int
		}{{mp.ClamdDBDir, 0o755, gid}, {sockDir, 0o750, eximGID}} {
			if err := mkdirPublicParents(p.Prefix, d.path); err != nil {
				return false, false, err
			}
			if err := os.MkdirAll(d.path, d.mode); err != nil {
				return false, false, err
			}
			if err := os.Chown(d.path, uid, d.gid); err != nil {
				return false, false, err
			}
			if err := os.Chmod(d.path, d.mode); err != nil {
				return false, false, err
			}
		}
		if !hasSignatures(mp.ClamdDBDir) {
			sig := fmt.Sprintf("Eicar-Test-Signature:0:*:%x\n", eicarSignature)
			if err := atomicfile.WriteFile(filepath.Join(mp.ClamdDBDir, "npanel-test.ndb"), []byte(sig), 0o644, nil); err != nil {
				return false, false, err
			}
		}
		conf := fmt.Sprintf(`# Written by the npanel agent; changes are overwritten.
LocalSocket %s
LocalSocketGroup %s
LocalSocketMode 660
DatabaseDirectory %s
Foreground yes
User %s
LogSyslog no
TemporaryDirectory %s
MaxThreads 4
`, mp.ClamdSocket, mp.EximGroup, mp.ClamdDBDir, mp.ClamdUser, sockDir)
		if err := atomicfile.WriteFile(mp.ClamdConfig, []byte(conf), 0o644, nil); err != nil {
			return false, false, err
		}
	}
	return hasSignatures(mp.ClamdDBDir), restart, nil
}

// ensureInGroup adds name to group (gid) unless it is a member already,
// and says whether it did.
func ensureInGroup(ctx context.Context, log *slog.Logger, usermod, name, group string, gid int) (bool, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return false, err
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false, fmt.Errorf("groups of %s: %w", name, err)
	}
	if slices.Contains(ids, strconv.Itoa(gid)) {
		return false, nil
	}
	if out, err := exec.CommandContext(ctx, usermod, "-a", "-G", group, name).CombinedOutput(); err != nil {
		return false, fmt.Errorf("add %s to group %s: %w: %s", name, group, err, tail(out))
	}
	log.Info("added a user to a group", "user", name, "group", group)
	return true, nil
}

func hasSignatures(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".cvd", ".cld", ".ndb", ".hdb", ".hsb", ".ldb":
			return true
		}
	}
	return false
}

func (m *Module) clamdSpec(env *actions.Env) services.Spec {
	mp := env.Profile.Mail()
	return services.Spec{
		Name:         ClamdService,
		Unit:         mp.ClamdUnit,
		Binary:       mp.Clamd,
		Args:         []string{"-c", mp.ClamdConfig},
		ReloadSignal: syscall.SIGUSR2, // reload the signature database
		StopTimeout:  15 * time.Second,
		ReadyTimeout: 5 * time.Minute, // a full signature set takes minutes to load
		Listen:       []string{mp.ClamdSocket},
		Ready: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", mp.ClamdSocket)
			if err != nil {
				return err
			}
			return c.Close()
		},
		Version: func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, mp.Clamd, "--version").Output()
			if err != nil {
				return "", err
			}
			// "ClamAV 1.4.6/..." or "ClamAV 1.4.6"
			f := strings.Fields(string(out))
			if len(f) < 2 {
				return "", errors.New("clamd --version: no version")
			}
			v, _, _ := strings.Cut(f[1], "/")
			return v, nil
		},
	}
}

// spamdSpec runs spamd on a unix socket Exim's group may open, without
// network tests (-L: no DNS blocklists, no Razor/Pyzor) and without Unix
// users' configurations (-x), with one Bayes database per account.
func (m *Module) spamdSpec(env *actions.Env) (services.Spec, error) {
	mp := env.Profile.Mail()
	uid, gid, err := lookupIDs(mp.SpamdUser)
	if err != nil {
		return services.Spec{}, err
	}
	if err := os.MkdirAll(mp.SpamdDir, 0o755); err != nil {
		return services.Spec{}, err
	}
	home := filepath.Join(mp.SpamdDir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return services.Spec{}, err
	}
	if err := os.Chown(home, uid, gid); err != nil {
		return services.Spec{}, err
	}
	// spamd's children (spamd's user) create each account's directory.
	if err := os.MkdirAll(mp.SpamdBayesDir, 0o700); err != nil {
		return services.Spec{}, err
	}
	if err := os.Chown(mp.SpamdBayesDir, uid, gid); err != nil {
		return services.Spec{}, err
	}
	return services.Spec{
		Name:   SpamdService,
		Unit:   mp.SpamdUnit,
		Binary: mp.Spamd,
		Args: []string{"--socketpath=" + mp.SpamdSocket, "--socketowner=root", "--socketgroup=" + mp.EximGroup,
			"--socketmode=0660", "-u", mp.SpamdUser, "-g", mp.SpamdGroup, "-x", "-L",
			// The user Exim names (the recipient domain's account)
			// selects the Bayes database; spamd maps any other character
			// than [-A-Za-z0-9+_.,@=] to '_'.
			"--virtual-config-dir=" + filepath.Join(mp.SpamdBayesDir, "%u"),
			"--max-children=4", "--min-children=1", "--pidfile=" + filepath.Join(mp.SpamdDir, "spamd.pid"),
			"-s", filepath.Join(mp.SpamdDir, "spamd.log"), "-H", home},
		ReloadSignal: syscall.SIGHUP,
		StopTimeout:  15 * time.Second,
		ReadyTimeout: 60 * time.Second,
		Listen:       []string{mp.SpamdSocket},
		// Ready once a child answers PING: spamd makes its socket before
		// its children have loaded the rules, and a spamd stopped while
		// they load ignores SIGTERM until they are done.
		Ready: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", mp.SpamdSocket)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("PING SPAMC/1.5\r\n\r\n")); err != nil {
				return err
			}
			b, err := io.ReadAll(c)
			if err != nil && len(b) == 0 {
				return err
			}
			if !strings.Contains(string(b), "PONG") {
				return fmt.Errorf("spamd answered %q", b)
			}
			return nil
		},
		Version: func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, mp.Spamd, "--version").Output()
			if err != nil {
				return "", err
			}
			for _, f := range strings.Fields(string(out)) {
				if len(f) > 0 && f[0] >= '0' && f[0] <= '9' && strings.Contains(f, ".") {
					return f, nil
				}
			}
			return "", errors.New("spamd --version: no version")
		},
	}, nil
}

// mailname is the node's mail host name (HELO, certificate).
func mailname(env *actions.Env) string {
	n := env.Node
	if n == "" || strings.ContainsAny(n, " \t\r\n$\\{}:;") {
		n = "localhost"
	}
	if !strings.Contains(n, ".") {
		n += ".localdomain"
	}
	return n
}

// replaceConfig writes data to path unless it holds it already, after the
// daemon accepted the new file (check runs on a candidate next to it). A
// refused candidate is removed and the old file stays: the rollback.
func replaceConfig(ctx context.Context, path string, data []byte, check func(path string) *exec.Cmd) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	cand := path + ".candidate"
	if err := atomicfile.WriteFile(cand, data, 0o644, nil); err != nil {
		return false, err
	}
	defer os.Remove(cand)
	if out, err := check(cand).CombinedOutput(); err != nil {
		return false, fmt.Errorf("refused (%v): %s", err, tail(out))
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return true, atomicfile.WriteFile(path, data, 0o644, nil)
}

func (m *Module) eximSpec(env *actions.Env, l listeners) services.Spec {
	mp := env.Profile.Mail()
	return services.Spec{
		Name:         EximService,
		Unit:         mp.EximUnit,
		Binary:       mp.Exim,
		Args:         []string{"-C", mp.EximConfig, "-bdf", "-q30s"},
		ReloadSignal: syscall.SIGHUP,
		StopTimeout:  15 * time.Second,
		Listen:       []string{env.Profile.SMTPListen, env.Profile.SubmissionListen, env.Profile.SMTPSListen},
		Ready:        func(ctx context.Context) error { return dialOK(ctx, l.smtp.dial()) },
		AwaitReload:  awaitEximReload(l.smtp.dial()),
		LogFiles:     []string{mp.EximMainLog, fmt.Sprintf(mp.EximLogPat, "reject")},
		Version: func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, mp.Exim, "-C", mp.EximConfig, "-bV").Output()
			if err != nil {
				return "", err
			}
			f := strings.Fields(string(out))
			if len(f) >= 3 && f[0] == "Exim" {
				return f[2], nil
			}
			return "", errors.New("exim -bV: no version")
		},
	}
}

func (m *Module) dovecotSpec(env *actions.Env, l listeners) services.Spec {
	mp := env.Profile.Mail()
	var logs []string
	if mp.Supervised {
		logs = []string{mp.DovecotLog} // in production: syslog, the unit's journal
	}
	return services.Spec{
		LogFiles:     logs,
		Name:         DovecotService,
		Unit:         mp.DovecotUnit,
		Binary:       mp.Dovecot,
		Args:         []string{"-F", "-c", mp.DovecotConfig},
		ReloadSignal: syscall.SIGHUP,
		StopTimeout:  15 * time.Second,
		Listen: []string{env.Profile.IMAPListen, env.Profile.IMAPSListen, env.Profile.POP3Listen,
			env.Profile.POP3SListen, filepath.Join(mp.DovecotBaseDir, "lmtp-exim")},
		Ready: func(ctx context.Context) error {
			if _, err := os.Stat(filepath.Join(mp.DovecotBaseDir, "auth-exim")); err != nil {
				return err
			}
			return dialOK(ctx, l.imap.dial())
		},
		Version: func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, mp.Dovecot, "--version").Output()
			if err != nil {
				return "", err
			}
			f := strings.Fields(string(out))
			if len(f) == 0 {
				return "", errors.New("dovecot --version: no version")
			}
			return f[0], nil
		},
	}
}

// awaitEximReload waits out Exim's reload: it executes itself again on
// SIGHUP and opens new listeners, refusing connections meanwhile. It is
// done once another socket listens on addr than before the signal.
func awaitEximReload(addr string) func(pid int) func(ctx context.Context) error {
	return func(int) func(ctx context.Context) error {
		before := listenInode(addr)
		return func(ctx context.Context) error {
			deadline := time.Now().Add(10 * time.Second)
			for {
				if now := listenInode(addr); now != "" && now != before && dialOK(ctx, addr) == nil {
					return nil
				}
				if time.Now().After(deadline) {
					return errors.New("exim: not listening again 10 s after its reload")
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}
}

// listenInode returns the inodes of the sockets listening on addr's port
// at its address or every address (IPv4 or IPv6), "" when none does.
func listenInode(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return ""
	}
	ip := ap.Addr().As4()
	port := fmt.Sprintf(":%04X", ap.Port())
	// /proc/net/tcp writes an IPv4 address as a little-endian word.
	match := map[string]bool{
		fmt.Sprintf("%02X%02X%02X%02X", ip[3], ip[2], ip[1], ip[0]) + port: true,
		"00000000" + port:              true,
		strings.Repeat("0", 32) + port: true,
	}
	var inodes []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 && match[f[1]] && f[3] == "0A" {
				inodes = append(inodes, f[9])
			}
		}
	}
	slices.Sort(inodes)
	return strings.Join(inodes, ",")
}

func dialOK(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// ensureCert makes the node's self-signed mail certificate (ECDSA P-256)
// unless one is there. The key is readable by Exim's group: Exim reads it
// after giving up root.
func ensureCert(dir, name string, eximGID int) error {
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certPath); err == nil {
		if _, err := os.Stat(keyPath); err == nil {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o640, &atomicfile.Owner{UID: 0, GID: eximGID}); err != nil {
		return err
	}
	return atomicfile.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644, nil)
}

// flushAuthCache makes Dovecot forget cached logins, so a changed password
// or login switch takes effect at once. Concurrent callers share flushes:
// a caller is done once a flush that started after it arrived succeeded.
func (m *Module) flushAuthCache(ctx context.Context, env *actions.Env) error {
	arrived := time.Now()
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	if m.flushedAt.After(arrived) {
		return nil
	}
	mp := env.Profile.Mail()
	if _, err := os.Stat(filepath.Join(mp.DovecotBaseDir, "auth-master")); err != nil {
		return nil // Dovecot not running: nothing cached
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, mp.Doveadm, "-c", mp.DovecotConfig, "auth", "cache", "flush").CombinedOutput()
	if err != nil {
		return fmt.Errorf("doveadm auth cache flush: %w: %s", err, tail(out))
	}
	m.flushedAt = start
	// Dovecot looks at a passwd-file's mtime at most once a second, so a
	// login in the same second as the change may still read the old line
	// and cache it for auth_cache_ttl. A second flush a little over a
	// second later drops such an entry; one is enough for every change
	// made before it is scheduled.
	if !m.lateFlush {
		m.lateFlush = true
		cfg := mp.DovecotConfig
		time.AfterFunc(1100*time.Millisecond, func() {
			m.flushMu.Lock()
			m.lateFlush = false
			m.flushMu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = exec.CommandContext(ctx, mp.Doveadm, "-c", cfg, "auth", "cache", "flush").Run()
		})
	}
	return nil
}

// mkdirPublicParents creates the parents of paths below prefix with mode
// 0755: the daemons drop to their own users and must reach their files.
func mkdirPublicParents(prefix string, paths ...string) error {
	for _, p := range paths {
		dir := filepath.Dir(p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if prefix == "" {
			continue
		}
		for d := dir; len(d) > len(prefix); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
	}
	if prefix != "" {
		if fi, err := os.Stat(prefix); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			return os.Chmod(prefix, fi.Mode().Perm()|0o055)
		}
	}
	return nil
}

func lookupIDs(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// unavailable is the error of an action on a node without the mail daemons.
func unavailable(env *actions.Env) error {
	if env == nil || env.Profile == nil || !installed(env) {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "mail: Exim and Dovecot are not installed on this node")
	}
	return nil
}
