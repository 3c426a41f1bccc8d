package backup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// scratchDir is where restores are staged: in the home base (root's,
// never writable by an account) so that the staged tree is on the homes'
// filesystem and moves into place with rename(2), and no account can
// swap a directory under restic while it writes as root.
const scratchDir = ".npanel-restore"

// backupSnaps is one backup's snapshots by kind.
type backupSnaps struct {
	files *snapshot
	state *snapshot
	dbs   map[string]snapshot // engine/name
	zones map[string]snapshot // zone name
}

func (m *Module) findBackup(ctx context.Context, rr *resticRun, id string) (*backupSnaps, error) {
	snaps, err := rr.snapshots(ctx, tagBackup+"="+id)
	if err != nil {
		return nil, err
	}
	if len(snaps) == 0 {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "backup %s: no snapshots in the repository", id)
	}
	b := &backupSnaps{dbs: map[string]snapshot{}, zones: map[string]snapshot{}}
	for i := range snaps {
		s := snaps[i]
		switch s.tag(tagKind) {
		case kindFiles:
			b.files = &s
		case kindState:
			b.state = &s
		case kindDatabase:
			b.dbs[s.tag(tagDB)] = s
		case kindZone:
			b.zones[s.tag(tagZone)] = s
		}
	}
	return b, nil
}

// Apply implements actions.Action.
func (a *RestoreBackup) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	s, err := a.m.open(ctx, env, a.req.GetRepository(), false)
	if err != nil {
		return nil, err
	}
	defer s.release()
	rr := s.rr
	r := a.req
	user := r.GetRepository().GetUsername()
	bs, err := a.m.findBackup(ctx, rr, r.GetBackupId())
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	res := &agentpb.RestoreResult{}
	failed := func(item string, err error) {
		res.Failed = append(res.Failed, &agentpb.BackupItemFailure{Item: item, Error: rr.scrub(err.Error())})
	}
	home := filepath.Join(env.Profile.HomeBase, user)

	switch r.GetWhat() {
	case agentpb.RestoreWhat_RESTORE_WHAT_FILES:
		rel, _ := homePath(r.GetPath())
		if err := a.restoreFiles(ctx, env, rr, bs, home, rel, r.GetInPlace(), res); err != nil {
			return nil, err
		}
		res.Restored = append(res.Restored, "files")
	case agentpb.RestoreWhat_RESTORE_WHAT_DATABASE:
		d := r.GetDatabase()
		into := r.GetDatabaseInto()
		if into == "" {
			into = d.GetName()
		}
		if err := a.restoreDatabase(ctx, env, rr, bs, d.GetEngine(), d.GetName(), into, r.GetInPlace()); err != nil {
			return nil, err
		}
		res.Restored = append(res.Restored, "database:"+into)
	case agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX:
		doc, err := a.readState(ctx, rr, bs)
		if err != nil {
			return nil, err
		}
		addr := r.GetMailbox()
		_, local, domain, _ := validate.MailAddress(addr)
		if err := a.restoreFiles(ctx, env, rr, bs, home, path.Join("mail", domain, local), r.GetInPlace(), res); err != nil {
			return nil, err
		}
		res.Restored = append(res.Restored, "mailbox:"+addr)
		if err := a.restoreMailboxHash(ctx, env, home, addr, doc); err != nil {
			failed("mailbox:"+addr, err)
		}
	case agentpb.RestoreWhat_RESTORE_WHAT_ZONE:
		doc, err := a.readState(ctx, rr, bs)
		if err != nil {
			return nil, err
		}
		res.StateJson = doc.State
		res.CertificateKeys = doc.certificateSites()
		doc.clearKeys()
		res.Restored = append(res.Restored, "state")
		a.readZones(ctx, rr, bs, res, failed)
	case agentpb.RestoreWhat_RESTORE_WHAT_ALL:
		a.restoreAll(ctx, env, rr, bs, home, res, failed)
		if len(res.Restored) == 0 {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "restore of backup %s: nothing could be restored: %s", r.GetBackupId(), failureText(res.Failed))
		}
	}
	return res, nil
}

