package nodeagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/npanel/npanel/internal/atomicfile"
)

const lockFile = "lock"

// lockDataDir takes an exclusive lock on dir for the life of Run. Two agents
// on one data directory would interleave journal appends and overwrite each
// other's identity; the second one is refused instead. The lock is a flock
// on an open file, so the kernel releases it when the process dies and no
// stale lock can outlive a crash.
func lockDataDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another agent", dir)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// The data directory's files (identity, journal) are root's alone and
// replaced atomically.

func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(filepath.Join(dir, name), data, perm, nil)
}

func writeFileAtomicFunc(dir, name string, perm os.FileMode, fill func(io.Writer) error) error {
	return atomicfile.WriteFileFunc(filepath.Join(dir, name), perm, nil, fill)
}

func syncDir(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return atomicfile.SyncDir(root)
}

// removeStaleTemps deletes temporary files a crash left in dir.
func removeStaleTemps(dir string) error { return atomicfile.RemoveTemps(dir) }
