package migrate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/protos/agentpb"
)

// hostKeyAlias is the name the target's host key is pinned under in the
// temporary known_hosts: the key is checked whatever address the
// endpoint is reached at.
const hostKeyAlias = "npanel-migration-target"

// rsyncVanished is rsync's exit status when source files vanished during
// the transfer: normal for a live home, and the final pass (suspended)
// catches up. On the final pass it is a failure: the home is suspended,
// so something still writes in it, and what it wrote would be left
// behind.
const rsyncVanished = 24

// vanishedOnly says whether rsync's exit status is the files-vanished one
// of a pass that is not the final one (then a success).
func vanishedOnly(status uint32, final bool) bool {
	return status == rsyncVanished && !final
}

// Apply pushes the home and the databases. A failed item is reported in
// failed (partial) and the others still run; the action fails as a whole
// only when nothing could start (no key, no account).
func (a *SyncMigration) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	start := time.Now()
	id := r.GetMigrationId()
	signer, err := a.m.migrationKey(env.DataDir, id, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "migration %s has no key on this node (migration_key first)", id)
	} else if err != nil {
		return nil, err
	}
	home, uid, gid, err := accountHome(env, r.GetUsername())
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "%v", err)
	}
	host, port, _ := targetEndpoint(r.GetTargetEndpoint())
	hostKey, _ := publicKey("target host key", r.GetTargetHostKey())
	res := &agentpb.SyncMigrationResult{Uid: uid, Gid: gid}
	log := env.Logger.With("migration", id)

	var fileErr error
	files := func() {
		if r.GetFiles() {
			var st rsyncStats
			st, fileErr = a.syncFiles(ctx, env, home, host, port, hostKey, uid, gid)
			res.Files, res.FileBytes = st.files, st.sent
		}
	}
	dbRes := &agentpb.SyncMigrationResult{}
	dbs := func() {
		if len(r.GetDatabases()) > 0 {
			a.syncDatabases(ctx, env, signer, hostKey, dbRes)
		}
	}
	if r.GetFinal() {
		// The account is down: the home and the databases go at once
		// (independent; each its own connection).
		done := make(chan struct{})
		go func() {
			defer close(done)
			dbs()
		}()
		files()
		<-done
	} else {
		files()
		dbs()
	}
	if fileErr != nil {
		log.Warn("sync files", "err", fileErr)
		res.Failed = append(res.Failed, &agentpb.BackupItemFailure{Item: "files", Error: fileErr.Error()})
	}
	res.Databases, res.DatabaseBytes = dbRes.Databases, dbRes.DatabaseBytes
	res.Failed = append(res.Failed, dbRes.Failed...)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.DurationMs = uint64(time.Since(start).Milliseconds())
	return res, nil
}

type rsyncStats struct{ files, sent uint64 }

// syncFiles runs rsync -aHAX --no-D --numeric-ids over OpenSSH's client,
// both as the account (uid:gid, no supplementary groups): the home is the
// tenant's and changes while the site is live, so rsync reads it with the
// tenant's rights, never root's (a symlink swapped in mid-transfer reaches
// nothing the tenant could not read itself). A file the account cannot
// read fails the files item; root does not copy it. The one-time key and
// the known_hosts are copied for this run into a fresh directory of the
// account's (0700, the key 0400), removed when it ends. No shell is
// involved: rsync splits -e on spaces itself, and every word of it is a
// fixed path or one the agent made (no spaces in them, checked).
func (a *SyncMigration) syncFiles(ctx context.Context, env *actions.Env, home, host string, port int, hostKey ssh.PublicKey, uid, gid uint32) (rsyncStats, error) {
	r := a.req
	mp := env.Profile.Migrate()
	dir, key, kh, cleanup, err := accountSSHFiles(env.DataDir, r.GetMigrationId(), hostKey, uid, gid)
	if err != nil {
		return rsyncStats{}, err
	}
	defer cleanup()
	for _, p := range []string{mp.SSH, key, kh} {
		if strings.ContainsAny(p, " \t\n'\"\\") {
			return rsyncStats{}, fmt.Errorf("path %q cannot be given to rsync -e", p)
		}
	}
	rsh := strings.Join([]string{mp.SSH, "-F", "/dev/null", "-i", key, "-p", strconv.Itoa(port),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + kh,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=" + hostKeyAlias,
		"-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=30",
		"-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes"}, " ")
	// --no-D: no device nodes or special files (the target refuses D).
	args := []string{"-aHAX", "--no-D", "--numeric-ids", "--partial", "--stats", "-e", rsh}
	if r.GetFinal() {
		args = append(args, "--delete")
	}
	h := host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	args = append(args, filepath.Clean(home)+"/", r.GetUsername()+"@"+h+":.")
	c := exec.CommandContext(ctx, mp.Rsync, args...)
	// HOME: ssh insists on one; it is the run's own directory (-F
	// /dev/null, known hosts and key given).
	c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "LC_ALL=C"}
	c.Dir = dir
	var errOut tailWriter
	stdout := &capWriter{max: 64 << 10}
	c.Stdout, c.Stderr = stdout, &errOut
	groupKill(c)
	c.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	c.WaitDelay = 5 * time.Second
	err = c.Run()
	st := parseStats(stdout.b)
	if err != nil && !vanishedOnly(exitStatus(err), r.GetFinal()) {
		return st, fmt.Errorf("rsync: %w: %s", err, bytes.TrimSpace(errOut.b))
	}
	return st, nil
}