// restoreAll restores everything it can and reports the rest: a node
// without a service the backup has data for must not stop the restore.
func (a *RestoreBackup) restoreAll(ctx context.Context, env *actions.Env, rr *resticRun, bs *backupSnaps, home string, res *agentpb.RestoreResult, failed func(string, error)) {
	doc, err := a.readState(ctx, rr, bs)
	if err != nil {
		failed("state", err)
	} else {
		defer doc.clearKeys()
		res.StateJson = doc.State
		res.CertificateKeys = doc.certificateSites()
		res.Restored = append(res.Restored, "state")
	}
	a.readZones(ctx, rr, bs, res, failed)
	if bs.files != nil {
		if err := a.restoreFiles(ctx, env, rr, bs, home, ".", true, res); err != nil {
			failed("files", err)
		} else {
			res.Restored = append(res.Restored, "files")
		}
	}
	keys := make([]string, 0, len(bs.dbs))
	for k := range bs.dbs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		engine, name, _ := strings.Cut(k, "/")
		if err := a.restoreDatabase(ctx, env, rr, bs, engine, name, name, true); err != nil {
			failed("database:"+name, err)
			continue
		}
		res.Restored = append(res.Restored, "database:"+name)
	}
	if doc == nil {
		return
	}
	addrs := make([]string, 0, len(doc.Mailboxes))
	for addr := range doc.Mailboxes {
		addrs = append(addrs, addr)
	}
	slices.Sort(addrs)
	for _, addr := range addrs {
		if err := a.restoreMailboxHash(ctx, env, home, addr, doc); err != nil {
			failed("mailbox:"+addr, err)
			continue
		}
		res.Restored = append(res.Restored, "mailbox:"+addr)
	}
	user := a.req.GetRepository().GetUsername()
	for _, h := range doc.DBUsers {
		if !a.m.engineInstalled(env, h.Engine) {
			failed("database-user:"+h.User, fmt.Errorf("%s is not installed on this node", h.Engine))
			continue
		}
		if _, err := a.m.db.RestoreUserHash(ctx, env, user, h); err != nil {
			failed("database-user:"+h.User, err)
		}
	}
	// Installed certificates, of the sites the control plane names (the
	// account's now); the files are in place and the vhosts exist.
	for _, site := range a.req.GetCertificateSites() {
		c, ok := doc.Certificates[site]
		if !ok {
			continue // not in this backup: the control plane reports it
		}
		item := "certificate:" + site
		if a.m.certs == nil {
			failed(item, errors.New("this node serves no certificates"))
			continue
		}
		if err := a.m.certs.ServeKey(ctx, env, site, c.Mail, []byte(c.ChainPEM), c.Key); err != nil {
			failed(item, err)
			continue
		}
		res.Restored = append(res.Restored, item)
	}
}

// certificateSites are the sites whose installed certificate's key doc
// holds, sorted.
func (d *stateDoc) certificateSites() []string {
	return slices.Sorted(maps.Keys(d.Certificates))
}

// engineInstalled says whether the node has engine's server.
func (m *Module) engineInstalled(env *actions.Env, engine string) bool {
	if m.missingEngine != nil && m.missingEngine(engine) {
		return false
	}
	d := env.Profile.DB()
	bin := d.Mariadbd
	if engine == validate.EnginePostgreSQL {
		bin = d.Postgres
	}
	_, err := os.Stat(bin)
	return err == nil
}

func (a *RestoreBackup) restoreMailboxHash(ctx context.Context, env *actions.Env, home, addr string, doc *stateDoc) error {
	h, ok := doc.Mailboxes[addr]
	if !ok {
		return errors.New("the backup holds no password hash for it")
	}
	if a.m.mail == nil {
		return errors.New("mail is not served on this node")
	}
	exists, err := a.m.mail.RestoreMailboxHash(ctx, env, home, addr, h)
	if err != nil {
		return err
	}
	if !exists {
		return errors.New("mailbox does not exist on this node (create it, then restore again)")
	}
	return nil
}

// Bounds on the zone files one restore returns (one file, all of them).
const (
	maxZoneFileBytes  = 2 << 20
	maxZoneFilesBytes = 4 << 20
)

// readZones reads the backup's zone files into res; the control plane
// writes the zones back from them. A zone that cannot be read is failed
// here, and the control plane falls back to its records in the state.
func (a *RestoreBackup) readZones(ctx context.Context, rr *resticRun, bs *backupSnaps, res *agentpb.RestoreResult, failed func(string, error)) {
	names := make([]string, 0, len(bs.zones))
	for n := range bs.zones {
		names = append(names, n)
	}
	slices.Sort(names)
	total := 0
	for _, n := range names {
		if validate.CanonicalDomain(n) != nil {
			failed("zone:"+n, errors.New("the snapshot's zone tag is not a domain"))
			continue
		}
		out, err := rr.run(ctx, nil, "dump", "--no-lock", bs.zones[n].ID, "/"+zonePath(n))
		switch {
		case err != nil:
			failed("zone:"+n, err)
			continue
		case len(out) > maxZoneFileBytes || total+len(out) > maxZoneFilesBytes:
			// The result crosses the stream and etcd: a zone past the
			// bounds comes back from the state's records instead.
			failed("zone:"+n, fmt.Errorf("the zone file is %d bytes: over this restore's bound", len(out)))
			continue
		}
		total += len(out)
		res.ZoneFiles = append(res.ZoneFiles, &agentpb.BackupZoneFile{Name: n, Text: string(out)})
	}
}

