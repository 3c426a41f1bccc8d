package nodeagent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// tempPattern names the temporary files of writeFileAtomic; Run removes
// leftovers of it, which only a crash mid-write can leave behind.
const tempPattern = ".*.tmp-*"

// writeFileAtomic replaces dir/name with data so that after a crash at any
// point the file holds either the old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	return writeFileAtomicFunc(dir, name, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeFileAtomicFunc is writeFileAtomic for content produced by fill: the
// content goes to a temporary file in the same directory (so the rename
// cannot cross filesystems), which is synced, renamed over the target, and
// then the directory is synced so that the rename itself survives a crash.
func writeFileAtomicFunc(dir, name string, perm os.FileMode, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	renamed := false
	defer func() {
		if err != nil {
			_ = tmp.Close()
			if !renamed {
				_ = os.Remove(tmp.Name())
			}
		}
	}()
	// Set the final mode before any content is in the file, so that a secret
	// is never readable under a wider mode than asked for.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	bw := bufio.NewWriter(tmp)
	if err := fill(bw); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps deletes temporary files a crash left in dir.
func removeStaleTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if ok, _ := filepath.Match(tempPattern, e.Name()); !ok || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return nil
}
