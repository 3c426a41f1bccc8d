package migrate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/validate"
)

// handshakeTimeout bounds a connection's unauthenticated phase.
const handshakeTimeout = 30 * time.Second

// Bounds on what the endpoint serves at once: connections (most of them
// unauthenticated probes: the port is open to the Internet) and sessions
// per connection (a sync runs one rsync and one database at a time).
const (
	maxConns           = 64
	maxSessionsPerConn = 4
)

// permMigration is the key of Permissions.Extensions that carries the
// migration id a connection authenticated for.
const permMigration = "npanel-migration"

// Listen binds the endpoint on listen (host:port; ":0" picks a port) and
// serves it until ctx is done. It returns the bound address once
// connections are accepted. env is the agent's: its DataDir holds the
// host key and the authorizations, its Profile the paths.
func (m *Module) Listen(ctx context.Context, env *actions.Env, listen string) (string, error) {
	m.smu.Lock()
	defer m.smu.Unlock()
	if m.env != nil {
		return "", errors.New("migration endpoint already started")
	}
	m.status = services.Status{Name: ServiceName, State: services.Failed, Listen: []string{listen}, Since: time.Now()}
	hk, err := ensureHostKey(env.DataDir)
	if err != nil {
		m.status.Error = err.Error()
		return "", fmt.Errorf("migration endpoint: host key: %w", err)
	}
	if err := m.pruneExpired(env.DataDir, time.Now()); err != nil {
		env.Logger.Warn("migration endpoint: prune expired authorizations", "err", err)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		m.status.Error = err.Error()
		return "", fmt.Errorf("migration endpoint (--migration-listen): %w", err)
	}
	m.env, m.hostKey, m.listen, m.addr = env, hk, listen, ln.Addr().String()
	if _, port, _ := net.SplitHostPort(listen); port == "0" {
		// Port picked by the kernel (tests): report the real one.
		m.listen = m.addr
	}
	m.status = services.Status{Name: ServiceName, State: services.Running, Listen: []string{m.listen},
		Since: time.Now(), Version: "npanel"}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: m.authenticate,
		MaxAuthTries:      3,
		ServerVersion:     "SSH-2.0-npanel-migrate",
	}
	cfg.AddHostKey(hk)
	log := env.Logger.With("component", ServiceName)
	log.Info("migration endpoint listening", "addr", m.addr)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer close(m.stopped)
		var wg sync.WaitGroup
		defer wg.Wait()
		slots := make(chan struct{}, maxConns)
		for {
			nc, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil {
					log.Error("accept", "err", err)
					m.smu.Lock()
					m.status = services.Status{Name: ServiceName, State: services.Failed, Listen: []string{listen}, Since: time.Now(), Error: err.Error()}
					m.smu.Unlock()
				}
				return
			}
			select {
			case slots <- struct{}{}:
			default:
				log.Warn("too many connections; refused", "remote", nc.RemoteAddr().String())
				nc.Close()
				continue
			}
			wg.Go(func() {
				defer func() { <-slots }()
				m.serveConn(ctx, log, nc, cfg)
			})
		}
	}()
	return m.addr, nil
}

// Stopped is closed once a started endpoint has stopped (its context
// ended): the port is free again and no command it ran is left.
func (m *Module) Stopped() <-chan struct{} { return m.stopped }

// Status is the endpoint as a service of the node's report; ok is false
// when it was never started.
func (m *Module) Status() (services.Status, bool) {
	m.smu.Lock()
	defer m.smu.Unlock()
	return m.status, m.status.Name != ""
}

// endpoint returns the configured listen address and host key, or an
// UNAVAILABLE error when the endpoint does not run.
func (m *Module) endpoint() (string, ssh.Signer, error) {
	m.smu.Lock()
	defer m.smu.Unlock()
	if m.env == nil {
		return "", nil, unavailable("the migration endpoint does not run on this node (--migration-listen)")
	}
	return m.listen, m.hostKey, nil
}

func (m *Module) dataDir() string {
	m.smu.Lock()
	defer m.smu.Unlock()
	return m.env.DataDir
}

