package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DataTree is a daemon's data directory that PrivateTree keeps from others.
type DataTree struct {
	Path string
	// Dirs: the directories too, not only the files (see PrivateTree).
	Dirs bool
}

// DNSData is PowerDNS's database directory: the gsqlite3 database with
// every zone's DNSSEC private keys, and its -wal and -shm files. Under a
// prefix the agent made the directory and it is pdns_server's alone; in
// production it is the distribution's, and only its files are changed.
func (p *Profile) DNSData() DataTree {
	return DataTree{Path: filepath.Dir(p.DNS().Database), Dirs: p.Prefix != ""}
}

// MariaDBData is MariaDB's datadir. Its files are mysql's alone; the
// directory keeps its search bit where the server's socket lives inside it
// (Alma 9's /var/lib/mysql/mysql.sock), for the accounts' clients.
func (p *Profile) MariaDBData() DataTree {
	d := p.DB()
	return DataTree{Path: d.MariaDBDataDir, Dirs: !strings.HasPrefix(d.MariaDBSocket, d.MariaDBDataDir+"/")}
}

// PostgresData is PostgreSQL's data directory (postgres refuses one that
// others may enter anyway).
func (p *Profile) PostgresData() DataTree {
	return DataTree{Path: p.DB().PgDataDir, Dirs: true}
}

// MakePrivate is PrivateTree(t.Path, t.Dirs).
func (t DataTree) MakePrivate() error { return PrivateTree(t.Path, t.Dirs) }

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
