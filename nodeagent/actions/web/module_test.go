package web

import (
	"testing"

	"github.com/npanel/npanel/nodeagent/platform"
)

// Two agents in one process (npanel dev, the test clusters) must not share
// a committer: it holds which account serves which name and which reloads
// are owed on its node.
func TestModulesDoNotShareHosts(t *testing.T) {
	p := platform.Debian12(t.TempDir())
	a, b := NewModule(), NewModule()
	h1, h2 := a.hostFor(p), a.hostFor(p)
	if h1 != h2 {
		t.Fatal("one module made two committers for one vhost directory")
	}
	if h1 == b.hostFor(p) {
		t.Fatal("two modules share a committer")
	}
	if h1.m != a {
		t.Fatal("committer does not belong to its module")
	}
	if q := platform.Debian12(t.TempDir()); a.hostFor(q) == a.hostFor(p) {
		t.Fatal("two vhost directories share a committer")
	}
}

// The test hooks are a module's, so a test setting one does not change
// what another agent renders.
func TestHooksArePerModule(t *testing.T) {
	a, b := NewModule(), NewModule()
	defer SetVhostExtra(a, func(string) string { return "x" })()
	defer SetNoOpenBasedir(a, func(string) bool { return true })()
	if a.vhostExtraOf("d") != "x" || a.openBasedir("u") {
		t.Fatal("hooks not set on a")
	}
	if b.vhostExtraOf("d") != "" || !b.openBasedir("u") {
		t.Fatal("hooks of a leaked into b")
	}
}
