package nodeagent

import (
	"io"
	"os"
	"path/filepath"

	"github.com/npanel/npanel/internal/atomicfile"
)

// The data directory's files (identity, journal) are root's alone and
// replaced atomically; these name that for the files that use them.

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
