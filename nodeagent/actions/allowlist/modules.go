package allowlist

import (
	"fmt"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/backupnode"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/actions/web"
)

// moduleTable lists every service module in the order the agent sets them
// up. Each call makes new modules: every agent owns its own.
func moduleTable() []actions.Module {
	return []actions.Module{web.NewModule(), dns.NewModule(), db.NewModule(), mail.NewModule(), backupnode.NewModule()}
}

// optIn names the modules "all" leaves out: a backup node is a role of
// its own, and its sshd (a second SSH port open to the other nodes)
// should run only where an operator asked for it.
var optIn = map[string]bool{"backup": true}

// ModuleNames lists the modules an agent can run.
func ModuleNames() []string {
	var out []string
	for _, m := range moduleTable() {
		out = append(out, m.Name())
	}
	return out
}

// Modules returns new modules of the names given (each at most once, in
// setup order), for one agent; "all" selects every module but the opt-in
// ones (backup), which are named alone, and "none" or no name none.
func Modules(names []string) ([]actions.Module, error) {
	want := map[string]bool{}
	for _, n := range names {
		switch n = strings.TrimSpace(n); n {
		case "", "none":
		case "all":
			for _, m := range moduleTable() {
				want[m.Name()] = want[m.Name()] || !optIn[m.Name()]
			}
		default:
			known := false
			for _, m := range moduleTable() {
				known = known || m.Name() == n
			}
			if !known {
				return nil, fmt.Errorf("unknown module %q (known: %s)", n, strings.Join(ModuleNames(), ", "))
			}
			want[n] = true
		}
	}
	var out []actions.Module
	for _, m := range moduleTable() {
		if want[m.Name()] {
			out = append(out, m)
		}
	}
	return out, nil
}

// OwnModules returns mods with every module this package knows replaced by
// a new one of the same name: the modules hold per-node state, and a
// caller that hands one module list to several agents (npanel dev runs a
// few in one process) must not make them share it. Modules of other kinds
// are kept as they are.
func OwnModules(mods []actions.Module) []actions.Module {
	out := make([]actions.Module, 0, len(mods))
	for _, m := range mods {
		for _, fresh := range moduleTable() {
			if fresh.Name() == m.Name() {
				m = fresh
				break
			}
		}
		out = append(out, m)
	}
	return out
}
