package cpanel

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// acct is the nPanel account an import fills.
type acct struct {
	name     string
	uid, gid int
	home     string
}

func lookupAccount(env *actions.Env, username string) (acct, error) {
	u, err := user.Lookup(username)
	if err != nil {
		return acct{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "account %s has no user on this node: %v", username, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return acct{}, err
	}
	if uid < int(env.Profile.MinUID) {
		return acct{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %s is a system user", username)
	}
	home := filepath.Join(env.Profile.HomeBase, username)
	if filepath.Clean(u.HomeDir) != home {
		return acct{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %s's home %s is not %s", username, u.HomeDir, home)
	}
	return acct{name: username, uid: uid, gid: gid, home: home}, nil
}

// maxFileErrors bounds the file errors an import lists.
const maxFileErrors = 20

// extractor writes an archive's home into an account's.
type extractor struct {
	a      *Import
	env    *actions.Env
	ctx    context.Context
	acct   acct
	owner  *atomicfile.Owner
	home   *os.Root
	cpUser string

	mailboxes map[string]bool     // requested
	maildirs  map[string]*os.Root // opened, by address
	mailStats map[string]*mailStat
	mailErr   map[string]error
	dbsDone   map[string]bool
	// mysqlDumps are the names of the archive's mysql/NAME.sql.
	mysqlDumps map[string]bool
	// definers maps the archive's database users to theirs here.
	definers map[string]string

	// The directory of the last file written, kept open: tar lists a
	// directory's files together.
	dirName string
	dirRoot *os.Root

	files, bytes uint64
	fileErrs     []string
	fileErrCount int
	res          *agentpb.ImportCpanelBackupResult
}

func (x *extractor) fail(item string, err error) {
	x.res.Failed = append(x.res.Failed, &agentpb.BackupItemFailure{Item: item, Error: err.Error()})
}

func (x *extractor) fileErr(rel string, err error) {
	x.fileErrCount++
	if len(x.fileErrs) < maxFileErrors {
		x.fileErrs = append(x.fileErrs, rel+": "+err.Error())
	}
}

// Apply implements actions.Action.
func (a *Import) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if env == nil || env.Profile == nil {
		return nil, errors.New("no platform profile: the agent must be started with one")
	}
	unlock, err := a.m.locks.Lock(ctx, a.req.GetUsername())
	if err != nil {
		return nil, err
	}
	defer unlock()
	ac, err := lookupAccount(env, a.req.GetUsername())
	if err != nil {
		return nil, err
	}
	// Pass 1: the whole archive is checked before anything is written, so
	// that a bad entry at its end refuses it as a whole.
	f, size, err := openArchive(env, a.req.GetPath())
	if err != nil {
		return nil, err
	}
	// It also notes the MariaDB dumps: a PostgreSQL dump of the same name
	// is not the database the request names (names are one namespace).
	// And it reads mysql.sql: the database users whose objects (DEFINER)
	// keep them under their new names.
	mysqlDumps := map[string]bool{}
	var grants []*Grant
	info, err := Walk(ctxReader{ctx, f}, size, a.m.Limits, func(e *Entry) error {
		if top, rest, _ := strings.Cut(e.Path, "/"); top == "mysql" && strings.HasSuffix(rest, ".sql") && !strings.Contains(rest, "/") {
			mysqlDumps[strings.TrimSuffix(rest, ".sql")] = true
		}
		if e.Path == "mysql.sql" {
			if b, ok, err := readMeta(e); err == nil && ok {
				grants, _ = ParseGrants(b)
			}
		}
		return nil
	})
	f.Close()
	if err != nil {
		return nil, refused(err)
	}

	home, err := os.OpenRoot(ac.home)
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "account home: %v", err)
	}
	defer home.Close()
	x := &extractor{
		a: a, env: env, ctx: ctx, acct: ac, home: home, cpUser: info.User,
		owner:     &atomicfile.Owner{UID: ac.uid, GID: ac.gid},
		mailboxes: map[string]bool{}, maildirs: map[string]*os.Root{}, mailStats: map[string]*mailStat{}, mailErr: map[string]error{},
		dbsDone: map[string]bool{}, mysqlDumps: mysqlDumps, definers: map[string]string{},
		res: &agentpb.ImportCpanelBackupResult{},
	}
	for _, mb := range a.req.GetMailboxes() {
		x.mailboxes[mb] = true
	}
	for _, g := range grants {
		if g.User != info.User {
			_, x.definers[g.User], _ = validate.CpanelDatabaseName(g.User, info.User, ac.name)
		}
	}
	defer func() {
		for _, r := range x.maildirs {
			if r != nil {
				r.Close()
			}
		}
		if x.dirRoot != nil {
			x.dirRoot.Close()
		}
	}()

	// Pass 2: extract.
	f, size, err = openArchive(env, a.req.GetPath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := Walk(ctxReader{ctx, f}, size, a.m.Limits, x.entry); err != nil {
		return nil, refused(err)
	}
	if err := atomicfile.SyncFS(home); err != nil {
		x.fail("files", err)
	}
	x.report()
	return x.res, nil
}

// report adds the result's items and what was asked but not found.
func (x *extractor) report() {
	r := x.a.req
	if r.GetFiles() {
		x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "files", Name: "homedir", Disposition: dImport, Note: fmt.Sprintf("%d files, %d bytes", x.files, x.bytes), Entry: "homedir", Bytes: x.bytes})
		if x.fileErrCount > 0 {
			x.fail("files", fmt.Errorf("%d entries not written: %s", x.fileErrCount, strings.Join(x.fileErrs, "; ")))
		}
	}
	x.res.Files, x.res.Bytes = x.files, x.bytes
	for _, mb := range r.GetMailboxes() {
		if err := x.mailErr[mb]; err != nil {
			x.fail("mailbox:"+mb, err)
			continue
		}
		st := x.mailStats[mb]
		if st == nil {
			x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "mailbox", Name: mb, Disposition: dSkip, Note: "no maildir in the archive"})
			continue
		}
		x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "mailbox", Name: mb, Disposition: dImport, Note: fmt.Sprintf("%d messages", st.messages), Bytes: st.bytes})
	}
	for _, from := range sortedKeys(r.GetDatabases()) {
		if !x.dbsDone[from] {
			x.fail("database:"+from, errors.New("no dump of it in the archive"))
		}
	}
}

