package agentcmd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/npanel/npanel/nodeagent"
)

// A spent token file may be deleted once the node is enrolled; before,
// a missing file is a mistake to report.
func TestJoinTokenFileMissing(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(dir, "join-token")
	if _, err := joinToken("", gone, dir); err == nil {
		t.Fatal("missing token file accepted for a node that is not enrolled")
	}
	if err := os.WriteFile(filepath.Join(dir, nodeagent.IdentityFile), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := joinToken("", gone, dir); err != nil || tok != "" {
		t.Fatalf("enrolled node, token file deleted: %q, %v", tok, err)
	}
}
