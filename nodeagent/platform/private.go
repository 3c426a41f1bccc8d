package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PrivateTree takes every permission of "others" from the regular files
// under root and, with dirs, from root and the directories below it. A
// tenant's PHP runs as a local user: whatever others may read under a
// daemon's data (PowerDNS's DNSSEC keys, database files, the agent's key) is
// every tenant's. Setup calls it at every start, so an installation an older
// agent left readable is repaired; owners and group bits are kept, so the
// daemon that owns the files reads them as before. Symlinks are not
// followed and sockets are left alone. A missing root is not an error.
//
// dirs is false where the directory is the distribution's and someone
// else may need to pass through it (Alma 9's MariaDB socket lives in its
// datadir).
func PrivateTree(root string, dirs bool) error {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a daemon's file that came and went
			}
			return err
		}
		t := d.Type()
		if !t.IsRegular() && !(dirs && t.IsDir()) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if m := fi.Mode(); m.Perm()&0o007 != 0 {
			// Chmod keeps setgid and sticky bits only when given them.
			if err := os.Chmod(p, m.Perm()&^0o007|m&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("make %s private: %w", root, err)
	}
	return nil
}
