package web

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// Per-domain logs.
//
// nginx's master runs as root and opens every access_log and error_log
// path itself, creating what is missing. A path an account can change
// (anything under its home: it may rename ~/logs away and put a symlink to
// /etc in its place) would let it have root create or append to files
// anywhere. So nginx only ever opens logs in DomainLogDir/<user>/, a
// directory root owns (root:<account group>, 0750) inside the node's
// root-only log tree, and the files there are root's, 0640 to the
// account's group (the agent creates them before nginx does).
//
// The account reads them in ~/logs/DOMAIN.access.log and
// ~/logs/DOMAIN.error.log: hard links to those files, made by the agent
// through descriptors (the home is opened with os.Root, ~/logs without
// following symlinks), so nothing the account does to ~/logs can send the
// agent elsewhere. A hard link needs no way through the log tree, which
// stays closed to every other user. The account can remove or rename its
// links; it cannot write the files (0640, not its own). Where the home and
// the log tree are on different filesystems no link can be made, and the
// logs are read through the domainLogs API only.
//
// Rotation is the agent's (rotateLogs): a log above the size limit becomes
// .1 (the older ones .2 and .3, the oldest dropped), a new empty file takes
// its place, nginx reloads (which reopens every log from the root master;
// see rotateLogs for why not nginx -s reopen), and the link in ~/logs is
// moved to the new file.

// Log limits.
const (
	// MaxLogLines is the most lines one read returns.
	MaxLogLines = 1000
	// maxLogLine cuts a longer line; maxLogRead bounds one read in all
	// (the result is stored with the task in etcd).
	maxLogLine = 4 << 10
	maxLogRead = 128 << 10
	// DefaultLogRotateSize is the size above which a log is rotated.
	DefaultLogRotateSize = 64 << 20
	// logKeep is how many rotated generations stay (.1 .. .3).
	logKeep = 3
	// logRotateEvery is how often the agent looks at the sizes.
	logRotateEvery = 5 * time.Minute

	logDirMode  os.FileMode = 0o750
	logFileMode os.FileMode = 0o640
)

// logKinds are the suffixes of a domain's two logs.
var logKinds = []string{"access", "error"}

func logFileName(domain, kind string) string { return domain + "." + kind + ".log" }

func userLogDir(w platform.WebPaths, user string) string { return filepath.Join(w.DomainLogDir, user) }

// ensureLogs creates the account's log directory and its sites' log files
// with their owner and mode, removes the logs of domains it no longer
// serves, and (link) links each log into ~/logs.
func ensureLogs(w platform.WebPaths, o Owner, sites []*agentpb.Site, link bool) error {
	ud, err := openUserLogDir(w, o.Username, o.GID, true)
	if err != nil {
		return err
	}
	defer ud.Close()
	var names []string
	for _, s := range sites {
		for _, k := range logKinds {
			name := logFileName(s.GetDomain(), k)
			if err := ensureLogFile(ud, name, o.GID); err != nil {
				return fmt.Errorf("web: log %s: %w", name, err)
			}
			names = append(names, name)
		}
	}
	gone := pruneLogs(ud, names)
	if link {
		unlinkLogs(o, gone)
		linkLogs(ud, o, names)
	}
	return nil
}

// pruneLogs removes from dir the logs, rotated generations included, that
// are not named in keep (the logs of a domain the account no longer
// serves), and returns the names of the current logs it removed.
func pruneLogs(dir *os.Root, keep []string) (gone []string) {
	ents, err := fs.ReadDir(dir.FS(), ".")
	if err != nil {
		return nil
	}
	for _, e := range ents {
		name := e.Name()
		base := name
		if i := strings.LastIndexByte(name, '.'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				base = name[:i] // a rotated generation
			}
		}
		if !(strings.HasSuffix(base, ".access.log") || strings.HasSuffix(base, ".error.log")) || slices.Contains(keep, base) {
			continue
		}
		if dir.Remove(name) == nil && base == name {
			gone = append(gone, name)
		}
	}
	return gone
}