// accountSSHFiles makes a fresh directory for one rsync run of the
// account's: its copy of migration id's private key (0400) and a
// known_hosts holding the target's key under hostKeyAlias (0400). Both are
// written while the directory is still root's, and only then handed to
// the account (files first, the directory last), so the tenant never
// holds a directory root still writes in. cleanup removes it all.
func accountSSHFiles(dataDir, id string, hk ssh.PublicKey, uid, gid uint32) (dir, key, kh string, cleanup func(), err error) {
	pem, err := os.ReadFile(keyPath(dataDir, id))
	if err != nil {
		return "", "", "", nil, fmt.Errorf("migration key: %w", err)
	}
	dir, err = os.MkdirTemp("", "npanel-migrate-"+id+"-")
	if err != nil {
		return "", "", "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	if err = os.Chmod(dir, 0o700); err != nil {
		return "", "", "", nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", "", "", nil, err
	}
	defer root.Close()
	files := []struct {
		name string
		data []byte
	}{
		{"id", pem},
		{"known_hosts", []byte(hostKeyAlias + " " + string(ssh.MarshalAuthorizedKey(hk)))},
	}
	for _, f := range files {
		if err = writeOwned(root, f.name, f.data, uid, gid); err != nil {
			return "", "", "", nil, err
		}
	}
	if err = os.Chown(dir, int(uid), int(gid)); err != nil {
		return "", "", "", nil, err
	}
	return dir, filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts"), cleanup, nil
}

