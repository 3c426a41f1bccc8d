package logtail

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
)

// position is how far every consumer has taken one file.
type position struct {
	Path   string `json:"path"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

type positionsFile struct {
	Files []position `json:"files"`
}

func positionsPath(dataDir string) string {
	return filepath.Join(dataDir, "logtail", "positions.json")
}

// loadPositions reads the saved positions by path (a path may have a
// current and a rotated-away generation).
func loadPositions(dataDir string) (map[string][]position, error) {
	out := map[string][]position{}
	if dataDir == "" {
		return out, nil
	}
	b, err := os.ReadFile(positionsPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	var pf positionsFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return out, err
	}
	for _, p := range pf.Files {
		if p.Path != "" && p.Offset >= 0 {
			out[p.Path] = append(out[p.Path], p)
		}
	}
	return out, nil
}

// savePositions writes what consumers have taken of every open file,
// atomically. Saved positions of files not seen since the start are kept.
func (e *Engine) savePositions() error {
	if e.cfg.DataDir == "" {
		return nil
	}
	var pf positionsFile
	for p, t := range e.files {
		pf.Files = append(pf.Files, position{p, t.ino, t.acked()})
	}
	for _, t := range e.draining {
		pf.Files = append(pf.Files, position{t.src.Path, t.ino, t.acked()})
	}
	for _, ps := range e.saved {
		pf.Files = append(pf.Files, ps...)
	}
	b, err := json.Marshal(pf)
	if err != nil {
		return err
	}
	dir := filepath.Dir(positionsPath(e.cfg.DataDir))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(positionsPath(e.cfg.DataDir), b, 0o600, nil); err != nil {
		return err
	}
	e.dirty, e.lastSave = false, time.Now()
	return nil
}
