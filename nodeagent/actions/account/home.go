package account

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"syscall"

	"github.com/npanel/npanel/nodeagent/platform"
)

// homeMode lets other users (the web server) traverse the home to reach
// public_html without listing it.
const homeMode os.FileMode = 0o711

// skeleton is what every home starts with. Entries are created when missing
// and otherwise left alone: once created, the home and what is in it belong
// to the account, and an ensure must not undo what its owner chose.
var skeleton = []struct {
	name string
	mode os.FileMode
}{
	{"public_html", 0o755},
	{"logs", 0o750},
	{"tmp", 0o700},
}

// ensureHome converges u's home (HomeBase/<name>, mode homeMode, owned by the
// user) and creates missing skeleton entries. It runs no commands.
//
// Everything goes through os.Root: HomeBase is root's, but inside the home
// the user can rename, replace and symlink at will, so no path below the
// home is trusted to stay what it was a moment ago.
func ensureHome(p *platform.Profile, u passwdEntry, log *slog.Logger) error {
	if err := os.MkdirAll(p.HomeBase, 0o755); err != nil {
		return fmt.Errorf("create home base: %w", err)
	}
	base, err := os.OpenRoot(p.HomeBase)
	if err != nil {
		return fmt.Errorf("open home base: %w", err)
	}
	defer base.Close()

	if _, err := ensureDir(base, u.Name, homeMode, u.UID, u.GID, true); err != nil {
		return fmt.Errorf("home %s: %w", u.Home, err)
	}
	home, err := base.OpenRoot(u.Name)
	if err != nil {
		return fmt.Errorf("home %s: %w", u.Home, err)
	}
	defer home.Close()
	for _, s := range skeleton {
		ok, err := ensureDir(home, s.name, s.mode, u.UID, u.GID, false)
		if err != nil {
			return fmt.Errorf("home %s: %s: %w", u.Home, s.name, err)
		}
		if !ok {
			log.Info("skeleton entry replaced by the account; left alone", "home", u.Home, "entry", s.name)
		}
	}
	return nil
}

// ensureDir makes name in root a directory with mode and owner. An existing
// directory is corrected only if enforce is set. ok is false when name
// exists as something other than a directory and enforce is not set (the
// entry is then left as it is); with enforce that is an error.
//
// Owner and mode are set through a descriptor of the directory, checked to
// be the very inode that was created or inspected: a path-based chown or
// chmod could be redirected by a symlink swapped in between.
func ensureDir(root *os.Root, name string, mode os.FileMode, uid, gid uint32, enforce bool) (ok bool, err error) {
	fi, err := root.Lstat(name)
	created := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// 0700 until owner and mode are right, so that the directory is never
		// open to others under the wrong owner.
		if err := root.Mkdir(name, 0o700); err != nil {
			return false, err
		}
		if fi, err = root.Lstat(name); err != nil {
			return false, err
		}
		created = true
	case err != nil:
		return false, err
	}
	if !fi.IsDir() {
		if enforce {
			return false, fmt.Errorf("exists and is not a directory (%s)", fi.Mode().Type())
		}
		return false, nil
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !created && (!enforce || (st.Uid == uid && st.Gid == gid && fi.Mode().Perm() == mode && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0)) {
		return true, nil
	}

	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	ffi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !os.SameFile(fi, ffi) {
		return false, errors.New("changed while being set up; try again")
	}
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return false, err
	}
	if err := f.Chmod(mode); err != nil {
		return false, err
	}
	return true, nil
}

func sysStat(fi fs.FileInfo) (*syscall.Stat_t, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok
}
