// Package backupnode runs the backup role of a node: its own sshd, which
// serves SFTP (and nothing else) to the other nodes' restic, with one key
// and one directory per source node in a chrooted backup area.
//
// The sshd is the distribution's OpenSSH with a configuration of the
// agent's, a host key of its own and its own port (platform.BackupNodePaths):
// the system's sshd and /etc/ssh, which operators log in through, are never
// touched.
//
// The module is opt-in (`--modules backup`; "all" leaves it out). Its sshd
// listens on --sftp-listen, default ":2222" so that 22 stays the system
// sshd's, and lets in only --backup-user (default "npanel-backup", a
// system user without password or shell that the module creates), only by
// the keys EnsureBackupAccess lists, only for SFTP. A source node's
// repositories live in <area>/<node>/<account>, which is the path restic
// is given: sftp:<user>@<host>:/<node>/<account>.
//
// Confinement. Every source node logs in as one Linux user (the protocol
// names one sftp_user per backup node), and sshd can neither chroot nor
// Match by key: ChrootDirectory and internal-sftp's -d expand only user
// tokens, and Match has no key criterion. So the chroot (the backup area)
// keeps every node away from the rest of the host, and each key's forced
// command starts its SFTP session in the node's own directory. The chroot's
// root is 0711, so no node can list the others' names, but a node that
// knows another node's name can still reach that node's directory. The
// repositories are encrypted with per-account passwords no other node has,
// so a node can damage but not read another node's backups. True per-node
// confinement needs a Linux user per source node (ChrootDirectory
// <area>/%u), which needs a sftp_user per key in BackupAccessResult.
package backupnode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// ServiceName is the sshd's name in service reports.
const ServiceName = "backup-sftpd"

// Module is the backup-node service area of one agent. It serialises the
// writers of authorized_keys.
type Module struct {
	mu sync.Mutex
}

var _ actions.Module = (*Module)(nil)

// NewModule returns the backup-node module of one agent.
func NewModule() *Module { return &Module{} }

// Name implements actions.Module.
func (*Module) Name() string { return "backup" }

// userPattern is what useradd accepts on both distros, without the
// trailing '$' of machine accounts.
var userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Setup implements actions.Module.
//
// It creates the backup user (a system user without a shell), the
// configuration and backup area directories, the host key (once, in the
// data dir) and sshd_config, checks the configuration with `sshd -t` and
// returns the sshd to run. Without sshd it returns no spec and the
// actions fail as UNAVAILABLE.
func (m *Module) Setup(ctx context.Context, env *actions.Env) ([]services.Spec, error) {
	p := env.Profile.BackupNode()
	if _, err := os.Stat(p.Sshd); err != nil {
		env.Logger.Info("sshd not installed, backup node disabled", "path", p.Sshd)
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !userPattern.MatchString(p.User) {
		return nil, fmt.Errorf("backup setup: backup user %q is not a valid user name", p.User)
	}
	if _, _, err := ensureSystemUser(ctx, env.Profile.Useradd, env.Profile.Nologin, p.User); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	if err := unlockUser(ctx, env.Profile, p.User); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	// sshd refuses a chroot or an authorized_keys file below a directory
	// that someone other than root may write: say so here, where the
	// operator sees which directory, rather than in every failed login.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{p.ConfigDir, 0o755}, {p.Area, 0o711}, {filepath.Dir(p.PidFile), 0o755}} {
		if err := rootDir(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("backup setup: %w", err)
		}
	}
	// sshd opens authorized_keys as the backup user: the user must be
	// able to pass through every directory above it. The chroot is made
	// by root.
	if err := checkRootChain(p.ConfigDir, true); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	if err := checkRootChain(p.Area, false); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	// OpenSSH's unprivileged pre-auth children chroot here; a systemd
	// unit would make it (RuntimeDirectory), a supervised sshd needs it
	// made.
	if err := os.MkdirAll(p.PrivsepDir, 0o755); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	if _, err := ensureHostKey(env.DataDir, p.HostKeyFile); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	if err := ensureAuthorizedKeys(p); err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	conf, err := renderConfig(p, env.Profile.SFTPListen, filepath.Join(env.DataDir, p.HostKeyFile))
	if err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	changed, err := writeConfig(ctx, p, []byte(conf))
	if err != nil {
		return nil, fmt.Errorf("backup setup: %w", err)
	}
	listen := env.Profile.SFTPListen
	spec := services.Spec{
		Name:         ServiceName,
		Listen:       []string{listen},
		Ready:        func(ctx context.Context) error { return banner(ctx, dialAddr(listen)) },
		ReadyTimeout: 10 * time.Second,
		Version:      func(ctx context.Context) (string, error) { return sshdVersion(ctx, p.Sshd) },
		Reconfigured: changed,
	}
	// Both ways to run it: the manager the agent picked uses one.
	spec.Binary = p.Sshd
	spec.Args = []string{"-D", "-e", "-f", p.Config}
	if env.Profile.Prefix == "" && services.SystemdAvailable() {
		spec.Unit = p.Unit
		unitChanged, err := writeUnit(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("backup setup: %w", err)
		}
		spec.Reconfigured = spec.Reconfigured || unitChanged
	}
	return []services.Spec{spec}, nil
}

