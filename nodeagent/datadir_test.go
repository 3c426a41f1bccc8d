package nodeagent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/npanel/npanel/internal/atomicfile"
)

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if ok, _ := filepath.Match(atomicfile.TempPattern, e.Name()); ok {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