// authenticate is the endpoint's only way in: a key an unexpired
// authorization names, for its account, from one of its addresses.
func (m *Module) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	remote := remoteAddr(meta.RemoteAddr())
	auths, err := authorizations(m.dataDir())
	if err != nil {
		return nil, fmt.Errorf("read authorizations: %w", err)
	}
	want := key.Marshal()
	for _, a := range auths {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a.PublicKey))
		if err != nil || !bytes.Equal(pk.Marshal(), want) {
			continue
		}
		reason := ""
		switch {
		case meta.User() != a.Username:
			reason = "user does not match the authorization"
		case a.expired(time.Now()):
			reason = "authorization expired"
		case !remote.IsValid() || !a.allows(remote):
			reason = "source address not authorized"
		}
		if reason != "" {
			m.env.Logger.Warn("migration endpoint: login refused", "component", ServiceName, "migration", a.MigrationID,
				"remote", meta.RemoteAddr().String(), "user", meta.User(), "reason", reason)
			return nil, errors.New(reason)
		}
		return &ssh.Permissions{Extensions: map[string]string{permMigration: a.MigrationID}}, nil
	}
	m.env.Logger.Warn("migration endpoint: login refused", "component", ServiceName, "remote", meta.RemoteAddr().String(),
		"user", meta.User(), "key", ssh.FingerprintSHA256(key), "reason", "unknown key")
	return nil, errors.New("unknown key")
}

func remoteAddr(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// currentAuthorization re-reads migration id's authorization: a session
// runs a command only while it still exists and has not expired.
func (m *Module) currentAuthorization(id string) (*authorization, error) {
	auths, err := authorizations(m.dataDir())
	if err != nil {
		return nil, err
	}
	for _, a := range auths {
		if a.MigrationID == id {
			if a.expired(time.Now()) {
				return nil, errors.New("authorization expired")
			}
			return a, nil
		}
	}
	return nil, errors.New("authorization revoked")
}

func (m *Module) track(id string, sc *ssh.ServerConn, add bool) {
	m.smu.Lock()
	defer m.smu.Unlock()
	if add {
		if m.conns[id] == nil {
			m.conns[id] = map[*ssh.ServerConn]bool{}
		}
		m.conns[id][sc] = true
		return
	}
	delete(m.conns[id], sc)
	if len(m.conns[id]) == 0 {
		delete(m.conns, id)
	}
}

// closeConns ends every open connection of migration id (revoked).
func (m *Module) closeConns(id string) {
	m.smu.Lock()
	defer m.smu.Unlock()
	for sc := range m.conns[id] {
		sc.Close()
	}
}

func (m *Module) serveConn(ctx context.Context, log *slog.Logger, nc net.Conn, cfg *ssh.ServerConfig) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		log.Debug("handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	id := sc.Permissions.Extensions[permMigration]
	log = log.With("migration", id, "remote", nc.RemoteAddr().String())
	m.track(id, sc, true)
	defer m.track(id, sc, false)
	// A revoke between the key check and track found nothing to close:
	// with the connection tracked, the authorization is looked at again
	// (revoke removes it before closing what it tracks).
	if _, err := m.currentAuthorization(id); err != nil {
		log.Warn("connection closed at login", "reason", err.Error())
		sc.Close()
		// The connection's channels are read until they close, or its
		// reader would block on them.
		go ssh.DiscardRequests(reqs)
		for nch := range chans {
			_ = nch.Reject(ssh.Prohibited, "authorization revoked")
		}
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// A closed connection (revoked, client gone) kills what runs.
		_ = sc.Wait()
		cancel()
	}()
	go func() {
		<-ctx.Done()
		sc.Close()
	}()
	// Global requests (tcpip-forward ...) are all refused.
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxSessionsPerConn)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			log.Warn("channel refused", "type", nch.ChannelType())
			_ = nch.Reject(ssh.Prohibited, "only sessions")
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			_ = nch.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			<-slots
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			m.session(ctx, log, id, ch, creqs)
		})
	}
}

