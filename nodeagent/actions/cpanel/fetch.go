package cpanel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Pulling archives from an old cPanel server (scan_cpanel_server,
// fetch_cpanel_backup). The node is the SSH client: it dials the server
// with credentials the control plane sealed to it, refuses any host key
// but the pinned one, reads files over SFTP and writes into the import
// area through an os.Root. The only remote command is pkgacct, built from
// tokens the validators accept (no quoting, no shell metacharacters).

// Action names.
const (
	ScanName  = "cpanel.scan"
	FetchName = "cpanel.fetch"
)

// Defaults of FetchOptions.
const (
	// DefaultPkgacct is where cPanel installs pkgacct.
	DefaultPkgacct = "/usr/local/cpanel/scripts/pkgacct"
	// DefaultPkgacctDir is where pkgacct is told to write the archive
	// (cPanel's own default).
	DefaultPkgacctDir    = "/home"
	defaultFetchMaxBytes = 256 << 30
	dialTimeout          = 30 * time.Second
	maxTrueUserDomains   = 8 << 20
	maxUserFile          = 1 << 20
	maxPkgacctOutput     = 4 << 20
	maxScanAccounts      = 100_000
	// maxScanBytes bounds a scan's result (it crosses the node's stream
	// and is stored in etcd): the accounts past it are left out and the
	// result says it was truncated.
	maxScanBytes = 512 << 10
	// The old server is not trusted with time either: a connection on
	// which nothing arrives for defaultIdleTimeout is dropped, keepalives
	// go every defaultKeepalive (and one unanswered for two intervals
	// drops the connection), pkgacct and a scan have overall bounds.
	defaultIdleTimeout    = 60 * time.Second
	defaultKeepalive      = 15 * time.Second
	defaultPkgacctTimeout = 2 * time.Hour
	defaultScanTimeout    = 5 * time.Minute
	// freeRecheck is how often (in bytes written) a download checks the
	// import area's free space again.
	freeRecheck = 256 << 20
)

// FetchOptions are how the node reaches old servers. Tests point pkgacct
// at a stand-in; production keeps cPanel's fixed paths.
type FetchOptions struct {
	PkgacctPath string // "": DefaultPkgacct
	PkgacctDir  string // "": DefaultPkgacctDir
	MaxBytes    uint64 // 0: 256 GiB
	// Progress receives a running fetch's bytes, at most about once a
	// second (the agent forwards it on its stream as backups do).
	Progress func(*agentpb.BackupProgress)
	// ServerRoot prefixes the server files a scan reads
	// (/etc/trueuserdomains, /var/cpanel/users/): tests point it at a
	// directory they fill; production leaves it "".
	ServerRoot string
	// Time bounds; 0 is the default. Tests shorten them.
	IdleTimeout    time.Duration // no byte from the server for this long: dropped (60 s)
	Keepalive      time.Duration // keepalive@openssh.com interval (15 s)
	PkgacctTimeout time.Duration // pkgacct's overall bound (2 h)
	ScanTimeout    time.Duration // a scan's overall bound (5 min)
	// free replaces statfs in tests, which make the disk small.
	free func(dir string) (uint64, error)
	// afterStat, when set (tests), runs between the Stat of a remote file
	// and its download: a server may change the file in between.
	afterStat func()
}

// freeBytes is what an unprivileged writer may still use on dir's disk.
func (o FetchOptions) freeBytes(dir string) (uint64, error) {
	if o.free != nil {
		return o.free(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (o FetchOptions) pkgacct() (bin, dir string) {
	bin, dir = o.PkgacctPath, o.PkgacctDir
	if bin == "" {
		bin = DefaultPkgacct
	}
	if dir == "" {
		dir = DefaultPkgacctDir
	}
	return bin, dir
}

// Scan is scan_cpanel_server.
type Scan struct {
	m   *Module
	req *agentpb.ScanCpanelServerAction
}

// Fetch is fetch_cpanel_backup.
type Fetch struct {
	m    *Module
	req  *agentpb.FetchCpanelBackupAction
	task string
}

// SetTaskID implements actions.TaskAware: progress reports name the task.
func (a *Fetch) SetTaskID(id string) { a.task = id }

// NewScan builds the action from its wire form.
func (m *Module) NewScan(req *agentpb.ScanCpanelServerAction) *Scan { return &Scan{m: m, req: req} }

// NewFetch builds the action from its wire form.
func (m *Module) NewFetch(req *agentpb.FetchCpanelBackupAction) *Fetch { return &Fetch{m: m, req: req} }

// Name implements actions.Action.
func (*Scan) Name() string { return ScanName }

// Name implements actions.Action.
func (*Fetch) Name() string { return FetchName }

// ValidServer checks how a node is asked to reach a server; pinned says
// a host key fingerprint is required.
func ValidServer(s *agentpb.CpanelServer, pinned bool) error {
	if s == nil {
		return errors.New("server: required")
	}
	if h, err := validate.CpanelServerHost(s.GetHost()); err != nil {
		return err
	} else if h != s.GetHost() {
		return fmt.Errorf("host %q: not canonical (%q)", s.GetHost(), h)
	}
	if err := validate.CpanelServerPort(int(s.GetPort())); err != nil {
		return err
	}
	if err := validate.CpanelServerUser(s.GetUser()); err != nil {
		return err
	}
	if fp := s.GetHostKeyFingerprint(); fp != "" || pinned {
		if err := validate.HostKeyFingerprint(fp); err != nil {
			return err
		}
	}
	if len(s.GetSealedPassword()) == 0 && len(s.GetSealedPrivateKey()) == 0 {
		return errors.New("server: a password or a private key is required")
	}
	return nil
}

// Validate implements actions.Action.
func (a *Scan) Validate() error {
	if a.req == nil {
		return errors.New("empty request")
	}
	return ValidServer(a.req.GetServer(), false)
}

// Validate implements actions.Action.
func (a *Fetch) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("empty request")
	}
	if err := ValidServer(r.GetServer(), true); err != nil {
		return err
	}
	switch {
	case (r.GetAccount() == "") == (r.GetRemotePath() == ""):
		return errors.New("exactly one of account and remote_path is required")
	case r.GetAccount() != "":
		if err := validate.CpanelAccountName(r.GetAccount()); err != nil {
			return err
		}
	default:
		if err := validate.CpanelRemotePath(r.GetRemotePath()); err != nil {
			return err
		}
	}
	return validate.CpanelArchivePath(r.GetPath())
}

var (
	errHostKeyUnknown  = errors.New("host key not pinned")
	errHostKeyMismatch = errors.New("host key mismatch")
)

// dial logs in to the server. The host key is compared with the pinned
// fingerprint before any credential is sent; the fingerprint seen is
// returned whatever happens.
func dial(ctx context.Context, env *actions.Env, s *agentpb.CpanelServer, o FetchOptions) (*ssh.Client, string, error) {
	var seen string
	cfg := &ssh.ClientConfig{
		User:    s.GetUser(),
		Timeout: dialTimeout,
		// A fixed preference, ed25519 first, so that the key a server
		// shows (and the operator pins) is the same on every dial and
		// is the one ssh-keygen -l -f ssh_host_ed25519_key.pub prints.
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			seen = ssh.FingerprintSHA256(key)
			pin := s.GetHostKeyFingerprint()
			if pin == "" {
				return errHostKeyUnknown
			}
			if subtle.ConstantTimeCompare([]byte(seen), []byte(pin)) != 1 {
				return errHostKeyMismatch
			}
			return nil
		},
	}
	if s.GetHostKeyFingerprint() != "" {
		auth, err := authMethods(env, s)
		if err != nil {
			return nil, "", err
		}
		cfg.Auth = auth
	}
	port := s.GetPort()
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(s.GetHost(), strconv.Itoa(int(port)))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("connect %s: %w", addr, err))
	}
	conn := &idleConn{Conn: raw, idle: orDefault(o.IdleTimeout, defaultIdleTimeout)}
	// The handshake has no context of its own: a deadline bounds it.
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		switch {
		case errors.Is(err, errHostKeyUnknown):
			return nil, seen, errHostKeyUnknown
		case errors.Is(err, errHostKeyMismatch):
			return nil, seen, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT,
				"%s showed host key %s, not the pinned %s: refused", addr, seen, s.GetHostKeyFingerprint())
		}
		// The ssh package's errors name methods, never credentials.
		return nil, seen, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("ssh %s@%s: %w", s.GetUser(), addr, err))
	}
	// From here each read and write has an idle deadline of its own,
	// pushed as bytes move, and keepalives make a live server answer
	// even while it works in silence (pkgacct).
	_ = conn.SetDeadline(time.Time{})
	conn.armed.Store(true)
	client := ssh.NewClient(c, chans, reqs)
	go keepalive(client, orDefault(o.Keepalive, defaultKeepalive))
	return client, seen, nil
}

