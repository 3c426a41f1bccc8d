package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Tags of a backup's snapshots. Every snapshot of backup ID carries
// tagBackup=ID and tagKind=<kind>; a database's also tagDB=<engine>/<name>.
const (
	tagBackup = "npanel-backup"
	tagKind   = "npanel-kind"
	tagDB     = "npanel-db"
	tagZone   = "npanel-zone"

	kindFiles    = "files"
	kindDatabase = "database"
	kindState    = "state"
	kindZone     = "zone"

	// stateFile is the state snapshot's one file.
	stateFile = "npanel-state.json"
)

// stateDoc is the state snapshot: what the control plane sent plus what
// only the node knows, the password hashes that let a restore bring
// logins back without anyone knowing the passwords.
type stateDoc struct {
	BackupID  string            `json:"backup_id"`
	Username  string            `json:"username"`
	Node      string            `json:"node"`
	Time      time.Time         `json:"time"`
	Home      string            `json:"home"`
	State     json.RawMessage   `json:"state,omitempty"`
	Mailboxes map[string]string `json:"mailbox_hashes,omitempty"`
	DBUsers   []db.UserHash     `json:"database_user_hashes,omitempty"`
	// Certificates are the installed certificates the sites served, by
	// site, with their keys: bought elsewhere, they cannot be ordered
	// again.
	Certificates map[string]certKey `json:"certificates,omitempty"`
}

// certKey is an installed certificate's chain and PKCS#8 DER key.
type certKey struct {
	ChainPEM string `json:"chain_pem"`
	Key      []byte `json:"key"`
	Mail     bool   `json:"mail,omitempty"`
}

// clearKeys zeroes the keys doc holds once it is written.
func (d *stateDoc) clearKeys() {
	for _, c := range d.Certificates {
		clear(c.Key)
	}
}

func dbPath(engine, name string) string { return "databases/" + engine + "/" + name + ".sql" }

// zonePath is where a zone's BIND file is in its snapshot.
func zonePath(name string) string { return "zone/" + name + ".zone" }

func (a *BackupAccount) tags(kind string, extra ...string) []string {
	t := append([]string{tagBackup + "=" + a.req.GetBackupId(), tagKind + "=" + kind}, extra...)
	return []string{"--tag", strings.Join(t, ",")}
}

// commonArgs are the arguments of every snapshot of this backup.
func (a *BackupAccount) commonArgs(env *actions.Env) []string {
	args := []string{"--host", env.Node}
	if a.m.snapshotTime != nil {
		args = append(args, "--time", a.m.snapshotTime(a.req.GetBackupId()).Local().Format("2006-01-02 15:04:05"))
	}
	return args
}