// writeOwned creates name in root (it must not exist), 0400, owned by
// uid:gid.
func writeOwned(root *os.Root, name string, data []byte, uid, gid uint32) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o400)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chown(int(uid), int(gid))
	}
	if werr == nil {
		werr = f.Chmod(0o400)
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// capWriter keeps the first max bytes written to it (rsync's --stats
// report is short and comes last, after no file list: no -v).
type capWriter struct {
	b   []byte
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

var (
	statFiles = regexp.MustCompile(`(?m)^Number of files: [0-9,]+ \(reg: ([0-9,]+)`)
	statSent  = regexp.MustCompile(`(?m)^Total bytes sent: ([0-9,]+)`)
)

// parseStats reads the regular files in the home and the bytes sent from
// rsync's --stats report.
func parseStats(out []byte) rsyncStats {
	num := func(re *regexp.Regexp) uint64 {
		m := re.FindSubmatch(out)
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseUint(strings.ReplaceAll(string(m[1]), ",", ""), 10, 64)
		return n
	}
	return rsyncStats{files: num(statFiles), sent: num(statSent)}
}

// syncDatabases streams each database's dump into restore-database on the
// target, over one SSH connection of the migration's key.
func (a *SyncMigration) syncDatabases(ctx context.Context, env *actions.Env, signer ssh.Signer, hostKey ssh.PublicKey, res *agentpb.SyncMigrationResult) {
	r := a.req
	fail := func(item string, err error) {
		res.Failed = append(res.Failed, &agentpb.BackupItemFailure{Item: item, Error: err.Error()})
	}
	if a.m.db == nil {
		for _, d := range r.GetDatabases() {
			fail("database:"+d.GetName(), errors.New("no database module on this node"))
		}
		return
	}
	conn, err := dialTarget(ctx, r.GetTargetEndpoint(), r.GetUsername(), signer, hostKey)
	if err != nil {
		for _, d := range r.GetDatabases() {
			fail("database:"+d.GetName(), err)
		}
		return
	}
	defer conn.Close()
	for _, d := range r.GetDatabases() {
		var n int64
		err := errFull
		if r.GetFinal() {
			// The source is suspended: only what changed since the
			// earlier pass is sent, unless that is uncertain.
			n, err = a.pushChangedTables(ctx, env, conn, d.GetEngine(), d.GetName())
			if err != nil {
				env.Logger.Info("final database pass: copying the whole database", "migration", r.GetMigrationId(),
					"database", d.GetName(), "why", err)
			}
		}
		if err != nil {
			var m int64
			m, err = a.pushDatabase(ctx, env, conn, d.GetEngine(), d.GetName())
			n += m
		}
		res.DatabaseBytes += uint64(n)
		if err != nil {
			env.Logger.Warn("sync database", "migration", r.GetMigrationId(), "database", d.GetName(), "err", err)
			fail("database:"+d.GetName(), err)
			continue
		}
		res.Databases = append(res.Databases, d.GetName())
	}
}

// dialTarget opens an SSH connection to the endpoint with the migration's
// key, the target's host key pinned.
func dialTarget(ctx context.Context, endpoint, user string, signer ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return nil, fmt.Errorf("dial target endpoint: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	cc, chans, reqs, err := ssh.NewClientConn(nc, endpoint, &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(hostKey),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("target endpoint: %w", err)
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// pushDatabase runs the dump tool into a restore-database session and
// returns the bytes sent. A dump that fails or lacks its completion line
// closes the session without EOF: the target then sees a dump without
// its trailer and fails its side too.
func (a *SyncMigration) pushDatabase(ctx context.Context, env *actions.Env, conn *ssh.Client, engine, name string) (int64, error) {
	dc, err := a.m.db.DumpCommand(ctx, env, engine, name)
	if err != nil {
		return 0, err
	}
	if ok, err := a.m.db.DatabaseExists(ctx, env, engine, name); err != nil {
		return 0, err
	} else if !ok {
		return 0, fmt.Errorf("database %q does not exist on this node", name)
	}
	return pushDump(ctx, conn, dc, "restore-database "+engine+" "+name)
}

// pushDump runs the dump tool dc into a session of command on the target
// and returns the bytes sent.
func pushDump(ctx context.Context, conn *ssh.Client, dc db.Command, command string) (int64, error) {
	sess, err := conn.NewSession()
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return 0, err
	}
	var remoteErr tailWriter
	sess.Stderr = &remoteErr
	if err := sess.Start(command); err != nil {
		return 0, fmt.Errorf("target refused %s: %w: %s", command, err, bytes.TrimSpace(remoteErr.b))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dump := exec.CommandContext(ctx, dc.Argv[0], dc.Argv[1:]...)
	dump.Env = dc.Env
	out, err := dump.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var dumpErr tailWriter
	dump.Stderr = &dumpErr
	groupKill(dump)
	dump.WaitDelay = 5 * time.Second
	if err := dump.Start(); err != nil {
		return 0, err
	}
	tail := &tailWriter{}
	n, cerr := io.Copy(stdin, io.TeeReader(bufio.NewReaderSize(out, 256<<10), tail))
	derr := dump.Wait()
	if derr == nil && cerr == nil && (dc.Trailer == "" || bytes.Contains(tail.b, []byte("\n"+dc.Trailer))) {
		_ = stdin.Close() // EOF: the target's client finishes
	} else {
		// No EOF: the target sees the channel go without the dump's
		// completion line and fails its side.
		_ = sess.Close()
	}
	werr := sess.Wait()
	switch {
	case derr != nil:
		return n, fmt.Errorf("%s: %w: %s", filepath.Base(dc.Argv[0]), derr, bytes.TrimSpace(dumpErr.b))
	case cerr != nil:
		return n, fmt.Errorf("send dump: %w: %s", cerr, bytes.TrimSpace(remoteErr.b))
	case dc.Trailer != "" && !bytes.Contains(tail.b, []byte("\n"+dc.Trailer)):
		return n, fmt.Errorf("%s wrote %d bytes without its completion line", filepath.Base(dc.Argv[0]), n)
	case werr != nil:
		return n, fmt.Errorf("restore on the target: %w: %s", werr, bytes.TrimSpace(remoteErr.b))
	}
	return n, nil
}

// errFull says a database is copied whole.
var errFull = errors.New("whole database")

// maxSums bounds a target's fingerprint reply (about 200 bytes a table).
const maxSums = 16 << 20

// pushChangedTables is the last pass of a database when it can be done
// table by table: the source's and the target's fingerprints (taken at
// once, the source suspended) name the tables that changed since the
// earlier pass; only those are dumped into restore-tables, then the
// target's fingerprint must equal the source's. Any doubt (a table on one
// side only, other objects changed, a checksum missing, a PostgreSQL
// database with changes, a failed load, a result that differs) is an
// error after which the caller copies the whole database, which replaces
// whatever this left. It returns the dump bytes sent.
func (a *SyncMigration) pushChangedTables(ctx context.Context, env *actions.Env, conn *ssh.Client, engine, name string) (int64, error) {
	var local db.DatabaseSums
	var lerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		local, lerr = a.m.db.Checksums(ctx, env, engine, name)
	}()
	remote, rerr := remoteSums(ctx, conn, engine, name)
	<-done
	if lerr != nil {
		return 0, fmt.Errorf("fingerprint here: %w", lerr)
	}
	if rerr != nil {
		return 0, fmt.Errorf("fingerprint on the target: %w", rerr)
	}
	changed, ok, why := db.ChangedTables(local, remote)
	if !ok {
		return 0, errors.New(why)
	}
	log := env.Logger.With("migration", a.req.GetMigrationId(), "database", name)
	if len(changed) == 0 {
		log.Info("final database pass: no table changed", "tables", len(local.Tables))
		return 0, nil
	}
	dc, err := a.m.db.TablesDumpCommand(ctx, env, engine, name, changed)
	if err != nil {
		return 0, err
	}
	n, err := pushDump(ctx, conn, dc, "restore-tables "+engine+" "+name)
	if err != nil {
		return n, err
	}
	after, err := remoteSums(ctx, conn, engine, name)
	if err != nil {
		return n, fmt.Errorf("fingerprint on the target after the load: %w", err)
	}
	if still, ok, why := db.ChangedTables(local, after); !ok || len(still) > 0 {
		return n, fmt.Errorf("the target differs after the load (%s%s)", why, strings.Join(still, ", "))
	}
	log.Info("final database pass: changed tables sent", "tables", len(local.Tables), "changed", len(changed), "bytes", n)
	return n, nil
}

// remoteSums reads the target's fingerprint of a database.
func remoteSums(ctx context.Context, conn *ssh.Client, engine, name string) (db.DatabaseSums, error) {
	sess, err := conn.NewSession()
	if err != nil {
		return db.DatabaseSums{}, err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	var out capWriter
	out.max = maxSums + 1
	var remoteErr tailWriter
	sess.Stdout, sess.Stderr = &out, &remoteErr
	if err := sess.Run("checksum-database " + engine + " " + name); err != nil {
		return db.DatabaseSums{}, fmt.Errorf("%w: %s", err, bytes.TrimSpace(remoteErr.b))
	}
	if len(out.b) > maxSums {
		return db.DatabaseSums{}, errors.New("fingerprint too long")
	}
	var s db.DatabaseSums
	if err := json.Unmarshal(out.b, &s); err != nil {
		return db.DatabaseSums{}, fmt.Errorf("fingerprint: %w", err)
	}
	if s.Engine != engine {
		return db.DatabaseSums{}, fmt.Errorf("fingerprint of engine %q, want %q", s.Engine, engine)
	}
	return s, nil
}