// readState reads the backup's state snapshot.
func (a *RestoreBackup) readState(ctx context.Context, rr *resticRun, bs *backupSnaps) (*stateDoc, error) {
	if bs.state == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "backup %s has no state snapshot", a.req.GetBackupId())
	}
	out, err := rr.run(ctx, nil, "dump", "--no-lock", bs.state.ID, "/"+stateFile)
	if err != nil {
		return nil, err
	}
	var doc stateDoc
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("state snapshot: %w", err)
	}
	return &doc, nil
}

// restoreDatabase streams a database's dump from its snapshot into
// database into (the account's, validated), created empty first: side by
// side it must not exist; in place it is replaced, and put back as it was
// if the import fails.
func (a *RestoreBackup) restoreDatabase(ctx context.Context, env *actions.Env, rr *resticRun, bs *backupSnaps, engine, name, into string, inPlace bool) error {
	snap, ok := bs.dbs[engine+"/"+name]
	if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "backup %s holds no %s database %q", a.req.GetBackupId(), engine, name)
	}
	if !a.m.engineInstalled(env, engine) {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "%s is not installed on this node", engine)
	}
	if a.m.db == nil {
		return errors.New("no database module")
	}
	return a.m.db.RestoreDatabase(ctx, env, engine, a.req.GetRepository().GetUsername(), into, inPlace, func(load func(io.Reader) error) error {
		return streamDump(ctx, rr, snap.ID, dbPath(engine, name), load)
	})
}

// streamDump hands load file p of snapshot id as restic dumps it, and
// reports load's failure first (it makes restic's writes fail too), then
// restic's.
func streamDump(ctx context.Context, rr *resticRun, id, p string, load func(io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"dump", "--no-lock", id, "/" + p}
	dump, done, err := rr.cmd(ctx, args...)
	if err != nil {
		return err
	}
	defer done()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	var dumpErr limitedBuf
	dump.Stdout, dump.Stderr = pw, &dumpErr
	err = dump.Start()
	pw.Close()
	if err != nil {
		return rr.fail(args, err, nil)
	}
	br := bufio.NewReaderSize(pr, 64<<10)
	if _, err := br.Peek(1); err != nil {
		// Nothing came: restic's failure says why.
		if derr := dump.Wait(); derr != nil {
			return fmt.Errorf("read dump: %w", rr.fail(args, derr, dumpErr.b))
		}
		return errors.New("read dump: the dump is empty")
	}
	lerr := load(br)
	// A load that stopped early leaves restic blocked on the pipe.
	pr.Close()
	derr := dump.Wait()
	if lerr != nil {
		return lerr
	}
	if derr != nil {
		return fmt.Errorf("read dump: %w", rr.fail(args, derr, dumpErr.b))
	}
	return nil
}