// openHomeLogs opens the account's ~/logs directory inside its home, never
// through a symlink the account put in its place.
func openHomeLogs(o Owner) (*os.File, error) {
	home, err := os.OpenRoot(o.Home)
	if err != nil {
		return nil, err
	}
	defer home.Close()
	return home.OpenFile("logs", os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
}

// unlinkLogs removes from ~/logs the links of logs that are gone: regular
// files of these names that are not the account's own (they were root's
// log files).
func unlinkLogs(o Owner, names []string) {
	if len(names) == 0 {
		return
	}
	logs, err := openHomeLogs(o)
	if err != nil {
		return
	}
	defer logs.Close()
	lfd := int(logs.Fd())
	for _, name := range names {
		var have unix.Stat_t
		if unix.Fstatat(lfd, name, &have, unix.AT_SYMLINK_NOFOLLOW) == nil && have.Mode&unix.S_IFMT == unix.S_IFREG && have.Uid != o.UID {
			_ = unix.Unlinkat(lfd, name, 0)
		}
	}
}

// openUserLogDir opens DomainLogDir/<user>, creating it (create) and
// setting root:gid 0750 on it.
func openUserLogDir(w platform.WebPaths, user string, gid uint32, create bool) (*os.Root, error) {
	base, err := os.OpenRoot(w.DomainLogDir)
	if err != nil {
		return nil, fmt.Errorf("web: log directory: %w", err)
	}
	defer base.Close()
	if create {
		if err := base.Mkdir(user, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("web: log directory of %s: %w", user, err)
		}
		// The directory is in root's log tree: nobody else can have put
		// anything in its place, and O_NOFOLLOW says so again.
		f, err := base.OpenFile(user, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return nil, fmt.Errorf("web: log directory of %s: %w", user, err)
		}
		err = f.Chown(0, int(gid))
		if err == nil {
			err = f.Chmod(logDirMode)
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("web: log directory of %s: %w", user, err)
		}
	}
	return base.OpenRoot(user)
}

// ensureLogFile creates name in dir without truncating it, and gives it
// root as its owner, the account's group and mode 0640.
func ensureLogFile(dir *os.Root, name string, gid uint32) error {
	f, err := dir.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, logFileMode)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", name)
	}
	// Root's again if nginx gave it to its worker user: a reopen (USR1,
	// as the distribution's logrotate sends daily) chowns every log.
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != gid || st.Uid != 0 {
		if err := f.Chown(0, int(gid)); err != nil {
			return err
		}
	}
	if fi.Mode().Perm() != logFileMode {
		return f.Chmod(logFileMode)
	}
	return nil
}

// linkLogs links each named log of dir into the home's logs directory,
// replacing a link of an older generation of the file. Best effort: the
// home is the account's, and whatever it made of ~/logs (removed it, put a
// symlink or a file there) only costs it the links. A file of that name
// the account owns is its own and left alone.
func linkLogs(dir *os.Root, o Owner, names []string) {
	logs, err := openHomeLogs(o)
	if err != nil {
		return
	}
	defer logs.Close()
	src, err := dir.Open(".")
	if err != nil {
		return
	}
	defer src.Close()
	lfd, sfd := int(logs.Fd()), int(src.Fd())
	for _, name := range names {
		var want, have unix.Stat_t
		if unix.Fstatat(sfd, name, &want, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		switch err := unix.Fstatat(lfd, name, &have, unix.AT_SYMLINK_NOFOLLOW); {
		case err == nil && have.Dev == want.Dev && have.Ino == want.Ino:
			continue // linked already
		case err == nil && have.Mode&unix.S_IFMT == unix.S_IFREG && have.Uid != o.UID:
			// An older generation of the log (root's, never the
			// account's: it cannot link files it does not own).
			if unix.Unlinkat(lfd, name, 0) != nil {
				continue
			}
		case err == nil:
			continue // the account's own file, directory or symlink
		}
		// Flags 0: the source is not followed if it were a symlink; the
		// new name is created in the directory opened above, or fails.
		_ = unix.Linkat(sfd, name, lfd, name, 0)
	}
}

// removeLogs removes the account's log directory (its account is gone).
func removeLogs(w platform.WebPaths, user string) error {
	base, err := os.OpenRoot(w.DomainLogDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer base.Close()
	if err := base.RemoveAll(user); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("web: remove logs of %s: %w", user, err)
	}
	return nil
}

// readLogTail returns the last lines of name in the account's log
// directory that sc asks for, oldest first, cut to the size bounds. A log
// that does not exist yet (a site without requests) has no lines. When sc
// has a since the whole file is newer than, the lines before it are read
// from the last rotated generation (name.1) too.
func readLogTail(w platform.WebPaths, user, name string, sc LogScan) (lines []string, truncated bool, err error) {
	base, err := os.OpenRoot(w.DomainLogDir)
	if err != nil {
		return nil, false, err
	}
	defer base.Close()
	ud, err := base.OpenRoot(user)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer ud.Close()
	lines, truncated, exhausted, err := scanLogFile(ud, name, sc)
	if err != nil || !exhausted || sc.Since.IsZero() || truncated || len(lines) >= sc.Lines {
		return lines, truncated, err
	}
	older := sc
	older.Lines = sc.Lines - len(lines)
	older.Limit = cmp.Or(sc.Limit, maxLogRead)
	for _, l := range lines {
		older.Limit -= len(l)
	}
	if older.Limit <= 0 {
		return lines, true, nil
	}
	// .1 has a scan bound of its own: a since that reaches past the
	// rotation reads at most two bounds' worth.
	prev, ptrunc, _, err := scanLogFile(ud, name+".1", older)
	if err != nil {
		return lines, truncated, nil // the current file's lines are the answer
	}
	return append(prev, lines...), ptrunc, nil
}

func scanLogFile(dir *os.Root, name string, sc LogScan) (lines []string, truncated, exhausted bool, err error) {
	f, err := dir.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, true, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	defer f.Close()
	size, err := sizeOf(f)
	if err != nil {
		return nil, false, false, err
	}
	return scanBack(f, size, sc)
}

// tail returns the last n lines of f within limit bytes.
func tail(f io.ReaderAt, n, limit int) ([]string, bool, error) {
	size, err := sizeOf(f)
	if err != nil {
		return nil, false, err
	}
	return ScanBack(f, size, LogScan{Lines: n, Limit: limit})
}

func sizeOf(f io.ReaderAt) (int64, error) {
	if s, ok := f.(interface{ Stat() (os.FileInfo, error) }); ok {
		fi, err := s.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	if s, ok := f.(interface{ Size() int64 }); ok {
		return s.Size(), nil
	}
	return 0, errors.New("size of log unknown")
}

// rotateLoop rotates the node's domain logs every logRotateEvery until ctx
// ends.
func (m *Module) rotateLoop(ctx context.Context, env *actions.Env) {
	t := time.NewTicker(logRotateEvery)
	defer t.Stop()
	owed := false // a rotation's reload failed: nginx still writes the .1 files
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rotated, err := m.rotateLogs(ctx, env, m.rotateSize())
			if err == nil && len(rotated) == 0 && owed {
				err = m.hostFor(env.Profile).requestReload(ctx, env, NginxService)
			}
			owed = err != nil
			if err != nil && env.Logger != nil {
				env.Logger.Warn("rotate domain logs", "err", err)
			}
		}
	}
}