// renderUnit is the systemd unit of the backup sshd. It is not enabled:
// the agent starts it after Setup made what it needs (the privilege
// separation directory in /run). No RuntimeDirectory: /run/sshd is the
// system sshd's too, and systemd would remove it when this unit stops.
// KillMode=process lets running SFTP sessions finish across a restart,
// as the distribution's sshd unit does.
func renderUnit(p platform.BackupNodePaths) string {
	return `# Written by the npanel agent; changes are overwritten.
[Unit]
Description=npanel backup node: SFTP for other nodes' backups
After=network.target

[Service]
ExecStartPre=` + p.Sshd + ` -t -f ` + p.Config + `
ExecStart=` + p.Sshd + ` -D -e -f ` + p.Config + `
ExecReload=` + p.Sshd + ` -t -f ` + p.Config + `
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RestartSec=2s
`
}

// writeUnit installs the unit when it differs and has systemd read it.
func writeUnit(ctx context.Context, p platform.BackupNodePaths) (bool, error) {
	root, err := os.OpenRoot(filepath.Dir(p.UnitFile))
	if err != nil {
		return false, err
	}
	defer root.Close()
	name, unit := filepath.Base(p.UnitFile), []byte(renderUnit(p))
	if old, err := root.ReadFile(name); err == nil && bytes.Equal(old, unit) {
		return false, nil
	}
	if err := atomicfile.Write(root, name, unit, 0o644, nil); err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, systemctl, "daemon-reload")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Errorf("systemctl daemon-reload: %w: %s", err, bytes.TrimSpace(out))
	}
	return true, nil
}

// systemctl is at this path on both distros.
const systemctl = "/usr/bin/systemctl"