// restoreFiles restores rel ("." for the whole home) of the files
// snapshot. It is staged in the scratch area (restic writes as root only
// where no account can reach), owned by the account, then renamed into
// the home through descriptors opened under an os.Root of the home, so
// no account-owned symlink is followed out of it: side by side into
// restored-<backup id>/<rel>, in place over the existing entry (moved
// aside first and put back if the move fails).
func (a *RestoreBackup) restoreFiles(ctx context.Context, env *actions.Env, rr *resticRun, bs *backupSnaps, home, rel string, inPlace bool, res *agentpb.RestoreResult) error {
	if bs.files == nil || len(bs.files.Paths) != 1 {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "backup %s has no files snapshot", a.req.GetBackupId())
	}
	fi, err := os.Lstat(home)
	if err != nil || !fi.IsDir() {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "home %s does not exist on this node (restore the account first)", home)
	}
	st := fi.Sys().(*syscall.Stat_t)
	uid, gid := int(st.Uid), int(st.Gid)
	if uid == 0 {
		return fmt.Errorf("home %s is root's: refusing to restore into it", home)
	}

	scratchBase := filepath.Join(env.Profile.HomeBase, scratchDir)
	if err := os.MkdirAll(scratchBase, 0o700); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(scratchBase, a.req.GetRestoreId()+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)

	orig := bs.files.Paths[0] // the home's path when it was backed up
	args := []string{"restore", "--no-lock", bs.files.ID, "--target", scratch}
	if rel != "." {
		args = append(args, "--include", orig+"/"+rel)
	}
	if _, err := rr.run(ctx, nil, args...); err != nil {
		return err
	}
	staged := filepath.Join(scratch, orig, filepath.FromSlash(rel))
	if _, err := os.Lstat(staged); err != nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "%q is not in backup %s", rel, a.req.GetBackupId())
	}
	// The scratch tree is root's: owning it to the account here touches
	// nothing an account controls.
	if err := filepath.WalkDir(staged, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			res.Files++
			if i, err := d.Info(); err == nil {
				res.Bytes += uint64(i.Size())
			}
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		return fmt.Errorf("own restored files: %w", err)
	}

	hr, err := os.OpenRoot(home)
	if err != nil {
		return err
	}
	defer hr.Close()
	if !inPlace {
		dest := "restored-" + a.req.GetBackupId()
		if rel != "." {
			dest = path.Join(dest, rel)
		}
		if err := mkdirOwned(hr, path.Dir(dest), uid, gid); err != nil {
			return err
		}
		res.IntoPath = dest
		return moveIn(staged, hr, dest, false, a.req.GetRestoreId())
	}
	if rel != "." {
		if err := mkdirOwned(hr, path.Dir(rel), uid, gid); err != nil {
			return err
		}
		return moveIn(staged, hr, rel, true, a.req.GetRestoreId())
	}
	// The whole home in place: each entry of the backup replaces the
	// home's; entries made since the backup are kept.
	ents, err := os.ReadDir(staged)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := moveIn(filepath.Join(staged, e.Name()), hr, e.Name(), true, a.req.GetRestoreId()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// mkdirOwned creates dir (slash-separated, in root) and its missing
// parents owned by uid:gid.
func mkdirOwned(root *os.Root, dir string, uid, gid int) error {
	if dir == "." || dir == "" {
		return nil
	}
	cur := ""
	for _, c := range strings.Split(dir, "/") {
		cur = path.Join(cur, c)
		err := root.Mkdir(cur, 0o755)
		if err == nil {
			if err := root.Lchown(cur, uid, gid); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// moveIn renames the staged path into root at dest (slash-separated).
// The destination's directory is opened through root (no escape by
// symlink) and the rename is done relative to it; the last component is
// never followed. Without replace an existing dest is a conflict; with
// replace it is renamed aside, the new entry moved in, and the old one
// removed, or put back when the move fails.
func moveIn(staged string, root *os.Root, dest string, replace bool, restoreID string) error {
	sd, err := os.Open(filepath.Dir(staged))
	if err != nil {
		return err
	}
	defer sd.Close()
	dd, err := root.Open(path.Dir(dest))
	if err != nil {
		return err
	}
	defer dd.Close()
	if fi, err := dd.Stat(); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path.Dir(dest))
	}
	sfd, dfd := int(sd.Fd()), int(dd.Fd())
	src, base := filepath.Base(staged), path.Base(dest)
	if !replace {
		if err := unix.Renameat2(sfd, src, dfd, base, unix.RENAME_NOREPLACE); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "%s exists", dest)
			}
			return fmt.Errorf("move %s into place: %w", dest, err)
		}
		return nil
	}
	aside := ".npanel-old-" + restoreID + "-" + base
	if len(aside) > 255 {
		aside = aside[:255]
	}
	movedAside := false
	if err := unix.Renameat2(dfd, base, dfd, aside, unix.RENAME_NOREPLACE); err == nil {
		movedAside = true
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("move %s aside: %w", dest, err)
	}
	if err := unix.Renameat2(sfd, src, dfd, base, unix.RENAME_NOREPLACE); err != nil {
		if movedAside {
			_ = unix.Renameat2(dfd, aside, dfd, base, unix.RENAME_NOREPLACE)
		}
		return fmt.Errorf("move %s into place: %w", dest, err)
	}
	if movedAside {
		if err := root.RemoveAll(path.Join(path.Dir(dest), aside)); err != nil {
			return fmt.Errorf("remove the replaced %s: %w", dest, err)
		}
	}
	return nil
}
