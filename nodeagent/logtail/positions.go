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
	// Skipping: Offset is inside an overlong line already shipped cut,
	// whose rest up to its newline is not a line of its own.
	Skipping bool `json:"skipping,omitempty"`
}

// journalPosition is the cursor of the last journal record every
// consumer has taken of a unit.
type journalPosition struct {
	Unit   string `json:"unit"`
	Cursor string `json:"cursor"`
}

type positionsFile struct {
	Files    []position        `json:"files"`
	Journals []journalPosition `json:"journals,omitempty"`
}

func positionsPath(dataDir string) string {
	return filepath.Join(dataDir, "logtail", "positions.json")
}

// loadPositions reads the saved positions by path (a path may have a
// current and a rotated-away generation) and the journal cursors by unit.
func loadPositions(dataDir string) (map[string][]position, map[string]string, error) {
	out, cursors := map[string][]position{}, map[string]string{}
	if dataDir == "" {
		return out, cursors, nil
	}
	b, err := os.ReadFile(positionsPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return out, cursors, nil
	}
	if err != nil {
		return out, cursors, err
	}
	var pf positionsFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return out, cursors, err
	}
	for _, p := range pf.Files {
		if p.Path != "" && p.Offset >= 0 {
			out[p.Path] = append(out[p.Path], p)
		}
	}
	for _, j := range pf.Journals {
		if j.Unit != "" && j.Cursor != "" {
			cursors[j.Unit] = j.Cursor
		}
	}
	return out, cursors, nil
}

// savePositions writes what consumers have taken of every open file,
// atomically. Saved positions of files not seen since the start are kept.
func (e *Engine) savePositions() error {
	if e.cfg.DataDir == "" {
		return nil
	}
	var pf positionsFile
	for p, t := range e.files {
		pf.Files = append(pf.Files, t.position(p))
	}
	for _, t := range e.draining {
		pf.Files = append(pf.Files, t.position(t.src.Path))
	}
	for _, ps := range e.saved {
		pf.Files = append(pf.Files, ps...)
	}
	// Units gone keep their cursor: one that comes back resumes after it.
	for unit, j := range e.journals {
		if j.cursor != "" {
			pf.Journals = append(pf.Journals, journalPosition{unit, j.cursor})
		}
	}
	for unit, c := range e.cursors {
		if _, ok := e.journals[unit]; !ok {
			pf.Journals = append(pf.Journals, journalPosition{unit, c})
		}
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