// Apply implements actions.Action.
func (a *BackupAccount) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	s, err := a.m.open(ctx, env, a.req.GetRepository(), true)
	if err != nil {
		return nil, err
	}
	defer s.release()
	rr := s.rr
	log := logger(env)
	res := &agentpb.BackupResult{Contents: &agentpb.BackupContents{}}
	user := a.req.GetRepository().GetUsername()

	// A killed run's lock does not block a backup (its lock is shared) but
	// would block the exclusive prune after it: remove stale ones first.
	if ok, err := rr.unlockStale(ctx); err != nil {
		log.Warn("check restic locks", "err", err)
	} else if ok {
		res.UnlockedStale = true
		log.Info("removed a stale restic lock", "repository", rr.repo.location)
	}

	add := func(sum *backupSummary) {
		res.SnapshotIds = append(res.SnapshotIds, sum.SnapshotID)
		res.AddedBytes += sum.DataAdded
		res.SizeBytes += sum.TotalBytesProcessed
		res.FileCount += sum.TotalFilesProcessed
	}
	failed := func(item string, err error) {
		res.Failed = append(res.Failed, &agentpb.BackupItemFailure{Item: item, Error: rr.scrub(err.Error())})
		log.Warn("backup item failed", "item", item, "err", rr.scrub(err.Error()))
	}

	// 1. The home, maildirs included.
	home := filepath.Join(env.Profile.HomeBase, user)
	if fi, err := os.Lstat(home); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		failed("files", fmt.Errorf("home %s: %w", home, err))
	} else {
		prog := a.m.progress(a.req.GetBackupId())
		args := append(a.commonArgs(env), a.tags(kindFiles)...)
		args = append(args, "--one-file-system", home)
		var sum *backupSummary
		err := rr.withUnlockRetry(ctx, &res.UnlockedStale, func() error {
			b, err := rr.startBackup(ctx, nil, prog, args...)
			if err != nil {
				return err
			}
			sum, err = b.wait()
			return err
		})
		switch {
		case err != nil && sum != nil && sum.SnapshotID != "":
			// Exit status 3: a snapshot of what could be read; the rest is
			// a failure of the files item, never hidden.
			add(sum)
			res.Contents.Files = true
			failed("files", err)
		case err != nil:
			failed("files", err)
		default:
			add(sum)
			res.Contents.Files = true
		}
	}

	// 2. One snapshot per database, the dump streamed into restic.
	var dbUsers []db.UserHash
	engines := map[string]bool{}
	for _, d := range a.req.GetDatabases() {
		item := "database:" + d.GetName()
		sum, err := a.backupDatabase(ctx, env, rr, d)
		if err != nil {
			failed(item, err)
			continue
		}
		add(sum)
		res.Contents.Databases = append(res.Contents.Databases, d.GetName())
		engines[d.GetEngine()] = true
	}
	// Database users' hashes of every engine the account uses here.
	for _, e := range []string{validate.EngineMariaDB, validate.EnginePostgreSQL} {
		if !engines[e] || a.m.db == nil {
			continue
		}
		h, err := a.m.db.UserHashes(ctx, env, e, user)
		if err != nil {
			failed("state", fmt.Errorf("%s users: %w", e, err))
			continue
		}
		dbUsers = append(dbUsers, h...)
	}

	// 3. The zones as BIND files, one snapshot each (a restore reads them
	// one by one, like the databases).
	for _, z := range a.req.GetZoneFiles() {
		item := "zone:" + z.GetName()
		if z.GetError() != "" {
			failed(item, errors.New(z.GetError()))
			continue
		}
		sum, err := a.stdinSnapshot(ctx, env, rr, strings.NewReader(z.GetText()), zonePath(z.GetName()), a.tags(kindZone, tagZone+"="+z.GetName()))
		if err != nil {
			failed(item, err)
			continue
		}
		add(sum)
		res.Contents.Zones = append(res.Contents.Zones, z.GetName())
	}

	// 4. The state: the control plane's and the node's hashes.
	doc := stateDoc{BackupID: a.req.GetBackupId(), Username: user, Node: env.Node, Time: time.Now().UTC(), Home: home, DBUsers: dbUsers}
	if len(a.req.GetStateJson()) > 0 {
		if !json.Valid(a.req.GetStateJson()) {
			failed("state", errors.New("state_json is not valid JSON"))
		} else {
			doc.State = a.req.GetStateJson()
		}
	}
	if a.m.mail != nil {
		mh, err := a.m.mail.MailboxHashes(env, home)
		if err != nil {
			failed("state", fmt.Errorf("mailbox hashes: %w", err))
		}
		doc.Mailboxes = mh
		for addr := range mh {
			res.Contents.Mailboxes = append(res.Contents.Mailboxes, addr)
		}
		slices.Sort(res.Contents.Mailboxes)
	}
	for _, c := range a.req.GetCertificates() {
		item := "certificate:" + c.GetSite()
		if a.m.certs == nil {
			failed(item, errors.New("this node serves no certificates"))
			continue
		}
		key, err := a.m.certs.CertificateKey(ctx, env, c.GetSite(), c.GetChainPem())
		if err != nil {
			failed(item, err)
			continue
		}
		if doc.Certificates == nil {
			doc.Certificates = map[string]certKey{}
		}
		doc.Certificates[c.GetSite()] = certKey{ChainPEM: string(c.GetChainPem()), Key: key, Mail: c.GetMail()}
	}
	b, err := json.Marshal(doc)
	doc.clearKeys()
	if err != nil {
		failed("state", err)
	} else if sum, err := a.stdinSnapshot(ctx, env, rr, bytes.NewReader(b), stateFile, a.tags(kindState)); err != nil {
		failed("state", err)
	} else {
		add(sum)
	}
	clear(b)

	if len(res.SnapshotIds) == 0 {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "backup %s: nothing could be backed up: %s", a.req.GetBackupId(), failureText(res.Failed))
	}
	if len(res.Failed) == 0 && a.req.GetRetention() != nil {
		forgotten, err := a.m.applyRetention(ctx, rr, a.req.GetRetention(), a.req.GetBackupId(), &res.UnlockedStale)
		if err != nil {
			// The backup is made; retention runs again after the next one.
			log.Warn("apply retention", "err", err)
		}
		res.ForgottenBackupIds = forgotten
	}
	return res, nil
}

func failureText(f []*agentpb.BackupItemFailure) string {
	var parts []string
	for _, x := range f {
		parts = append(parts, x.GetItem()+": "+x.GetError())
	}
	return strings.Join(parts, "; ")
}