// session serves one session channel: one exec request, nothing else.
func (m *Module) session(ctx context.Context, log *slog.Logger, id string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	started := false
	var wg sync.WaitGroup
	defer wg.Wait()
	for req := range reqs {
		if req.Type != "exec" || started {
			if req.Type != "eow@openssh.com" && req.Type != "keepalive@openssh.com" {
				log.Warn("session request refused", "type", req.Type)
			}
			_ = req.Reply(false, nil)
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			_ = req.Reply(false, nil)
			continue
		}
		run, err := m.prepare(id, p.Command)
		if err != nil {
			log.Warn("exec refused", "command", truncate(p.Command), "err", err)
			_ = req.Reply(false, nil)
			_, _ = fmt.Fprintf(ch.Stderr(), "npanel migration endpoint: %v\n", err)
			_ = ch.Close()
			continue
		}
		started = true
		_ = req.Reply(true, nil)
		wg.Go(func() {
			status := run(ctx, ch)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			_ = ch.Close()
		})
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// prepare checks an exec request against migration id's authorization and
// returns what runs it.
func (m *Module) prepare(id, command string) (func(context.Context, ssh.Channel) uint32, error) {
	cmd, err := ParseCommand(command)
	if err != nil {
		return nil, err
	}
	a, err := m.currentAuthorization(id)
	if err != nil {
		return nil, err
	}
	m.smu.Lock()
	env := m.env
	m.smu.Unlock()
	log := env.Logger.With("component", ServiceName, "migration", id)
	switch cmd.Kind {
	case Rsync:
		home, uid, gid, err := accountHome(env, a.Username)
		if err != nil {
			return nil, err
		}
		if err := ownHome(home, uid, gid); err != nil {
			return nil, err
		}
		argv := cmd.rsyncArgv(env.Profile.Migrate().Rsync, home)
		cred := &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
		return func(ctx context.Context, ch ssh.Channel) uint32 {
			return runRsync(ctx, log, argv, cred, ch)
		}, nil
	case RestoreDatabase, ChecksumDatabase, RestoreTables:
		if !a.database(cmd.Engine, cmd.Database) {
			return nil, refuse("database %s/%s is not part of this migration", cmd.Engine, cmd.Database)
		}
		if err := validate.DatabaseName(cmd.Database, a.Username); err != nil {
			return nil, refuse("%v", err)
		}
		if m.db == nil {
			return nil, errors.New("no database module on this node")
		}
		switch cmd.Kind {
		case ChecksumDatabase:
			return func(ctx context.Context, ch ssh.Channel) uint32 {
				sums, err := m.db.Checksums(ctx, env, cmd.Engine, cmd.Database)
				if err == nil {
					err = json.NewEncoder(ch).Encode(sums)
				}
				if err != nil {
					log.Warn("checksum database", "database", cmd.Database, "engine", cmd.Engine, "err", err)
					_, _ = fmt.Fprintf(ch.Stderr(), "checksum %s: %v\n", cmd.Database, err)
					return 1
				}
				return 0
			}, nil
		case RestoreTables:
			return func(ctx context.Context, ch ssh.Channel) uint32 {
				if err := m.restoreTables(ctx, env, cmd.Database, ch); err != nil {
					log.Error("restore tables", "database", cmd.Database, "engine", cmd.Engine, "err", err)
					_, _ = fmt.Fprintf(ch.Stderr(), "restore tables of %s: %v\n", cmd.Database, err)
					return 1
				}
				return 0
			}, nil
		}
		return func(ctx context.Context, ch ssh.Channel) uint32 {
			if err := m.restore(ctx, env, cmd.Engine, cmd.Database, ch); err != nil {
				log.Error("restore database", "database", cmd.Database, "engine", cmd.Engine, "err", err)
				_, _ = fmt.Fprintf(ch.Stderr(), "restore %s: %v\n", cmd.Database, err)
				return 1
			}
			return 0
		}, nil
	}
	return nil, refuse("unknown command")
}

// accountHome is username's home on this node and its owner: a real
// directory (not a symlink) under the profile's home base, owned by the
// account's user, which is not a system user.
func accountHome(env *actions.Env, username string) (string, uint32, uint32, error) {
	u, err := user.Lookup(username)
	if err != nil {
		return "", 0, 0, fmt.Errorf("account %s: %w", username, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uint32(uid) < env.Profile.MinUID {
		return "", 0, 0, fmt.Errorf("account %s: uid %s is not an account's", username, u.Uid)
	}
	home := filepath.Join(env.Profile.HomeBase, username)
	fi, err := os.Lstat(home)
	if err != nil {
		return "", 0, 0, fmt.Errorf("account %s: home: %w", username, err)
	}
	if !fi.IsDir() {
		return "", 0, 0, fmt.Errorf("account %s: home %s is not a directory", username, home)
	}
	return home, uint32(uid), uint32(gid), nil
}

// ownHome makes the account's home directory its own (the receiver, which
// runs as the account, sets its mode and times and writes in it). It is
// changed through a descriptor opened without following a symlink.
func ownHome(home string, uid, gid uint32) error {
	f, err := os.OpenFile(home, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("home: %w", err)
	}
	defer f.Close()
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return fmt.Errorf("home: %w", err)
	}
	return nil
}

// runRsync runs rsync's receiving server with the channel as its stdio
// and returns its exit status. It runs as cred (the account's uid and
// gid, no supplementary groups): whatever the source sends (setuid files,
// other owners, a symlink then a file "under" it) it can write only what
// the account itself could.
func runRsync(ctx context.Context, log *slog.Logger, argv []string, cred *syscall.Credential, ch ssh.Channel) uint32 {
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	c.Dir = "/"
	c.Stdout, c.Stderr = ch, ch.Stderr()
	groupKill(c)
	c.SysProcAttr.Credential = cred
	c.WaitDelay = 5 * time.Second
	stdin, err := c.StdinPipe()
	if err != nil {
		return 1
	}
	if err := c.Start(); err != nil {
		log.Error("start rsync", "err", err)
		return 1
	}
	// Not waited for: it ends when the client closes its side, which it
	// does after the exit status this function returns.
	go func() {
		_, _ = io.Copy(stdin, ch)
		stdin.Close()
	}()
	err = c.Wait()
	return exitStatus(err)
}

func exitStatus(err error) uint32 {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return uint32(ee.ExitCode())
	}
	return 1
}

// restore replaces database name with the dump read from r, which is not
// trusted (a malicious source, a stolen key): its guard line must come
// first, and it is loaded the way the db module imports a foreign dump,
// never as the database admin: MariaDB's by a throw-away user holding
// privileges on that database only, its client in sandbox mode
// (db.ImportDump); PostgreSQL's by a throw-away role that is no superuser
// and owns only that database, psql refusing every meta-command of the
// dump (db.ImportPostgresDump). The database is created empty first
// (dropped: it holds an earlier pass, nothing live before the cutover).
// A dump without its completion line fails.
func (m *Module) restore(ctx context.Context, env *actions.Env, engine, name string, r io.Reader) error {
	cc, err := m.db.RestoreCommand(ctx, env, engine, name)
	if err != nil {
		return err
	}
	dc, err := m.db.DumpCommand(ctx, env, engine, name)
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := cc.ReadHeader(br)
	if err != nil {
		return err
	}
	tail := &tailWriter{}
	dump := io.TeeReader(io.MultiReader(bytes.NewReader(head), br), tail)
	switch engine {
	case validate.EngineMariaDB:
		err = m.db.ImportDump(ctx, env, name, dump)
	case validate.EnginePostgreSQL:
		err = m.db.ImportPostgresDump(ctx, env, name, dump)
	default:
		err = fmt.Errorf("engine %q: no import", engine)
	}
	if err != nil {
		return err
	}
	if dc.Trailer != "" && !bytes.Contains(tail.b, []byte("\n"+dc.Trailer)) {
		return fmt.Errorf("the dump ended after %d bytes without its completion line: incomplete", tail.n)
	}
	return nil
}

// restoreTables loads an untrusted dump of some of MariaDB database
// name's tables into it (the migration's last pass, after its
// fingerprints showed which changed) the way restore loads a whole one:
// guard line first, a throw-away user with rights on that database only
// (db.ImportTables), completion line required. The source checks the
// result against its fingerprints and replaces the whole database when
// they differ.
func (m *Module) restoreTables(ctx context.Context, env *actions.Env, name string, r io.Reader) error {
	cc, err := m.db.RestoreCommand(ctx, env, validate.EngineMariaDB, name)
	if err != nil {
		return err
	}
	dc, err := m.db.DumpCommand(ctx, env, validate.EngineMariaDB, name)
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := cc.ReadHeader(br)
	if err != nil {
		return err
	}
	tail := &tailWriter{}
	if err := m.db.ImportTables(ctx, env, name, io.TeeReader(io.MultiReader(bytes.NewReader(head), br), tail)); err != nil {
		return err
	}
	if dc.Trailer != "" && !bytes.Contains(tail.b, []byte("\n"+dc.Trailer)) {
		return fmt.Errorf("the dump ended after %d bytes without its completion line: incomplete", tail.n)
	}
	return nil
}

// tailWriter keeps the last bytes written to it.
type tailWriter struct {
	b []byte
	n int64
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	t.b = append(t.b, p...)
	if len(t.b) > 1024 {
		t.b = append(t.b[:0], t.b[len(t.b)-1024:]...)
	}
	return len(p), nil
}

func unavailable(format string, args ...any) error {
	return actions.Fail(agentpbUnavailable, format, args...)
}

// groupKill runs c in a process group of its own and, when its context
// ends, kills the whole group: rsync's ssh child (source) or rsync's
// receiver child (target) would otherwise outlive it.
func groupKill(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error {
		if c.Process == nil {
			return nil
		}
		return syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
}