// idleConn drops a connection on which nothing moves: once armed, each
// Read (Write) sets a read (write) deadline idle from now. SSH reads
// without pause, so a read timing out means the server sent nothing,
// not even a keepalive answer, for idle.
type idleConn struct {
	net.Conn
	idle  time.Duration
	armed atomic.Bool
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.armed.Load() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.armed.Load() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(p)
}

// keepalive sends keepalive@openssh.com every interval until the client
// closes; an answer (a refusal is one) that does not come within two
// intervals closes the client.
func keepalive(c *ssh.Client, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	closed := make(chan struct{})
	go func() { _ = c.Wait(); close(closed) }()
	for {
		select {
		case <-closed:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		select {
		case err := <-answered:
			if err != nil {
				c.Close()
				return
			}
		case <-time.After(2 * interval):
			c.Close()
			return
		case <-closed:
			return
		}
	}
}

// authMethods opens the sealed credentials; they live only in this
// client's config and are never logged or returned.
func authMethods(env *actions.Env, s *agentpb.CpanelServer) ([]ssh.AuthMethod, error) {
	if env == nil || env.Unseal == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent cannot open sealed secrets")
	}
	var out []ssh.AuthMethod
	if k := s.GetSealedPrivateKey(); len(k) > 0 {
		pem, err := env.Unseal(k, agentpb.CpanelServerKeySealContext(s.GetUser(), s.GetHost()))
		if err != nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "the private key is not sealed to this node for %s@%s", s.GetUser(), s.GetHost())
		}
		signer, err := ssh.ParsePrivateKey(pem)
		clear(pem)
		if err != nil {
			// Not err: a parse error may quote the key's bytes.
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "the private key is not an unencrypted OpenSSH or PEM key")
		}
		out = append(out, ssh.PublicKeys(signer))
	}
	if p := s.GetSealedPassword(); len(p) > 0 {
		pw, err := env.Unseal(p, agentpb.CpanelServerPasswordSealContext(s.GetUser(), s.GetHost()))
		if err != nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "the password is not sealed to this node for %s@%s", s.GetUser(), s.GetHost())
		}
		password := string(pw)
		clear(pw)
		out = append(out, ssh.Password(password),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				ans := make([]string, len(qs))
				for i := range ans {
					ans[i] = password
				}
				return ans, nil
			}))
	}
	return out, nil
}