// entry takes one entry of the archive.
func (x *extractor) entry(e *Entry) error {
	if err := x.ctx.Err(); err != nil {
		return err
	}
	if rel, ok := e.InHome(); ok {
		x.homeEntry(e, rel)
		return nil
	}
	top, rest, _ := strings.Cut(e.Path, "/")
	switch {
	case top == "mysql" && strings.HasSuffix(rest, ".sql") && e.R != nil:
		from := strings.TrimSuffix(rest, ".sql")
		to, ok := x.a.req.GetDatabases()[from]
		if !ok {
			return nil
		}
		x.dbsDone[from] = true
		if x.a.m.db == nil {
			x.fail("database:"+from, errors.New("no database module on this agent"))
			return nil
		}
		changes, err := x.a.m.db.ImportForeignDump(x.ctx, x.env, to, e.R, x.definers)
		if err != nil {
			x.fail("database:"+from, fmt.Errorf("into %s: %w", to, err))
			return nil
		}
		note := "restored into " + to
		if len(changes) > 0 {
			kept := 0
			for _, c := range changes {
				if c.Mapped {
					kept++
					continue
				}
				obj := fmt.Sprintf("%s: %s %s", from, strings.ToLower(c.Kind), c.Name)
				why := "definer " + c.From + " has no database user here (not one of the archive's, or not imported)"
				if c.From == "" {
					why = "no definer in the dump"
				}
				if c.To != "" {
					x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "database_object", Name: obj, Disposition: dAdapt, Note: why + ": now defined by " + c.To, Entry: e.Raw})
				} else {
					x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "database_object", Name: obj, Disposition: dAdapt, Note: why + " and no user holds " + to + ": it has no valid definer and fails when used until it is created again", Entry: e.Raw})
				}
			}
			note += fmt.Sprintf("; %d views, routines, triggers or events, %d keeping their definer under its new name", len(changes), kept)
		}
		x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "database", Name: from, Disposition: dImport, Note: note, Entry: e.Raw, Bytes: uint64(e.Header.Size)})
	case (top == "psql" || top == "pgsql") && (strings.HasSuffix(rest, ".tar") || strings.HasSuffix(rest, ".sql")) && !strings.Contains(rest, "/") && e.R != nil:
		from := strings.TrimSuffix(strings.TrimSuffix(rest, ".tar"), ".sql")
		to, ok := x.a.req.GetDatabases()[from]
		if !ok || x.mysqlDumps[from] || x.dbsDone[from] {
			return nil
		}
		x.dbsDone[from] = true
		if x.a.m.db == nil {
			x.fail("database:"+from, errors.New("no database module on this agent"))
			return nil
		}
		if err := x.a.m.db.ImportUntrustedPostgres(x.ctx, x.env, to, e.R); err != nil {
			x.fail("database:"+from, fmt.Errorf("into %s: %w", to, err))
			return nil
		}
		x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "database", Name: from, Disposition: dImport, Note: "restored into " + to + " (PostgreSQL)", Entry: e.Raw, Bytes: uint64(e.Header.Size)})
	case top == "cron" && rest != "" && !strings.Contains(rest, "/") && e.R != nil && x.a.req.GetCron():
		if err := x.writeCron(e); err != nil {
			x.fail("cron", err)
			return nil
		}
	}
	return nil
}

