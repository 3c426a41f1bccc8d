package agentcmd

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// Every key the packaged agent.yaml shows, commented out or not, is a
// flag the agent has: a key left behind by a removed flag would stop the
// agent at start once an operator uncommented it.
func TestPackagedConfigKeysAreFlags(t *testing.T) {
	b, err := os.ReadFile("../../packaging/etc/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flags := New("agent", "test").Flags()
	// The root command's persistent flags.
	flags.String("log-level", "info", "")
	flags.String("log-format", "text", "")
	key := regexp.MustCompile(`^#? ?([a-z][a-z0-9-]*):(\s|$)`)
	n := 0
	for i, line := range strings.Split(string(b), "\n") {
		m := key.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		if flags.Lookup(m[1]) == nil {
			t.Errorf("agent.yaml line %d: %q is not a flag of the agent", i+1, m[1])
		}
	}
	if n < 10 {
		t.Fatalf("found %d keys in agent.yaml; the pattern no longer matches its lines", n)
	}
}