// closeOnDone closes c when ctx ends before stop is called: SFTP and SSH
// reads have no context.
func closeOnDone(ctx context.Context, c io.Closer) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			c.Close()
		case <-done:
		}
	}()
	return func() { close(done) }
}

// Apply implements actions.Action. It writes nothing on the node.
func (a *Scan) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	timeout := orDefault(a.m.Fetch.ScanTimeout, defaultScanTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, seen, err := dial(ctx, env, a.req.GetServer(), a.m.Fetch)
	if errors.Is(err, errHostKeyUnknown) {
		return &agentpb.ScanCpanelServerResult{HostKeyFingerprint: seen, HostKeyUnknown: true}, nil
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	sc, err := sftp.NewClient(c)
	if err != nil {
		return nil, scanErr(ctx, timeout, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("sftp: %w", err)))
	}
	defer sc.Close()
	accts, truncated, err := scanAccounts(sc, a.m.Fetch.ServerRoot)
	if err != nil {
		return nil, scanErr(ctx, timeout, err)
	}
	return &agentpb.ScanCpanelServerResult{HostKeyFingerprint: seen, Accounts: accts, Truncated: truncated}, nil
}

// scanErr names the scan's time bound when it is why err happened.
func scanErr(ctx context.Context, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("the scan did not finish within %s: %w", timeout, err))
	}
	return err
}

