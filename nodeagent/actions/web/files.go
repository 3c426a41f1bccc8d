package web

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Managed configuration files are written through os.Root on their
// directory, atomically: a temporary file in the same directory, synced,
// renamed over the target, the directory synced. A crash leaves either the
// old or the new file, never a mix, and nginx never reads half a server
// block.

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
	if err := writeAtomic(root, name, data, perm); err != nil {
		return false, fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return true, nil
}

// writePath is writeFile for an absolute path.
func writePath(path string, data []byte) error {
	_, err := writeFile(filepath.Dir(path), filepath.Base(path), data, 0o644)
	return err
}

func writeAtomic(root *os.Root, name string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(root, name, data, perm)
	if err != nil {
		return err
	}
	err = syncFile(root, tmp)
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return err
	}
	return syncRoot(root)
}

// writeTemp writes data to a new temporary file next to name (not yet
// synced) and returns the temporary name. The vhost directory is scanned
// for *.conf, so the temporary name must not end in .conf.
func writeTemp(root *os.Root, name string, data []byte, perm os.FileMode) (tmp string, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp = "." + name + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = root.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	return tmp, f.Close()
}

func syncFile(root *os.Root, name string) error {
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// syncFS flushes the whole filesystem holding root's directory.
func syncFS(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

func syncRoot(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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

// putPath writes data to path, or removes path when data is nil.
func putPath(path string, data []byte) error {
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
		return syncRoot(root)
	}
	if err := writeAtomic(root, name, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