// homeEntry writes an entry of the archive's home: into the account's
// home, or for homedir/mail/DOMAIN/LOCAL/... into that mailbox's Maildir.
func (x *extractor) homeEntry(e *Entry, rel string) {
	first, rest, _ := strings.Cut(rel, "/")
	switch {
	case rel == ".":
		return // the home itself keeps its owner and mode
	case first == "mail":
		parts := strings.Split(rest, "/")
		if len(parts) < 3 {
			return
		}
		addr := parts[1] + "@" + parts[0]
		if !x.mailboxes[addr] || x.mailErr[addr] != nil {
			return
		}
		name := path.Join(parts[2:]...)
		base := path.Base(name)
		if strings.HasPrefix(base, "dovecot.index") || base == "maildirsize" || base == "dovecot.list.index" {
			return // Dovecot's caches and quota count: rebuilt from the messages
		}
		md, err := x.maildir(addr)
		if err != nil {
			x.mailErr[addr] = err
			return
		}
		if err := x.write(md, "maildir:"+addr, name, e); err != nil {
			x.mailErr[addr] = fmt.Errorf("%s: %w", name, err)
			return
		}
		if e.Header.Typeflag == tar.TypeReg {
			st := x.mailStats[addr]
			st.bytes += uint64(e.Header.Size)
			if isMessage(parts[2:]) {
				st.messages++
			}
		}
	case first == "etc", first == ".ssh", e.Path == AccessLogsLink:
		// Mail accounts' passwd/shadow/quota went to the report; the link
		// to the old server's logs would dangle; the old server's SSH keys
		// are not carried over (see the report).
	default:
		if !x.a.req.GetFiles() {
			return
		}
		if err := x.write(x.home, "home", rel, e); err != nil {
			x.fileErr(rel, err)
			return
		}
		if e.Header.Typeflag == tar.TypeReg {
			x.files++
			x.bytes += uint64(e.Header.Size)
		}
	}
}

// maildir opens the Maildir of a requested mailbox.
func (x *extractor) maildir(addr string) (*os.Root, error) {
	if r, ok := x.maildirs[addr]; ok {
		return r, nil
	}
	if x.a.m.mail == nil {
		return nil, errors.New("no mail module on this agent")
	}
	rel, err := x.a.m.mail.MailboxMaildir(x.env, x.acct.home, addr)
	if err != nil {
		return nil, err
	}
	if err := checkRealDirs(x.home, rel); err != nil {
		return nil, err
	}
	r, err := x.home.OpenRoot(rel)
	if err != nil {
		return nil, err
	}
	x.maildirs[addr] = r
	x.mailStats[addr] = &mailStat{}
	return r, nil
}

// checkRealDirs refuses a path of root whose levels are not all real
// directories (an account could point its Maildir at another mailbox's).
func checkRealDirs(root *os.Root, rel string) error {
	p := ""
	for _, el := range strings.Split(rel, "/") {
		p = path.Join(p, el)
		fi, err := root.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	return nil
}

// perm is the mode an entry is given: its permission bits, never set-id
// or sticky.
func perm(h *tar.Header) os.FileMode { return os.FileMode(h.Mode) & 0o777 }

// write writes entry e as name (slash-separated, clean, relative) into
// root, owned by the account. An existing file, link or empty directory in
// the way of a file or link is replaced; directories are merged.
func (x *extractor) write(root *os.Root, rootKey, name string, e *Entry) error {
	h := e.Header
	if err := x.mkdirs(root, path.Dir(name)); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := root.Lstat(name)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", name)
		}
		if err := root.Lchown(name, x.acct.uid, x.acct.gid); err != nil {
			return err
		}
		return root.Chmod(name, perm(h)|0o700)
	case tar.TypeReg:
		dir, base := path.Split(name)
		dr, err := x.dirOf(root, rootKey, strings.TrimSuffix(dir, "/"))
		if err != nil {
			return err
		}
		if fi, err := dr.Lstat(base); err == nil && fi.IsDir() {
			return fmt.Errorf("%s exists and is a directory", name)
		}
		p, err := atomicfile.Create(dr, base, perm(h), x.owner)
		if err != nil {
			return err
		}
		defer p.Abort()
		if _, err := io.Copy(p, e.R); err != nil {
			return err
		}
		if err := p.Close(); err != nil {
			return err
		}
		if err := p.Rename(); err != nil {
			return err
		}
		_ = dr.Chtimes(base, h.ModTime, h.ModTime)
		return nil
	case tar.TypeSymlink:
		if err := replaceable(root, name); err != nil {
			return err
		}
		if err := root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		return root.Lchown(name, x.acct.uid, x.acct.gid)
	case tar.TypeLink:
		// The walk checked that the target is a file of the home met
		// before, which this import wrote (when it could).
		target, _ := strings.CutPrefix(path.Clean(strings.TrimPrefix(h.Linkname, x.topPrefix(e))), "homedir/")
		if rootKey != "home" {
			return nil // hard links in maildirs: Dovecot needs none
		}
		if err := replaceable(root, name); err != nil {
			return err
		}
		return root.Link(target, name)
	}
	return nil
}