// readRemote reads a small remote file, at most limit bytes.
func readRemote(sc *sftp.Client, name string, limit int64) ([]byte, error) {
	f, err := sc.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// scanAccounts reads /etc/trueuserdomains ("domain: user" per line) and
// each user's /var/cpanel/users/USER (KEY=VALUE lines: DNS= is the main
// domain, SUSPENDED=1 a suspended account). A list over maxScanAccounts
// accounts or maxScanBytes encoded is cut short: truncated says so.
func scanAccounts(sc *sftp.Client, root string) (_ []*agentpb.CpanelServerAccount, truncated bool, _ error) {
	b, err := readRemote(sc, root+"/etc/trueuserdomains", maxTrueUserDomains)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no /etc/trueuserdomains: not a cPanel server")
	}
	if err != nil {
		return nil, false, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("read /etc/trueuserdomains: %w", err))
	}
	users := ParseTrueUserDomains(b)
	if len(users) > maxScanAccounts {
		users, truncated = users[:maxScanAccounts], true
	}
	out := make([]*agentpb.CpanelServerAccount, 0, len(users))
	size := 0
	for _, u := range users {
		acct := &agentpb.CpanelServerAccount{Username: u.User, Domain: u.Domain}
		// A user file that cannot be read leaves the account as
		// /etc/trueuserdomains names it.
		if ub, err := readRemote(sc, root+"/var/cpanel/users/"+u.User, maxUserFile); err == nil {
			ParseCpanelUserFile(ub, acct)
		}
		// Each repeated element costs its size, a tag and a length.
		size += proto.Size(acct) + 4
		if size > scanByteLimit {
			return out, true, nil
		}
		out = append(out, acct)
	}
	return out, truncated, nil
}

// scanByteLimit is maxScanBytes; tests lower it.
var scanByteLimit = maxScanBytes

// UserDomain is one line of /etc/trueuserdomains.
type UserDomain struct{ Domain, User string }

// ParseTrueUserDomains reads /etc/trueuserdomains; lines whose user is not
// a cPanel username or whose domain is not a domain are left out (the
// names go into remote paths), as are a user's later lines.
func ParseTrueUserDomains(b []byte) []UserDomain {
	var out []UserDomain
	seen := map[string]bool{}
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 4096), 64<<10)
	for s.Scan() {
		dom, user, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		dom, user = strings.TrimSpace(dom), strings.TrimSpace(user)
		if validate.CpanelAccountName(user) != nil || seen[user] {
			continue
		}
		d, err := validate.Domain(dom)
		if err != nil {
			continue
		}
		seen[user] = true
		out = append(out, UserDomain{Domain: d, User: user})
	}
	return out
}

// ParseCpanelUserFile fills acct from a /var/cpanel/users/USER file.
func ParseCpanelUserFile(b []byte, acct *agentpb.CpanelServerAccount) {
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 4096), 64<<10)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "DNS":
			if d, err := validate.Domain(v); err == nil {
				acct.Domain = d
			}
		case "SUSPENDED":
			acct.Suspended = v == "1"
		case "DISK_USED", "DISKUSED":
			// Not written by every cPanel version; 0 stays "unknown".
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				acct.DiskUsedBytes = n
			}
		}
	}
}

// Apply implements actions.Action.
func (a *Fetch) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	if env == nil || env.Profile == nil {
		return nil, errors.New("no platform profile: the agent must be started with one")
	}
	area := env.Profile.Cpanel().ImportDir
	if err := os.MkdirAll(area, 0o750); err != nil {
		return nil, fmt.Errorf("import area: %w", err)
	}
	root, err := os.OpenRoot(area)
	if err != nil {
		return nil, fmt.Errorf("import area: %w", err)
	}
	defer root.Close()
	// The path names this fetch alone (the control plane puts its id in
	// it): a file there is this fetch's finished work.
	if st, err := root.Stat(r.GetPath()); err == nil {
		if !st.Mode().IsRegular() {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "%s exists and is not a regular file", r.GetPath())
		}
		sum, err := fileSHA256(root, r.GetPath())
		if err != nil {
			return nil, err
		}
		return &agentpb.FetchCpanelBackupResult{Path: r.GetPath(), Bytes: uint64(st.Size()), Sha256: sum, RemotePath: r.GetRemotePath()}, nil
	}
	c, _, err := dial(ctx, env, r.GetServer(), a.m.Fetch)
	if errors.Is(err, errHostKeyUnknown) {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "no host key fingerprint pinned")
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	remote := r.GetRemotePath()
	if r.GetAccount() != "" {
		if remote, err = a.pkgacct(ctx, c, r.GetAccount()); err != nil {
			return nil, err
		}
	}
	sc, err := sftp.NewClient(c)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("sftp: %w", err))
	}
	defer sc.Close()
	limit := r.GetMaxBytes()
	if limit == 0 {
		limit = a.m.Fetch.MaxBytes
	}
	if limit == 0 {
		limit = defaultFetchMaxBytes
	}
	n, sum, err := a.m.Fetch.download(ctx, sc, root, remote, r.GetPath(), limit, a.progress())
	if err != nil {
		return nil, err
	}
	if r.GetAccount() != "" {
		// pkgacct's archive was made for this fetch: it goes, the
		// server's disk is not ours to fill.
		if err := sc.Remove(remote); err != nil && env.Logger != nil {
			env.Logger.Warn("remove pkgacct archive on the server", "path", remote, "err", err)
		}
	}
	return &agentpb.FetchCpanelBackupResult{Path: r.GetPath(), Bytes: n, Sha256: sum, RemotePath: remote}, nil
}