// stdinSnapshot stores r as a one-file snapshot named name.
func (a *BackupAccount) stdinSnapshot(ctx context.Context, env *actions.Env, rr *resticRun, r io.Reader, name string, tags []string) (*backupSummary, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := append(a.commonArgs(env), tags...)
	args = append(args, "--stdin", "--stdin-filename", name)
	b, err := rr.startBackup(ctx, pr, nil, args...)
	pr.Close()
	if err != nil {
		pw.Close()
		return nil, err
	}
	_, werr := io.Copy(pw, r)
	pw.Close()
	sum, err := b.wait()
	if werr != nil && err == nil {
		err = werr
	}
	return sum, err
}

// backupDatabase streams one database's dump into a snapshot. A dump that
// fails or ends without its completion line fails the item: restic is
// interrupted before it sees the end of its input, and a snapshot it
// wrote all the same is forgotten, so no truncated dump passes as good.
func (a *BackupAccount) backupDatabase(ctx context.Context, env *actions.Env, rr *resticRun, d *agentpb.BackupDatabase) (*backupSummary, error) {
	if a.m.db == nil {
		return nil, errors.New("no database module")
	}
	dc, err := a.m.db.DumpCommand(ctx, env, d.GetEngine(), d.GetName())
	if err != nil {
		return nil, err
	}
	if ok, err := a.m.db.DatabaseExists(ctx, env, d.GetEngine(), d.GetName()); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("database %q does not exist on this node", d.GetName())
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := append(a.commonArgs(env), a.tags(kindDatabase, tagDB+"="+d.GetEngine()+"/"+d.GetName())...)
	args = append(args, "--stdin", "--stdin-filename", dbPath(d.GetEngine(), d.GetName()))
	b, err := rr.startBackup(ctx, pr, nil, args...)
	pr.Close()
	if err != nil {
		pw.Close()
		return nil, err
	}
	tee := &teeTail{w: pw}
	dump := exec.CommandContext(ctx, dc.Argv[0], dc.Argv[1:]...)
	dump.Env = dc.Env
	dump.Stdout = tee
	var stderr limitedBuf
	dump.Stderr = &stderr
	dump.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dump.WaitDelay = 5 * time.Second
	derr := dump.Run()
	if derr != nil {
		derr = fmt.Errorf("%s: %w: %s", filepath.Base(dc.Argv[0]), derr, bytes.TrimSpace(stderr.b))
	} else if !tee.complete(dc.Trailer) {
		derr = fmt.Errorf("%s wrote %d bytes without its completion line: dump incomplete", filepath.Base(dc.Argv[0]), tee.n)
	}
	if derr != nil && b.c.Process != nil {
		// Before restic sees EOF: it stops without a snapshot.
		_ = syscall.Kill(-b.c.Process.Pid, syscall.SIGINT)
	}
	pw.Close()
	sum, err := b.wait()
	if derr != nil {
		if sum != nil && sum.SnapshotID != "" {
			if _, ferr := rr.run(context.WithoutCancel(ctx), nil, "forget", sum.SnapshotID); ferr != nil {
				return nil, errors.Join(derr, fmt.Errorf("forget the incomplete snapshot %s: %w", sum.SnapshotID, ferr))
			}
		}
		return nil, derr
	}
	if err == nil && tee.err != nil {
		err = tee.err
	}
	return sum, err
}

// teeTail writes to w and keeps the stream's last bytes; after w fails
// (restic gone) it keeps consuming, so the dump tool never blocks on a
// full pipe.
type teeTail struct {
	w    io.Writer
	err  error
	n    int64
	tail []byte
}

func (t *teeTail) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	t.tail = append(t.tail, p...)
	if len(t.tail) > 512 {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-512:]...)
	}
	if t.err == nil {
		_, t.err = t.w.Write(p)
	}
	return len(p), nil
}

// complete says whether the stream ended with trailer on a line of its
// own near its end (mariadb-dump and pg_dump write it only at the end).
func (t *teeTail) complete(trailer string) bool {
	return t.n > 0 && (trailer == "" || bytes.Contains(t.tail, []byte("\n"+trailer)))
}

// progress returns a status callback for task id that forwards at most
// about one update a second to the module's Progress hook.
func (m *Module) progress(id string) func(backupStatus) {
	if m.Progress == nil {
		return nil
	}
	var mu sync.Mutex
	var last time.Time
	return func(s backupStatus) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		m.Progress(&agentpb.BackupProgress{TaskId: id, FilesDone: s.FilesDone, BytesDone: s.BytesDone, TotalFiles: s.TotalFiles, TotalBytes: s.TotalBytes})
	}
}