// renderConfig is the whole sshd_config of the backup sshd.
func renderConfig(p platform.BackupNodePaths, listen, hostKey string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return "", fmt.Errorf("sftp listen %q is not host:port", listen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("sftp listen %q: bad port", listen)
	}
	var listens []string
	if host == "" {
		listens = []string{"0.0.0.0:" + port, "[::]:" + port}
	} else {
		if net.ParseIP(host) == nil {
			return "", fmt.Errorf("sftp listen %q: host must be an IP address", listen)
		}
		listens = []string{net.JoinHostPort(host, port)}
	}
	for _, s := range []string{p.Area, p.AuthorizedKeys, p.PidFile, hostKey, p.User} {
		if strings.ContainsAny(s, " \t\n\"#%") {
			return "", fmt.Errorf("%q cannot be written into sshd_config", s)
		}
	}
	lines := []string{"# Written by the npanel agent; changes are overwritten."}
	for _, l := range listens {
		lines = append(lines, "ListenAddress "+l)
	}
	lines = append(lines,
		"HostKey "+hostKey,
		"PidFile "+p.PidFile,
		// Without systemd and PAM: keys are the only way in.
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"HostbasedAuthentication no",
		"PubkeyAuthentication yes",
		"PermitRootLogin no",
		"PermitEmptyPasswords no",
		"AuthorizedKeysFile "+p.AuthorizedKeys,
		"AuthorizedKeysCommand none",
		"AuthorizedPrincipalsFile none",
		"StrictModes yes",
		"AllowUsers "+p.User,
		"MaxAuthTries 3",
		"LoginGraceTime 30",
		// Each key's forced command (authorized_keys) runs internal-sftp
		// in its node's directory; a global ForceCommand would override
		// it. A command that is not internal-sftp cannot run: the chroot
		// holds no binaries, and the user's shell is nologin.
		"Subsystem sftp internal-sftp",
		"ChrootDirectory "+p.Area,
		"DisableForwarding yes",
		"AllowTcpForwarding no",
		"AllowAgentForwarding no",
		"AllowStreamLocalForwarding no",
		"X11Forwarding no",
		"PermitTunnel no",
		"PermitTTY no",
		"PermitUserEnvironment no",
		"PermitUserRC no",
		"PrintMotd no",
		"Banner none",
		"LogLevel VERBOSE",
	)
	return strings.Join(lines, "\n") + "\n", nil
}

// writeConfig replaces sshd_config with conf when it differs, after
// `sshd -t` accepted conf, and reports whether it changed.
func writeConfig(ctx context.Context, p platform.BackupNodePaths, conf []byte) (bool, error) {
	root, err := os.OpenRoot(p.ConfigDir)
	if err != nil {
		return false, err
	}
	defer root.Close()
	name := filepath.Base(p.Config)
	if old, err := root.ReadFile(name); err == nil && bytes.Equal(old, conf) {
		return false, nil
	}
	pend, err := atomicfile.Create(root, name, 0o644, &atomicfile.Owner{UID: 0, GID: 0})
	if err != nil {
		return false, err
	}
	defer pend.Abort()
	if _, err := pend.Write(conf); err != nil {
		return false, err
	}
	if err := pend.Sync(); err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, p.Sshd, "-t", "-f", filepath.Join(p.ConfigDir, pend.TempName()))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Errorf("sshd -t refused the configuration: %w: %s", err, bytes.TrimSpace(out))
	}
	if err := pend.Commit(); err != nil {
		return false, err
	}
	return true, nil
}