// pkgacct runs cPanel's pkgacct for account on the server and returns the
// archive it wrote. The command is three tokens the validators accept:
// the fixed binary, the account name and the fixed directory.
func (a *Fetch) pkgacct(ctx context.Context, c *ssh.Client, account string) (string, error) {
	bin, dir := a.m.Fetch.pkgacct()
	sess, err := c.NewSession()
	if err != nil {
		return "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("ssh session: %w", err))
	}
	defer sess.Close()
	var stdout, stderr limitedBuffer
	stdout.limit, stderr.limit = maxPkgacctOutput, 4096
	sess.Stdout, sess.Stderr = &stdout, &stderr
	// A bound on the whole run: closing the connection ends Run (closing
	// the session alone waits for the remote command to exit).
	timeout := orDefault(a.m.Fetch.PkgacctTimeout, defaultPkgacctTimeout)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := closeOnDone(rctx, c)
	err = sess.Run(bin + " " + account + " " + dir)
	stop()
	if errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "pkgacct %s did not finish within %s", account, timeout)
	}
	if err != nil {
		return "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE,
			fmt.Errorf("pkgacct %s: %w: %s", account, err, Printable(strings.TrimSpace(stderr.String()))))
	}
	return PkgacctArchive(stdout.Bytes(), account, dir)
}

// PkgacctArchive is the archive pkgacct says it wrote ("pkgacctfile is:
// PATH"), or DIR/cpmove-ACCOUNT.tar.gz when it names none. A path outside
// dir or not an archive is refused: the server's output is not trusted.
func PkgacctArchive(out []byte, account, dir string) (string, error) {
	p := path.Join(dir, "cpmove-"+account+".tar.gz")
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "pkgacctfile is:"); ok {
			p = strings.TrimSpace(rest)
		}
	}
	if err := validate.CpanelRemotePath(p); err != nil {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "pkgacct named %q: %v", p, err)
	}
	if path.Dir(p) != path.Clean(dir) {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "pkgacct named %q, outside %s", p, dir)
	}
	return p, nil
}

