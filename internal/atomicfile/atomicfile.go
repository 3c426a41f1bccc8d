// Package atomicfile replaces files so that after a crash at any point a
// file holds either its old or its new content, never a mix or nothing.
//
// The content goes to a temporary file in the target's directory (so the
// rename cannot cross filesystems), which gets its final mode and owner
// before any content is in it, is synced, renamed over the target, and then
// the directory is synced so that the rename itself survives a crash.
// Every path is resolved through an *os.Root: a caller that confines its
// writes to a directory passes that root, and the others get one opened on
// the target's directory, so a symbolic link in place of the target or its
// temporary file is never followed out of it.
//
// Temporary files are named "."+name+".tmp-"+random; TempPattern matches
// them, and RemoveTemps deletes those a crash left behind.
package atomicfile

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TempPattern matches (filepath.Match) the names of temporary files.
const TempPattern = ".*.tmp-*"

// Owner is the numeric owner a file is given; nil keeps the writer's.
type Owner struct{ UID, GID int }

// Write replaces name in root with data.
func Write(root *os.Root, name string, data []byte, perm os.FileMode, owner *Owner) error {
	return WriteFunc(root, name, perm, owner, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc is Write for content produced by fill. If fill fails, the
// target is left as it was and no temporary file remains.
func WriteFunc(root *os.Root, name string, perm os.FileMode, owner *Owner, fill func(io.Writer) error) error {
	p, err := Create(root, name, perm, owner)
	if err != nil {
		return err
	}
	defer p.Abort()
	bw := bufio.NewWriter(p)
	if err := fill(bw); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return p.Commit()
}

// WriteFile replaces the file at path with data, through a root opened on
// its directory.
func WriteFile(path string, data []byte, perm os.FileMode, owner *Owner) error {
	return WriteFileFunc(path, perm, owner, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileFunc is WriteFile for content produced by fill.
func WriteFileFunc(path string, perm os.FileMode, owner *Owner, fill func(io.Writer) error) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer root.Close()
	return WriteFunc(root, filepath.Base(path), perm, owner, fill)
}

// Pending is a replacement of one file in progress: content written to it
// goes to the temporary file until Commit. Callers that write many files
// at once (and sync them together) use its steps one by one; the others
// use Write.
type Pending struct {
	root      *os.Root
	name, tmp string
	f         *os.File // nil once closed
	renamed   bool
}

// Create starts replacing name in root. The temporary file has perm and
// owner before anything is written to it, so that a secret is never
// readable under a wider mode or by another user than asked for. The
// caller must end it with Commit or Abort (Abort after Commit does
// nothing, so a deferred Abort is the usual cleanup).
func Create(root *os.Root, name string, perm os.FileMode, owner *Owner) (_ *Pending, err error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("write %q: not a file name", name)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + name + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm.Perm())
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = root.Remove(tmp)
		}
	}()
	if owner != nil {
		if err := f.Chown(owner.UID, owner.GID); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	// After Chown, which clears set-id bits, and because the umask may
	// have narrowed the mode OpenFile created.
	if err := f.Chmod(perm); err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	return &Pending{root: root, name: name, tmp: tmp, f: f}, nil
}

// Write writes to the temporary file.
func (p *Pending) Write(b []byte) (int, error) {
	if p.f == nil {
		return 0, fmt.Errorf("write %s: %w", p.name, fs.ErrClosed)
	}
	return p.f.Write(b)
}

// TempName is the temporary file's name in the root, for a caller that
// reads the content back before committing it.
func (p *Pending) TempName() string { return p.tmp }

// Sync makes the content durable and closes the temporary file.
func (p *Pending) Sync() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Sync()
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	p.f = nil
	if err != nil {
		return fmt.Errorf("write %s: sync: %w", p.name, err)
	}
	return nil
}

// Close closes the temporary file without syncing it, for a caller that
// makes a batch durable at once with SyncFS before Rename.
func (p *Pending) Close() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("write %s: %w", p.name, err)
	}
	return nil
}

// Rename moves the closed temporary file over the target. The rename is
// durable only once the directory is synced (SyncDir).
func (p *Pending) Rename() error {
	if p.f != nil {
		return fmt.Errorf("write %s: rename before the content was synced or closed", p.name)
	}
	if err := p.root.Rename(p.tmp, p.name); err != nil {
		return fmt.Errorf("write %s: %w", p.name, err)
	}
	p.renamed = true
	return nil
}

// Commit syncs the content, renames it over the target and syncs the
// directory. On error before the rename the target is untouched.
func (p *Pending) Commit() error {
	if err := p.Sync(); err != nil {
		return err
	}
	if err := p.Rename(); err != nil {
		return err
	}
	if err := SyncDir(p.root); err != nil {
		return fmt.Errorf("write %s: %w", p.name, err)
	}
	return nil
}

// Abort removes the temporary file unless it was renamed.
func (p *Pending) Abort() {
	_ = p.Close()
	if !p.renamed {
		_ = p.root.Remove(p.tmp)
		p.renamed = true // nothing left to remove
	}
}

// SyncDir syncs root's directory, making renames and removals in it
// durable.
func SyncDir(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", root.Name(), err)
	}
	return nil
}

// SyncFS flushes the whole filesystem holding root's directory (syncfs(2)):
// one call instead of an fsync per file for a large batch, at the price of
// also flushing whatever else is dirty on that filesystem.
func SyncFS(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", root.Name(), err)
	}
	return nil
}

// RemoveTemps deletes the temporary files a crash left in dir. Only call it
// where no writer can be running (under the directory's owner's lock).
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if ok, _ := filepath.Match(TempPattern, e.Name()); !ok || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return nil
}
