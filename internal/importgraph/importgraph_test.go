package importgraph

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/npanel/npanel/"

// rules: the packages matched by each pattern (relative to the module root)
// must not reach, directly or through others, a package under any of the
// forbidden trees of this module, nor one under the external prefixes.
// Test files are not checked: server tests run real agents.
var rules = []struct {
	patterns  []string
	forbidden []string
	external  []string
}{
	{[]string{"./controlplane/...", "./graph/..."}, []string{"nodeagent", "internal/agentcmd"}, nil},
	{[]string{"./nodeagent/...", "./internal/agentcmd/..."}, []string{"controlplane", "graph", "pki/ca", "scheduler"}, serverOnly},
	{[]string{"./protos/...", "./pki/...", "./validate/...", "./dnszone/...", "./internal/cmdline/..."}, []string{"nodeagent", "controlplane", "graph", "internal/agentcmd"}, nil},
	// What the agent binary links is what it costs in memory on every node
	// (issue 29): the server's heavy dependencies stay out of it, and out of
	// the node side of pki, which both sides use.
	{[]string{"./cmd/npanel-agent", "./pki"}, []string{"controlplane", "graph", "pki/ca", "scheduler"}, serverOnly},
}

// serverOnly are the dependencies of the control plane that must never be
// linked into the agent: etcd's server, the CA (smallstep's authority and
// its storage and KMS backends), GraphQL.
var serverOnly = []string{
	"go.etcd.io/etcd/server",
	"github.com/smallstep/certificates",
	"github.com/dgraph-io/badger",
	"github.com/99designs/gqlgen",
	"github.com/vektah/gqlparser",
	"go.step.sm/crypto/kms",
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestServerAndAgentApart(t *testing.T) {
	for _, r := range rules {
		graph, roots := listDeps(t, r.patterns)
		banned := func(p string) bool { return under(p, r.forbidden) || external(p, r.external) }
		for _, root := range roots {
			if path := reach(graph, root, banned); path != nil {
				t.Errorf("%s must not import %s; it does: %s",
					short(root), strings.Join(append(mapTrees(r.forbidden), r.external...), ", "), strings.Join(mapShort(path), " → "))
			}
		}
	}
}

// listDeps returns the import graph of patterns and their dependencies,
// and the packages the patterns match.
func listDeps(t *testing.T, patterns []string) (map[string][]string, []string) {
	t.Helper()
	rootsOut := goList(t, append([]string{"list", "-f", "{{.ImportPath}}"}, patterns...))
	roots := strings.Fields(string(rootsOut))
	if len(roots) == 0 {
		t.Fatalf("go list %v matched no packages", patterns)
	}
	out := goList(t, append([]string{"list", "-deps", "-json=ImportPath,Imports"}, patterns...))
	graph := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		graph[p.ImportPath] = p.Imports
	}
	return graph, roots
}

func goList(t *testing.T, args []string) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the import graph is read with go list: %v", err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = filepath.Join("..", "..") // the module root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// reach returns an import path from root to a banned package, or nil when
// there is none (breadth first: the shortest).
func reach(graph map[string][]string, root string, banned func(string) bool) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if banned(p) {
			var path []string
			for ; p != ""; p = prev[p] {
				path = append(path, p)
			}
			slices.Reverse(path)
			return path
		}
		for _, q := range graph[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}

func under(p string, trees []string) bool {
	for _, tree := range trees {
		if p == module+tree || strings.HasPrefix(p, module+tree+"/") {
			return true
		}
	}
	return false
}

// external reports whether p is one of the packages, or under one of the
// trees, named by full import path prefixes.
func external(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

func mapTrees(trees []string) []string {
	out := make([]string, len(trees))
	for i, t := range trees {
		out[i] = t + "/..."
	}
	return out
}

func short(p string) string { return strings.TrimPrefix(p, module) }

func mapShort(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = short(p)
	}
	return out
}

// agentFiles are the files of cmd/npanel that run agents or their helpers
// (main adds the agent subcommand, dev runs a local cluster, the mail quota
// warning is what a node's Dovecot runs); the server and ctl code must reach
// the agent only through the wire.
var agentFiles = map[string]bool{"main.go": true, "dev.go": true, "mailquota.go": true}

// TestCommandServerCode: cmd/npanel is one package linking both sides, so
// its server and ctl files are checked by their own imports.
func TestCommandServerCode(t *testing.T) {
	dir := filepath.Join("..", "..", "cmd", "npanel")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		name := filepath.Base(f)
		if agentFiles[name] || strings.HasSuffix(name, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); under(p, []string{"nodeagent", "internal/agentcmd"}) {
				t.Errorf("cmd/npanel/%s imports %s; only %v may", name, p, slices.Sorted(maps.Keys(agentFiles)))
			}
		}
	}
}

// TestReach checks the checker: a path through an intermediate package is
// found and reported, and a clean graph passes.
func TestReach(t *testing.T) {
	g := map[string][]string{
		module + "graph":         {module + "graph/model", module + "pki"},
		module + "graph/model":   {module + "nodeagent/actions"},
		module + "pki":           {"crypto/ecdsa"},
		module + "nodeagent/foo": {module + "protos/agentpb"},
	}
	nodeagent := func(p string) bool { return under(p, []string{"nodeagent"}) }
	path := reach(g, module+"graph", nodeagent)
	if got := strings.Join(mapShort(path), " → "); got != "graph → graph/model → nodeagent/actions" {
		t.Errorf("path %q", got)
	}
	if path := reach(g, module+"pki", nodeagent); path != nil {
		t.Errorf("clean package reported: %v", path)
	}
	if under(module+"graphql", []string{"graph"}) {
		t.Error("a sibling with a common prefix counted as under the tree")
	}
	g[module+"pki"] = append(g[module+"pki"], "github.com/smallstep/certificates/authority")
	ca := func(p string) bool { return external(p, serverOnly) }
	if got := strings.Join(mapShort(reach(g, module+"graph", ca)), " → "); got != "graph → pki → github.com/smallstep/certificates/authority" {
		t.Errorf("path to an external package %q", got)
	}
	if external("github.com/smallstep/certificatesx", serverOnly) || !external("go.etcd.io/etcd/server/v3/embed", serverOnly) {
		t.Error("external prefixes matched wrongly")
	}
}
