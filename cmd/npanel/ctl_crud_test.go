package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLICRUD drives the update and delete commands through the real
// binary: state printed after each change, NOT_FOUND for unknown names
// (exit 1, naming the thing), bad input exit 2, refusals exit 1 with the
// API's code, and the audit log and whoami.
func TestCLICRUD(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	ok := func(stdin string, args ...string) string {
		t.Helper()
		out, code := run(t, env, stdin, append([]string{"ctl"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out)
		}
		return out
	}
	failsIn := func(stdin string, want int, contains string, args ...string) {
		t.Helper()
		out, code := run(t, env, stdin, append([]string{"ctl"}, args...)...)
		if code != want || !strings.Contains(out, contains) {
			t.Errorf("%v: exit %d, want %d with %q: %s", args, code, want, contains, out)
		}
	}
	fails := func(want int, contains string, args ...string) {
		t.Helper()
		failsIn("", want, contains, args...)
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
	}

	if out := ok("", "whoami"); !strings.Contains(out, "admin") || !strings.Contains(out, "ADMIN") {
		t.Errorf("whoami: %s", out)
	}
	ok("", "plan", "create", "basic", "--disk-mb", "100")
	ok("", "plan", "create", "big", "--disk-mb", "300", "--domains", "3")
	var plan struct {
		Name        string
		Domains     int
		PHPVersions []string
	}
	decode(ok("", "plan", "update", "basic", "--domains", "2", "--php", "8.2,8.3", "-o", "json"), &plan)
	if plan.Domains != 2 || len(plan.PHPVersions) != 2 {
		t.Errorf("plan after update: %+v", plan)
	}
	if out := ok("", "plan", "update", "basic", "--bandwidth-mb", "5"); !strings.Contains(out, "basic") || !strings.Contains(out, "8.2,8.3") {
		t.Errorf("plan update does not print the plan: %s", out)
	}
	fails(1, "nope", "plan", "update", "nope", "--domains", "2")
	fails(1, "NOT_FOUND", "plan", "delete", "nope", "--yes")
	fails(2, "INVALID_INPUT", "plan", "update", "basic", "--domains", "0")
	fails(2, "nothing to change", "plan", "update", "basic")
	fails(2, "nothing to change", "plan", "update", "basic", "-o", "json")

	ok("reseller-password-123\n", "reseller", "create", "resa", "--max-accounts", "2", "--max-disk-mb", "1000", "--plans", "basic", "--password-stdin")
	ok("", "account", "create", "acct1", "--domain", "acct1.example.com", "--plan", "basic", "--owner", "resa")
	fails(1, "CONFLICT", "plan", "delete", "basic", "--yes")
	fails(1, "1 account", "reseller", "delete", "resa", "--yes")
	fails(1, "QUOTA_EXCEEDED", "reseller", "update", "resa", "--max-accounts", "0")
	fails(1, "NOT_FOUND", "reseller", "update", "nope", "--max-accounts", "3")
	fails(2, "INVALID_INPUT", "reseller", "update", "resa", "--node-selector", "zone in (")
	var res struct {
		MaxAccounts int
		Plans       []string
	}
	decode(ok("", "reseller", "update", "resa", "--max-accounts", "5", "--plans", "basic,big", "-o", "json"), &res)
	if res.MaxAccounts != 5 || len(res.Plans) != 2 {
		t.Errorf("reseller after update: %+v", res)
	}

	// Names complete: plans, then an account and a plan.
	if out, code := run(t, env, "", "__complete", "ctl", "plan", "update", "b"); code != 0 || !strings.Contains(out, "basic") || !strings.Contains(out, "big") {
		t.Errorf("plan name completion: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "__complete", "ctl", "account", "change-plan", "acct1", "bi"); code != 0 || !strings.Contains(out, "big") || strings.Contains(out, "basic") {
		t.Errorf("account change-plan completion: exit %d: %s", code, out)
	}
	if out := ok("", "account", "change-plan", "acct1", "big"); !strings.Contains(out, "big") {
		t.Errorf("change-plan does not print the account on its new plan: %s", out)
	}
	fails(1, "NOT_FOUND", "account", "change-plan", "nope", "big")
	fails(1, "nope", "account", "change-plan", "acct1", "nope")
	fails(2, "accepts 2 arg", "account", "change-plan", "acct1")

	ok("user-password-123\n", "user", "create", "u1", "--account", "acct1", "--password-stdin")
	var users []struct {
		Name  string
		Owner *string
	}
	decode(ok("", "user", "list", "--account", "acct1", "-o", "json"), &users)
	if len(users) != 1 || users[0].Name != "u1" {
		t.Errorf("user list --account acct1: %+v", users)
	}
	decode(ok("", "user", "list", "--role", "reseller", "-o", "json"), &users)
	if len(users) != 1 || users[0].Name != "resa" {
		t.Errorf("user list --role reseller: %+v", users)
	}
	fails(2, "--role", "user", "list", "--role", "king")
	if out := ok("", "user", "update", "u1", "--account", "acct1"); !strings.Contains(out, "u1") {
		t.Errorf("user update: %s", out)
	}
	ok("user-password-456\n", "user", "reset-password", "u1", "--password-stdin")
	failsIn("short\n", 2, "INVALID_INPUT", "user", "reset-password", "u1", "--password-stdin")
	failsIn("user-password-789\n", 1, "NOT_FOUND", "user", "reset-password", "nope", "--password-stdin")

	if out := ok("", "account", "change-owner", "acct1", "admin"); !strings.Contains(out, "admin") {
		t.Errorf("change-owner does not print the new owner: %s", out)
	}
	decode(ok("", "user", "list", "--account", "acct1", "-o", "json"), &users)
	if len(users) != 1 || users[0].Owner == nil || *users[0].Owner != "admin" {
		t.Errorf("u1 after change-owner: %+v", users)
	}
	ok("", "user", "delete", "u1", "--yes")
	fails(1, "NOT_FOUND", "user", "delete", "u1", "--yes")
	ok("", "reseller", "delete", "resa", "--yes")
	if out := ok("", "reseller", "list"); strings.Contains(out, "resa") {
		t.Errorf("reseller list after delete: %s", out)
	}

	ok("", "node", "add", "n1", "--address", "127.0.0.1", "--roles", "web,dns", "--label", "zone=eu", "--label", "rack=a1")
	var node struct {
		Roles       []string
		MaxAccounts int
		Labels      []struct{ Key, Value string }
	}
	decode(ok("", "node", "update", "n1", "--label", "tier=gold", "--remove-label", "zone", "--roles", "web,dns,db", "--max-accounts", "10", "-o", "json"), &node)
	labels := map[string]string{}
	for _, l := range node.Labels {
		labels[l.Key] = l.Value
	}
	if len(node.Roles) != 3 || node.MaxAccounts != 10 || len(labels) != 2 || labels["tier"] != "gold" || labels["rack"] != "a1" {
		t.Errorf("node after update: %+v", node)
	}
	if out := ok("", "node", "update", "n1", "--label", "tier=silver"); !strings.Contains(out, "tier=silver") || !strings.Contains(out, "rack=a1") {
		t.Errorf("node update does not print the node: %s", out)
	}
	fails(2, "no label", "node", "update", "n1", "--remove-label", "nope")
	fails(2, "role", "node", "update", "n1", "--roles", "web,king")
	fails(2, "nothing to change", "node", "update", "n1")
	fails(1, "nope", "node", "update", "nope", "--max-accounts", "3")
	fails(1, "NOT_FOUND", "node", "update", "nope", "--label", "a=b")

	var evs []struct{ Action, Target, Result string }
	decode(ok("", "audit", "list", "--action", "updatePlan", "-o", "json"), &evs)
	if len(evs) < 2 || evs[0].Target != "basic" || evs[0].Result != "ok" {
		t.Errorf("audit list --action updatePlan: %+v", evs)
	}
	decode(ok("", "audit", "list", "--failed-only", "--since", "1h", "-o", "json"), &evs)
	if len(evs) == 0 {
		t.Error("audit list --failed-only: no refusals listed")
	}
	for _, e := range evs {
		if e.Result == "ok" {
			t.Errorf("--failed-only listed %+v", e)
		}
	}
	if out := ok("", "audit", "list", "--target", "n1", "--limit", "3"); !strings.Contains(out, "updateNode") && !strings.Contains(out, "createJoinToken") {
		t.Errorf("audit list --target n1: %s", out)
	}
	fails(2, "--since", "audit", "list", "--since", "yesterday")
}