// download copies remote into the import area at dst: a hidden temporary
// name first (analysis refuses hidden names), synced, then renamed. A
// .tar is gzipped on the way. A download over limit bytes is refused and
// its temporary file removed.
func (o FetchOptions) download(ctx context.Context, sc *sftp.Client, root *os.Root, remote, dst string, limit uint64, progress func(done, total uint64)) (uint64, string, error) {
	f, err := sc.Open(remote)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no %s on the server", remote)
	}
	if err != nil {
		return 0, "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("open %s: %w", remote, err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("stat %s: %w", remote, err))
	}
	if !st.Mode().IsRegular() {
		return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%s is not a regular file", remote)
	}
	if uint64(st.Size()) > limit {
		return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%s is %d bytes; the limit is %d", remote, st.Size(), limit)
	}
	// Refused before a byte moves rather than when the disk is full: the
	// import area shares its disk with the accounts. A margin of 1 GiB
	// is kept (a .tar is smaller once gzipped: the check is on the safe
	// side).
	// The size is the server's word: what is written is capped as well,
	// at the limit and at the free space measured now (less the margin),
	// and the free space is measured again as the download goes.
	free, err := o.freeBytes(root.Name())
	if err != nil {
		return 0, "", fmt.Errorf("import area: %w", err)
	}
	if uint64(st.Size())+freeMargin > free {
		return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE,
			"%s is %d bytes; the import area has %d free (keeping %d)", remote, st.Size(), free, uint64(freeMargin))
	}
	room := free - freeMargin
	if o.afterStat != nil {
		o.afterStat()
	}
	dir := path.Dir(dst)
	if err := root.MkdirAll(dir, 0o750); err != nil {
		return 0, "", fmt.Errorf("import area: %w", err)
	}
	tmp := path.Join(dir, "."+path.Base(dst)+".part")
	// A retried task starts over: O_TRUNC drops what a crash left.
	w, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, "", fmt.Errorf("import area: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			w.Close()
			_ = root.Remove(tmp)
		}
	}()
	h := sha256.New()
	out := io.MultiWriter(w, h)
	var gz *gzip.Writer
	if strings.HasSuffix(remote, ".tar") {
		gz = gzip.NewWriter(out)
		out = gz
	}
	// WriteTo reads ahead with concurrent requests (a sequential copy
	// waits one round trip per 32 KiB). The server may grow the file
	// after Stat: the counting writer holds the limit anyway; ctx ending
	// closes the client (closeOnDone), which ends WriteTo.
	cw := &capWriter{w: out, limit: limit, room: room, dir: root.Name(), freeBytes: o.freeBytes, total: uint64(st.Size()), progress: progress}
	if _, err := f.WriteTo(cw); err != nil {
		if errors.Is(err, errOverLimit) {
			return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%s is over the limit of %d bytes", remote, limit)
		}
		if errors.Is(err, errNoRoom) {
			return 0, "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE,
				"%s grew past the import area's free space (keeping %d bytes free): the download was stopped and removed", remote, uint64(freeMargin))
		}
		if ctx.Err() != nil {
			return 0, "", ctx.Err()
		}
		return 0, "", actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("download %s: %w", remote, err))
	}
	n := cw.n
	if gz != nil {
		if err := gz.Close(); err != nil {
			return 0, "", err
		}
	}
	if err := w.Sync(); err != nil {
		return 0, "", err
	}
	if err := w.Close(); err != nil {
		return 0, "", err
	}
	if err := root.Rename(tmp, dst); err != nil {
		return 0, "", fmt.Errorf("import area: %w", err)
	}
	ok = true
	if d, err := root.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

var (
	errOverLimit = errors.New("over the size limit")
	errNoRoom    = errors.New("the import area is running out of space")
)

// freeMargin is the space a fetch leaves free in the import area.
const freeMargin = 1 << 30

// capWriter counts what passes, refuses to pass more than limit or more
// than room (the free space when the download started, less the margin;
// the count is of bytes before gzip, on the safe side), checks the free
// space of dir again every freeRecheck bytes and reports the count to
// progress.
type capWriter struct {
	w         io.Writer
	n         uint64
	limit     uint64
	room      uint64
	dir       string
	freeBytes func(dir string) (uint64, error)
	checked   uint64
	total     uint64
	progress  func(done, total uint64)
}

func (c *capWriter) Write(p []byte) (int, error) {
	next := c.n + uint64(len(p))
	if next > c.limit {
		return 0, errOverLimit
	}
	if next > c.room {
		return 0, errNoRoom
	}
	if next-c.checked >= freeRecheck {
		free, err := c.freeBytes(c.dir)
		if err != nil {
			return 0, err
		}
		if free < freeMargin+uint64(len(p)) {
			return 0, errNoRoom
		}
		c.checked = next
	}
	n, err := c.w.Write(p)
	c.n += uint64(n)
	if c.progress != nil {
		c.progress(c.n, c.total)
	}
	return n, err
}

// progress returns the fetch's progress callback: the first report at
// once, then at most one a second (each is an etcd write on the server).
func (a *Fetch) progress() func(done, total uint64) {
	send := a.m.Fetch.Progress
	if send == nil || a.task == "" {
		return nil
	}
	var last time.Time
	return func(done, total uint64) {
		if now := time.Now(); now.Sub(last) >= time.Second {
			last = now
			send(&agentpb.BackupProgress{TaskId: a.task, BytesDone: done, TotalBytes: total})
		}
	}
}

func fileSHA256(root *os.Root, name string) (string, error) {
	f, err := root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Printable keeps the printable ASCII of s and puts '?' for any other
// byte (newlines and tabs too): the old server's text goes into errors,
// the audit log and terminals.
func Printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