// topPrefix is what a hard link's target starts with in the outer archive
// (the nested homedir.tar names its targets from its own root).
func (x *extractor) topPrefix(e *Entry) string {
	if strings.Contains(e.Raw, "homedir.tar:") {
		return ""
	}
	top, _, _ := strings.Cut(e.Raw, "/")
	return top + "/"
}

// replaceable removes what is at name unless it is a directory.
func replaceable(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s exists and is a directory", name)
	}
	return root.Remove(name)
}

// mkdirs makes the directories of dir that are missing, the account's,
// 0755 (an archive lists its directories before their files; this covers
// one that does not).
func (x *extractor) mkdirs(root *os.Root, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if fi, err := root.Lstat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := x.mkdirs(root, path.Dir(dir)); err != nil {
		return err
	}
	if err := root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := root.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	return root.Lchown(dir, x.acct.uid, x.acct.gid)
}

// dirOf opens dir of root as a root, reusing the last one opened.
func (x *extractor) dirOf(root *os.Root, rootKey, dir string) (*os.Root, error) {
	if dir == "" {
		dir = "."
	}
	key := rootKey + "\x00" + dir
	if x.dirRoot != nil && x.dirName == key {
		return x.dirRoot, nil
	}
	if x.dirRoot != nil {
		x.dirRoot.Close()
		x.dirRoot, x.dirName = nil, ""
	}
	r, err := root.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	x.dirRoot, x.dirName = r, key
	return r, nil
}

// writeCron writes the account's crontab into the cron daemon's spool,
// atomically: the archive's job and environment lines, with paths under
// the old home moved to the new one. The system's crontab binary is not
// used: it would read the file as root with the spool's own rules.
func (x *extractor) writeCron(e *Entry) error {
	b, ok, err := readMeta(e)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("crontab too large")
	}
	lines, bad := ParseCron(b)
	var out strings.Builder
	fmt.Fprintf(&out, "# Imported by nPanel from the cPanel archive %s.\n", x.a.req.GetPath())
	jobs := 0
	for _, l := range lines {
		t := l.Text
		if x.cpUser != "" && x.cpUser != x.acct.name {
			t = strings.ReplaceAll(t, "/home/"+x.cpUser+"/", x.acct.home+"/")
		} else if x.acct.home != "/home/"+x.acct.name {
			t = strings.ReplaceAll(t, "/home/"+x.acct.name+"/", x.acct.home+"/")
		}
		out.WriteString(t + "\n")
		if !l.Env {
			jobs++
		}
	}
	cp := x.env.Profile.Cpanel()
	gid := x.acct.gid
	if cp.CronGroup != "" {
		g, err := user.LookupGroup(cp.CronGroup)
		if err != nil {
			return fmt.Errorf("cron group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.MkdirAll(cp.CronSpoolDir, 0o700); err != nil {
		return err
	}
	spool, err := os.OpenRoot(cp.CronSpoolDir)
	if err != nil {
		return err
	}
	defer spool.Close()
	if err := atomicfile.Write(spool, x.acct.name, []byte(out.String()), 0o600, &atomicfile.Owner{UID: x.acct.uid, GID: gid}); err != nil {
		return err
	}
	note := ""
	if len(bad) > 0 {
		note = fmt.Sprintf("%d lines not understood left out", len(bad))
	}
	x.res.Items = append(x.res.Items, &agentpb.CpanelItem{Kind: "cron", Name: x.acct.name, Disposition: dImport, Note: fmt.Sprintf("%d jobs. %s", jobs, note), Entry: e.Raw})
	return nil
}
