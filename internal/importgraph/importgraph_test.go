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
// forbidden trees. Test files are not checked: server tests run real agents.
var rules = []struct {
	patterns  []string
	forbidden []string
}{
	{[]string{"./controlplane/...", "./graph/..."}, []string{"nodeagent"}},
	{[]string{"./nodeagent/..."}, []string{"controlplane", "graph"}},
	{[]string{"./protos/...", "./pki/...", "./validate/...", "./dnszone/..."}, []string{"nodeagent", "controlplane", "graph"}},
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestServerAndAgentApart(t *testing.T) {
	for _, r := range rules {
		graph, roots := listDeps(t, r.patterns)
		for _, root := range roots {
			if path := reach(graph, root, r.forbidden); path != nil {
				t.Errorf("%s must not import %s/...; it does: %s",
					short(root), strings.Join(r.forbidden, "/..., "), strings.Join(mapShort(path), " → "))
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

// reach returns an import path from root to a package under one of the
// forbidden trees, or nil when there is none (breadth first: the shortest).
func reach(graph map[string][]string, root string, forbidden []string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if under(p, forbidden) {
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

func short(p string) string { return strings.TrimPrefix(p, module) }

func mapShort(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = short(p)
	}
	return out
}

// agentFiles are the files of cmd/npanel that run agents or their helpers
// (the agent subcommand, dev's local cluster, the mail quota warning a
// node's Dovecot runs); the server and ctl code must reach the agent only
// through the wire.
var agentFiles = map[string]bool{"agent.go": true, "dev.go": true, "mailquota.go": true}

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
			if p, _ := strconv.Unquote(imp.Path.Value); under(p, []string{"nodeagent"}) {
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
	path := reach(g, module+"graph", []string{"nodeagent"})
	if got := strings.Join(mapShort(path), " → "); got != "graph → graph/model → nodeagent/actions" {
		t.Errorf("path %q", got)
	}
	if path := reach(g, module+"pki", []string{"nodeagent"}); path != nil {
		t.Errorf("clean package reported: %v", path)
	}
	if under(module+"graphql", []string{"graph"}) {
		t.Error("a sibling with a common prefix counted as under the tree")
	}
}