// ensureAuthorizedKeys creates an empty authorized_keys (no node may log
// in yet) unless one exists, and gives it the owner and mode sshd's
// StrictModes accept.
func ensureAuthorizedKeys(p platform.BackupNodePaths) error {
	root, err := os.OpenRoot(p.ConfigDir)
	if err != nil {
		return err
	}
	defer root.Close()
	name := filepath.Base(p.AuthorizedKeys)
	if _, err := root.Lstat(name); err == nil {
		if err := root.Lchown(name, 0, 0); err != nil {
			return err
		}
		return root.Chmod(name, 0o644)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.Write(root, name, nil, 0o644, &atomicfile.Owner{UID: 0, GID: 0})
}

// rootDir makes dir (and missing parents) a directory of root's with mode,
// repairing owner and mode of one that exists.
func rootDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := os.Lchown(dir, 0, 0); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// checkRootChain checks what sshd checks of a ChrootDirectory and of the
// directories above authorized_keys: dir and every directory above it are
// root's and writable by no one else; with search, others may pass
// through them too.
func checkRootChain(dir string, search bool) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("stat %s: no owner", d)
		}
		if st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("sshd refuses %s: %s must be owned by root and writable by root only (owner uid %d, mode %04o); use a prefix outside world-writable directories such as /tmp",
				dir, d, st.Uid, fi.Mode().Perm())
		}
		if search && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("sshd cannot read %s as the backup user: %s is not searchable by others (mode %04o)",
				dir, d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

// ensureSystemUser returns the IDs of name, creating it as a system user
// whose home is the chroot's root and whose shell is nologin. An existing
// user is taken as it is, except root's UID.
func ensureSystemUser(ctx context.Context, useradd, nologin, name string) (int, int, error) {
	if uid, gid, err := lookupIDs(name); err == nil {
		return uid, gid, nil
	} else if !errors.As(err, new(user.UnknownUserError)) {
		return 0, 0, err
	}
	// Home "/": after the chroot sshd changes into the user's home, and
	// "/" is the backup area itself, so no warning reaches the client.
	// Password "*": no password matches it, and unlike useradd's default
	// "!" sshd (without PAM) does not take it for a locked account.
	out, err := exec.CommandContext(ctx, useradd, "--system", "--no-create-home", "--home-dir", "/",
		"--shell", nologin, "--password", "*", "--user-group", name).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("useradd %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return lookupIDs(name)
}

// unlockUser replaces a locked password ("!...") of name by "*": sshd
// without PAM refuses every login, keys included, to a locked account,
// and a user made by hand or by an older useradd call may be locked.
func unlockUser(ctx context.Context, prof *platform.Profile, name string) error {
	b, err := os.ReadFile(prof.Shadow)
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 2 || f[0] != name || !strings.HasPrefix(f[1], "!") {
			continue
		}
		out, err := exec.CommandContext(ctx, prof.Usermod, "--password", "*", name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("usermod %s: %w: %s", name, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

func lookupIDs(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, err
	}
	if uid == 0 || gid == 0 {
		return 0, 0, fmt.Errorf("backup user %s is root's (uid %d, gid %d); give it a user of its own", name, uid, gid)
	}
	return uid, gid, nil
}

// ensureHostKey returns the sshd's host key, generating an ed25519 key
// into dataDir/name (0600) on first use. The key outlives agent restarts:
// the source nodes pin it.
func ensureHostKey(dataDir, name string) (ssh.Signer, error) {
	if s, err := readHostKey(dataDir, name); err == nil {
		return s, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "npanel backup node")
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	root, err := os.OpenRoot(dataDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if err := atomicfile.Write(root, name, pem.EncodeToMemory(blk), 0o600, nil); err != nil {
		return nil, fmt.Errorf("write host key: %w", err)
	}
	return readHostKey(dataDir, name)
}

func readHostKey(dataDir, name string) (ssh.Signer, error) {
	root, err := os.OpenRoot(dataDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	b, err := root.ReadFile(name)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", filepath.Join(dataDir, name), err)
	}
	return s, nil
}

// dialAddr is where the agent itself reaches a listener: loopback for a
// wildcard host.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// banner succeeds once an SSH server answers on addr: sshd accepts
// connections before it is done starting only if it is ours, and the
// banner proves a server, not just a socket.
func banner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 8)
	if _, err := c.Read(b); err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("SSH-2.0-")) {
		return fmt.Errorf("%s: not an SSH server", addr)
	}
	return nil
}

// sshdVersion is the first word `sshd -V` prints (on stderr, with a
// non-zero exit on older versions): "OpenSSH_9.2p1 Debian-2+deb12u3".
func sshdVersion(ctx context.Context, sshd string) (string, error) {
	cmd := exec.CommandContext(ctx, sshd, "-V")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, _ := cmd.CombinedOutput()
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), ",")
	if !strings.HasPrefix(v, "OpenSSH") {
		return "", fmt.Errorf("sshd -V: unexpected output %q", out)
	}
	return v, nil
}

// unavailable is the error of an action on a node whose module is not set
// up.
func unavailable(format string, args ...any) error {
	return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, format, args...)
}

func marshalKey(s interface{ PublicKey() ssh.PublicKey }) []byte {
	return ssh.MarshalAuthorizedKey(s.PublicKey())
}
