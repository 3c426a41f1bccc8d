package web

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/npanel/npanel/internal/atomicfile"
)

// Managed configuration files are written through os.Root on their
// directory, atomically (internal/atomicfile): a crash leaves either the
// old or the new file, never a mix, and nginx never reads half a server
// block. Temporary names end in .tmp-<random>, never in .conf, so the
// vhost directory's *.conf scan never sees one.

// writeFile replaces dir/name with data unless it already holds exactly
// that; changed reports whether it wrote.
func writeFile(dir, name string, data []byte, perm os.FileMode) (changed bool, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	defer root.Close()
	if old, err := root.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := atomicfile.Write(root, name, data, perm, nil); err != nil {
		return false, fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return true, nil
}

// writePath is writeFile for an absolute path.
func writePath(path string, data []byte) error {
	_, err := writeFile(filepath.Dir(path), filepath.Base(path), data, 0o644)
	return err
}

// readPath returns the content of path, or nil and no error when it does
// not exist.
func readPath(path string) ([]byte, error) {
	root, err := os.OpenRoot(filepath.Dir(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	data, err := root.ReadFile(filepath.Base(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if data == nil && err == nil {
		data = []byte{}
	}
	return data, err
}

// putPathMode writes data to path with mode perm, or removes path when
// data is nil.
func putPathMode(path string, data []byte, perm os.FileMode) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer root.Close()
	name := filepath.Base(path)
	if data == nil {
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return atomicfile.SyncDir(root)
	}
	if err := atomicfile.Write(root, name, data, perm, nil); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