func (m *Module) rotateSize() int64 {
	if m.logRotateSize > 0 {
		return m.logRotateSize
	}
	return DefaultLogRotateSize
}

// rotateLogs rotates every domain log above limit bytes and has nginx
// reopen its logs when it did; it returns the logs it rotated.
func (m *Module) rotateLogs(ctx context.Context, env *actions.Env, limit int64) ([]string, error) {
	p := env.Profile
	w := p.Web()
	users, err := os.ReadDir(w.DomainLogDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	type relink struct {
		owner Owner
		names []string
	}
	var rotated []string
	var links []relink
	for _, u := range users {
		if !u.IsDir() || checkUsername(u.Name()) != nil {
			continue
		}
		ud, err := openUserLogDir(w, u.Name(), 0, false)
		if err != nil {
			continue
		}
		fi, err := ud.Stat(".")
		if err != nil {
			ud.Close()
			continue
		}
		gid := fi.Sys().(*syscall.Stat_t).Gid
		ents, _ := fs.ReadDir(ud.FS(), ".")
		var names []string
		for _, e := range ents {
			name := e.Name()
			if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".access.log") || strings.HasSuffix(name, ".error.log")) {
				continue
			}
			info, err := e.Info()
			if err != nil || info.Size() <= limit {
				continue
			}
			if err := rotateOne(ud, name, gid); err != nil {
				continue
			}
			rotated = append(rotated, filepath.Join(u.Name(), name))
			names = append(names, name)
		}
		ud.Close()
		if len(names) > 0 {
			links = append(links, relink{owner: ownerOf(p, u.Name()), names: names})
		}
	}
	if len(rotated) == 0 {
		return nil, nil
	}
	// A reload, not a reopen (SIGUSR1, nginx -s reopen): on a reopen the
	// workers open the logs again too, as nginx's unprivileged user, and
	// the log tree is root's alone; on a reload the root master opens
	// them and the new workers inherit the descriptors.
	err = m.hostFor(p).requestReload(ctx, env, NginxService)
	for _, l := range links {
		if l.owner.Home == "" {
			continue
		}
		if ud, err := openUserLogDir(w, l.owner.Username, 0, false); err == nil {
			linkLogs(ud, l.owner, l.names)
			ud.Close()
		}
	}
	return rotated, err
}

// rotateOne shifts name's generations and puts a new empty file in place.
func rotateOne(dir *os.Root, name string, gid uint32) error {
	_ = dir.Remove(name + "." + strconv.Itoa(logKeep))
	for i := logKeep - 1; i >= 1; i-- {
		_ = dir.Rename(name+"."+strconv.Itoa(i), name+"."+strconv.Itoa(i+1))
	}
	if err := dir.Rename(name, name+".1"); err != nil {
		return err
	}
	return ensureLogFile(dir, name, gid)
}

// ownerOf looks up an account by its user name; a zero Home when there is
// no such user.
func ownerOf(p *platform.Profile, name string) Owner {
	u, err := user.Lookup(name)
	if err != nil {
		return Owner{}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return Owner{}
	}
	return Owner{Username: name, UID: uint32(uid), GID: uint32(gid), Home: filepath.Join(p.HomeBase, name)}
}
