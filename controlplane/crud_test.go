package controlplane_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

func ptr[T any](v T) *T { return &v }

// stateOf is everything an operator can change through the API, as the
// admin reads it: a refused mutation must leave it as it was.
func stateOf(t *testing.T, tn *tenants) string {
	t.Helper()
	ctx := context.Background()
	var parts []any
	plans, err := tn.admin.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tn.admin.Resellers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	users, err := tn.admin.Users(ctx, client.UserFilter{})
	if err != nil {
		t.Fatal(err)
	}
	accts, _, err := tn.admin.Accounts(ctx, client.AccountFilter{}, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range accts {
		accts[i].Events, accts[i].Status, accts[i].Reason = nil, "", nil // the controller moves these
	}
	nodes, err := tn.admin.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		nodes[i].LastSeen, nodes[i].Status, nodes[i].StatusChangedAt = nil, "", nil
	}
	parts = append(parts, plans, rs, users, accts, nodes)
	b, err := json.Marshal(parts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitPlaced waits until setupTenants' accounts are placed: placement
// changes what stateOf reads.
func waitPlaced(t *testing.T, tn *tenants) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "alpha1 and bravo1 placed", func() bool {
		a, errA := tn.admin.Account(context.Background(), "alpha1")
		b, errB := tn.admin.Account(context.Background(), "bravo1")
		return errA == nil && errB == nil && a.NodeName() != "" && b.NodeName() != ""
	})
}

// wantAudited fails unless the audit log holds a successful action on target.
func wantAudited(t *testing.T, tn *tenants, action, target string) {
	t.Helper()
	evs, _, err := tn.admin.AuditEvents(context.Background(), client.AuditFilter{Action: action, Target: target}, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Action == action && ev.Target == target && ev.Result == "ok" {
			return
		}
	}
	t.Errorf("no audit event %s %s ok among %+v", action, target, evs)
}

// TestCRUDRBAC walks every update and delete mutation and the users query
// with admin, reseller A, reseller B and A's account user: what a role may
// never do is FORBIDDEN, another tenant's object NOT_FOUND, a refusal
// changes nothing, and each success is audited.
func TestCRUDRBAC(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	mustPlan(t, tn.resA, "resa-own", 50)
	mustPlan(t, tn.resA, "resa-spare", 50)
	if err := tn.resB.CreateUser(ctx, "bravouser", resellerPassword, "bravo1"); err != nil {
		t.Fatal(err)
	}

	testenv.WaitFor(t, 10*time.Second, "alpha1 and bravo1 placed", func() bool {
		a, errA := tn.admin.Account(ctx, "alpha1")
		b, errB := tn.admin.Account(ctx, "bravo1")
		return errA == nil && errB == nil && a.NodeName() != "" && b.NodeName() != ""
	})
	before := stateOf(t, tn)
	type call func(*client.Client) error
	calls := map[string]call{
		"updatePlan basic": func(c *client.Client) error {
			_, err := c.UpdatePlan(ctx, "basic", client.PlanUpdate{BandwidthMB: ptr(int64(5))})
			return err
		},
		"updatePlan resa-own": func(c *client.Client) error {
			_, err := c.UpdatePlan(ctx, "resa-own", client.PlanUpdate{BandwidthMB: ptr(int64(5))})
			return err
		},
		"deletePlan resa-spare": func(c *client.Client) error { return c.DeletePlan(ctx, "resa-spare") },
		"deletePlan premium":    func(c *client.Client) error { return c.DeletePlan(ctx, "premium") },
		"updateReseller resa": func(c *client.Client) error {
			_, err := c.UpdateReseller(ctx, "resa", client.ResellerUpdate{MaxAccounts: ptr(4)})
			return err
		},
		"deleteReseller resb": func(c *client.Client) error { return c.DeleteReseller(ctx, "resb") },
		"users":               func(c *client.Client) error { _, err := c.Users(ctx, client.UserFilter{}); return err },
		"updateUser alphauser": func(c *client.Client) error {
			_, err := c.UpdateUser(ctx, "alphauser", "alpha1")
			return err
		},
		"resetPassword alphauser": func(c *client.Client) error {
			_, err := c.ResetPassword(ctx, "alphauser", "another-password-456")
			return err
		},
		"resetPassword admin": func(c *client.Client) error {
			_, err := c.ResetPassword(ctx, "admin", "another-password-456")
			return err
		},
		"resetPassword resa": func(c *client.Client) error {
			_, err := c.ResetPassword(ctx, "resa", "another-password-456")
			return err
		},
		"deleteUser alphauser": func(c *client.Client) error { return c.DeleteUser(ctx, "alphauser") },
		"changeAccountPlan alpha1": func(c *client.Client) error {
			_, err := c.ChangeAccountPlan(ctx, "alpha1", "resa-own")
			return err
		},
		"changeAccountPlan alpha1 premium": func(c *client.Client) error {
			_, err := c.ChangeAccountPlan(ctx, "alpha1", "premium")
			return err
		},
		"changeAccountOwner bravo1": func(c *client.Client) error {
			_, err := c.ChangeAccountOwner(ctx, "bravo1", "admin")
			return err
		},
		"updateNode n-us": func(c *client.Client) error {
			_, err := c.UpdateNode(ctx, "n-us", client.NodeUpdate{MaxAccounts: ptr(50)})
			return err
		},
	}
	refusals := []struct {
		who  string
		c    *client.Client
		call string
		code string
	}{
		{"resa", tn.resA, "updatePlan basic", "FORBIDDEN"},
		{"resb", tn.resB, "updatePlan resa-own", "NOT_FOUND"},
		{"user", tn.userA, "updatePlan resa-own", "FORBIDDEN"},
		{"resb", tn.resB, "deletePlan resa-spare", "NOT_FOUND"},
		{"user", tn.userA, "deletePlan resa-spare", "FORBIDDEN"},
		{"resa", tn.resA, "deletePlan premium", "FORBIDDEN"},
		{"resa", tn.resA, "updateReseller resa", "FORBIDDEN"},
		{"resb", tn.resB, "updateReseller resa", "FORBIDDEN"},
		{"user", tn.userA, "updateReseller resa", "FORBIDDEN"},
		{"resa", tn.resA, "deleteReseller resb", "FORBIDDEN"},
		{"user", tn.userA, "deleteReseller resb", "FORBIDDEN"},
		{"user", tn.userA, "users", "FORBIDDEN"},
		{"resb", tn.resB, "updateUser alphauser", "NOT_FOUND"},
		{"user", tn.userA, "updateUser alphauser", "FORBIDDEN"},
		{"resb", tn.resB, "resetPassword alphauser", "NOT_FOUND"},
		{"user", tn.userA, "resetPassword alphauser", "FORBIDDEN"},
		{"admin", tn.admin, "resetPassword admin", "FORBIDDEN"}, // its own: changePassword asks for the current one
		{"resa", tn.resA, "resetPassword resa", "FORBIDDEN"},
		{"resb", tn.resB, "deleteUser alphauser", "NOT_FOUND"},
		{"user", tn.userA, "deleteUser alphauser", "FORBIDDEN"},
		{"resb", tn.resB, "changeAccountPlan alpha1", "NOT_FOUND"},
		{"user", tn.userA, "changeAccountPlan alpha1", "FORBIDDEN"},
		{"resa", tn.resA, "changeAccountPlan alpha1 premium", "FORBIDDEN"},
		{"resa", tn.resA, "changeAccountOwner bravo1", "FORBIDDEN"},
		{"resb", tn.resB, "changeAccountOwner bravo1", "FORBIDDEN"},
		{"user", tn.userA, "changeAccountOwner bravo1", "FORBIDDEN"},
		{"resa", tn.resA, "updateNode n-us", "FORBIDDEN"},
		{"user", tn.userA, "updateNode n-us", "FORBIDDEN"},
	}
	for _, r := range refusals {
		wantAPICode(t, r.who+": "+r.call, calls[r.call](r.c), r.code)
	}
	if after := stateOf(t, tn); after != before {
		t.Fatalf("refused mutations changed state:\nbefore %s\nafter  %s", before, after)
	}

	// Listing users is scoped by tenancy and filtered.
	names := func(c *client.Client, f client.UserFilter) map[string]bool {
		t.Helper()
		us, err := c.Users(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, u := range us {
			out[u.Name] = true
		}
		return out
	}
	if got := names(tn.resA, client.UserFilter{}); !got["alphauser"] || got["bravouser"] || got["admin"] {
		t.Errorf("resa sees users %v", got)
	}
	if got := names(tn.resB, client.UserFilter{Account: "alpha1"}); len(got) != 0 {
		t.Errorf("resb filtering by resa's account sees %v", got)
	}
	if got := names(tn.admin, client.UserFilter{Role: "RESELLER"}); len(got) != 2 || !got["resa"] || !got["resb"] {
		t.Errorf("admin, role RESELLER: %v", got)
	}
	if got := names(tn.admin, client.UserFilter{Search: "bravo"}); len(got) != 1 || !got["bravouser"] {
		t.Errorf("admin, search bravo: %v", got)
	}
	if got := names(tn.admin, client.UserFilter{Account: "alpha1"}); len(got) != 1 || !got["alphauser"] {
		t.Errorf("admin, account alpha1: %v", got)
	}

	// resetPassword ends the target's sessions; the new password signs in.
	if err := tn.resA.CreateUser(ctx, "alphauser2", resellerPassword, "alpha1"); err != nil {
		t.Fatal(err)
	}
	u2 := login(t, tn.s, "alphauser2", resellerPassword)
	if _, err := tn.admin.ResetPassword(ctx, "alphauser2", "fresh-password-789"); err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "token from before resetPassword", u2.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	login(t, tn.s, "alphauser2", "fresh-password-789")
	wantAudited(t, tn, "resetPassword", "alphauser2")

	// What each role may do, audited.
	successes := []struct {
		c            *client.Client
		call, action string
		target       string
	}{
		{tn.resA, "updatePlan resa-own", "updatePlan", "resa-own"},
		{tn.admin, "updatePlan basic", "updatePlan", "basic"},
		{tn.resA, "deletePlan resa-spare", "deletePlan", "resa-spare"},
		{tn.admin, "updateReseller resa", "updateReseller", "resa"},
		{tn.resA, "resetPassword alphauser", "resetPassword", "alphauser"},
		{tn.resA, "updateUser alphauser", "updateUser", "alphauser"},
		{tn.resA, "changeAccountPlan alpha1", "changeAccountPlan", "alpha1"},
		{tn.admin, "changeAccountOwner bravo1", "changeAccountOwner", "bravo1"},
		{tn.admin, "updateNode n-us", "updateNode", "n-us"},
		{tn.resA, "deleteUser alphauser", "deleteUser", "alphauser"},
	}
	for _, s := range successes {
		if err := calls[s.call](s.c); err != nil {
			t.Fatalf("%s: %v", s.call, err)
		}
		wantAudited(t, tn, s.action, s.target)
	}
	// resetPassword revoked the user's sessions (and deleteUser its login).
	wantAPICode(t, "deleted user's old token", tn.userA.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	if p, err := tn.admin.Plan(ctx, "basic"); err != nil || p.BandwidthMB != 5 {
		t.Errorf("basic after update: %+v, %v", p, err)
	}
	if a, err := tn.admin.Account(ctx, "alpha1"); err != nil || a.Plan.Name != "resa-own" {
		t.Errorf("alpha1 after changeAccountPlan: %+v, %v", a, err)
	}
	if a, err := tn.admin.Account(ctx, "bravo1"); err != nil || a.Owner.Name != "admin" {
		t.Errorf("bravo1 after changeAccountOwner: %+v, %v", a, err)
	}
	if got := usernames(t, tn.resB); len(got) != 0 {
		t.Errorf("resb still sees %v after bravo1 was given to admin", got)
	}
	if r, err := tn.admin.Reseller(ctx, "resb"); err != nil || r.Usage.Accounts != 0 || r.Usage.DiskMB != 0 {
		t.Errorf("resb usage after giving bravo1 away: %+v, %v", r, err)
	}
	if us, _ := tn.admin.Users(ctx, client.UserFilter{Account: "bravo1"}); len(us) != 1 || us[0].Owner == nil || *us[0].Owner != "admin" {
		t.Errorf("bravouser after changeAccountOwner: %+v", us)
	}
	// Unknown names are NOT_FOUND.
	_, err := tn.admin.UpdatePlan(ctx, "nope", client.PlanUpdate{Domains: ptr(2)})
	wantAPICode(t, "update unknown plan", err, "NOT_FOUND")
	wantAPICode(t, "delete unknown reseller", tn.admin.DeleteReseller(ctx, "nope"), "NOT_FOUND")
	wantAPICode(t, "delete unknown user", tn.admin.DeleteUser(ctx, "nope"), "NOT_FOUND")
	_, err = tn.admin.UpdateNode(ctx, "nope", client.NodeUpdate{MaxAccounts: ptr(1)})
	wantAPICode(t, "update unknown node", err, "NOT_FOUND")
	_, err = tn.admin.ChangeAccountPlan(ctx, "nope", "basic")
	wantAPICode(t, "change plan of unknown account", err, "NOT_FOUND")
	_, err = tn.admin.ChangeAccountPlan(ctx, "alpha1", "nope")
	wantAPICode(t, "change to unknown plan", err, "NOT_FOUND")
	// Bad input.
	_, err = tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Domains: ptr(0)})
	wantAPICode(t, "plan with no domains", err, "INVALID_INPUT")
	_, err = tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{PHPVersions: []string{"8.2; rm"}})
	wantAPICode(t, "bad PHP version", err, "INVALID_INPUT")
	_, err = tn.admin.ResetPassword(ctx, "bravouser", "short")
	wantAPICode(t, "short password", err, "INVALID_INPUT")
	_, err = tn.admin.UpdateReseller(ctx, "resa", client.ResellerUpdate{NodeSelector: ptr("zone in (")})
	wantAPICode(t, "bad selector", err, "INVALID_INPUT")
	_, err = tn.admin.UpdateNode(ctx, "n-us", client.NodeUpdate{Roles: []string{"WEB", "NOPE"}})
	if client.CodeOf(err) != "INVALID_INPUT" && client.CodeOf(err) != "GRAPHQL_VALIDATION_FAILED" {
		t.Errorf("unknown role: %v", err)
	}
	wantAPICode(t, "admin deletes itself", tn.admin.DeleteUser(ctx, "admin"), "CONFLICT")
	wantAPICode(t, "deleteUser of a reseller login", tn.admin.DeleteUser(ctx, "resa"), "CONFLICT")
}

// completeEnsure answers the pending ensureAccount task of username on a
// fake node as its agent would, and returns it.
func completeEnsure(t *testing.T, tn *tenants, node, username string) *agentpb.EnsureAccountAction {
	t.Helper()
	st := tn.s.Store()
	var task *agentpb.Task
	testenv.WaitFor(t, 10*time.Second, "ensureAccount of "+username+" queued", func() bool {
		tasks, _, err := st.PendingTasks(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range tasks {
			if e := tk.GetEnsureAccount(); e != nil && e.GetUsername() == username {
				task = tk
				return true
			}
		}
		return false
	})
	r := &agentpb.TaskResult{TaskId: task.GetId(), Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, Generation: task.GetGeneration(),
		FinishedUnixNano: time.Now().UnixNano(), Result: &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{}}}
	if ok, err := st.CompleteTask(context.Background(), node, r, store.NewAuditEvent("agent", "", "", "", "ok")); !ok || err != nil {
		t.Fatalf("complete %s: %v %v", task.GetId(), ok, err)
	}
	return task.GetEnsureAccount()
}

// TestPlanChangesReachNodes: changeAccountPlan and updatePlan rebuild the
// account's spec from the new plan, and its node is sent it (PHP-FPM
// allowExec, disk quota); a move or update below what accounts use is
// refused and changes nothing.
func TestPlanChangesReachNodes(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	waitPlaced(t, tn)
	if _, err := tn.admin.CreatePlan(ctx, client.Plan{Name: "exec", DiskMB: 150, BandwidthMB: 10, Domains: 2, Databases: 2,
		PHPVersions: []string{"8.2"}, AllowExec: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.admin.CreateAccount(ctx, client.CreateAccountInput{Username: "mover", Domain: "mover.example.com", Plan: "basic", Node: "n-us"}); err != nil {
		t.Fatal(err)
	}
	first := completeEnsure(t, tn, "n-us", "mover")
	if first.GetWeb().GetPhp().GetAllowExec() || first.GetDiskQuotaMb() != 100 {
		t.Fatalf("first ensure: %v", first)
	}
	testenv.WaitFor(t, 10*time.Second, "mover active", func() bool {
		a, err := tn.admin.Account(ctx, "mover")
		return err == nil && a.Status == "ACTIVE"
	})

	// Up to the exec plan: the node gets exec and 150 MB.
	if _, err := tn.admin.ChangeAccountPlan(ctx, "mover", "exec"); err != nil {
		t.Fatal(err)
	}
	second := completeEnsure(t, tn, "n-us", "mover")
	if !second.GetWeb().GetPhp().GetAllowExec() || second.GetDiskQuotaMb() != 150 {
		t.Fatalf("after changeAccountPlan to exec, the node got %v", second)
	}
	wantAudited(t, tn, "changeAccountPlan", "mover")

	// The plan itself changes: every account on it follows.
	if _, err := tn.admin.UpdatePlan(ctx, "exec", client.PlanUpdate{AllowExec: ptr(false), DiskMB: ptr(int64(120))}); err != nil {
		t.Fatal(err)
	}
	third := completeEnsure(t, tn, "n-us", "mover")
	if third.GetWeb().GetPhp().GetAllowExec() || third.GetDiskQuotaMb() != 120 {
		t.Fatalf("after updatePlan, the node got %v", third)
	}

	// Two domains in use: a plan of one is refused.
	mover, err := tn.admin.Account(ctx, "mover")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.admin.AddDomain(ctx, mover.ID, "extra-mover.example.com", ""); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, tn)
	_, err = tn.admin.ChangeAccountPlan(ctx, "mover", "basic")
	wantAPICode(t, "move to a plan of fewer domains than in use", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "domains") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	_, err = tn.admin.UpdatePlan(ctx, "exec", client.PlanUpdate{Domains: ptr(1)})
	wantAPICode(t, "shrink the plan below the domains in use", err, "QUOTA_EXCEEDED")
	_, err = tn.admin.ChangeAccountPlan(ctx, "mover", "nope")
	wantAPICode(t, "move to unknown plan", err, "NOT_FOUND")
	if after := stateOf(t, tn); after != before {
		t.Fatalf("refused changes wrote:\nbefore %s\nafter  %s", before, after)
	}
	// A plan without the PHP line its sites use is refused.
	if _, err := tn.admin.CreatePlan(ctx, client.Plan{Name: "php83", DiskMB: 100, BandwidthMB: 10, Domains: 5, Databases: 5, PHPVersions: []string{"8.3"}}); err != nil {
		t.Fatal(err)
	}
	before = stateOf(t, tn)
	_, err = tn.admin.ChangeAccountPlan(ctx, "mover", "php83")
	wantAPICode(t, "move to a plan without the PHP in use", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "phpVersions") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	_, err = tn.admin.UpdatePlan(ctx, "exec", client.PlanUpdate{PHPVersions: []string{"8.3"}})
	wantAPICode(t, "drop the PHP in use from the plan", err, "QUOTA_EXCEEDED")
	if after := stateOf(t, tn); after != before {
		t.Fatalf("refused changes wrote:\nbefore %s\nafter  %s", before, after)
	}
	// A reseller's account: its disk quota is the reseller's.
	if _, err := tn.admin.UpdateReseller(ctx, "resb", client.ResellerUpdate{Plans: []string{"basic", "premium", "exec"}}); err != nil {
		t.Fatal(err)
	}
	before = stateOf(t, tn)
	_, err = tn.admin.UpdatePlan(ctx, "premium", client.PlanUpdate{DiskMB: ptr(int64(5000))})
	wantAPICode(t, "grow a plan past its reseller's disk", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "maxDiskMB") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	_, err = tn.admin.UpdateReseller(ctx, "resb", client.ResellerUpdate{MaxDiskMB: ptr(int64(100))})
	wantAPICode(t, "maxDiskMB below usage", err, "QUOTA_EXCEEDED")
	_, err = tn.admin.UpdateReseller(ctx, "resb", client.ResellerUpdate{MaxAccounts: ptr(0)})
	wantAPICode(t, "maxAccounts below usage", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "maxAccounts") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	if after := stateOf(t, tn); after != before {
		t.Fatalf("refused changes wrote:\nbefore %s\nafter  %s", before, after)
	}
	// Down: premium (200 MB) to basic (100 MB) frees resb's disk.
	if _, err := tn.resB.ChangeAccountPlan(ctx, "bravo1", "basic"); err != nil {
		t.Fatal(err)
	}
	if r, _ := tn.admin.Reseller(ctx, "resb"); r.Usage.DiskMB != 100 {
		t.Errorf("resb disk after moving bravo1 to basic: %d MB, want 100", r.Usage.DiskMB)
	}
}

// TestDeleteInUse: a plan or reseller in use cannot be deleted; once not,
// it can.
func TestDeleteInUse(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	err := tn.admin.DeletePlan(ctx, "premium")
	wantAPICode(t, "delete a plan in use", err, "CONFLICT")
	if !strings.Contains(err.Error(), "1 account") {
		t.Errorf("refusal does not say how many accounts: %v", err)
	}
	err = tn.admin.DeleteReseller(ctx, "resb")
	wantAPICode(t, "delete a reseller with accounts", err, "CONFLICT")
	if !strings.Contains(err.Error(), "1 account") {
		t.Errorf("refusal does not say how many accounts: %v", err)
	}
	if _, err := tn.admin.ChangeAccountPlan(ctx, "bravo1", "basic"); err != nil {
		t.Fatal(err)
	}
	if err := tn.admin.DeletePlan(ctx, "premium"); err != nil {
		t.Fatalf("delete an unused plan: %v", err)
	}
	wantAudited(t, tn, "deletePlan", "premium")
	if r, _ := tn.admin.Reseller(ctx, "resb"); len(r.Plans) != 1 || r.Plans[0] != "basic" {
		t.Errorf("resb's plans after premium was deleted: %v", r.Plans)
	}
	if _, err := tn.admin.ChangeAccountOwner(ctx, "bravo1", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := tn.admin.DeleteReseller(ctx, "resb"); err != nil {
		t.Fatalf("delete a reseller without accounts: %v", err)
	}
	wantAudited(t, tn, "deleteReseller", "resb")
	wantAPICode(t, "deleted reseller's token", tn.resB.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	if r, err := tn.admin.Reseller(ctx, "resb"); err != nil || r != nil {
		t.Errorf("resb after delete: %+v, %v", r, err)
	}
	// A new reseller of the old name does not inherit the old tokens.
	if _, err := tn.admin.CreateReseller(ctx, "resb", resellerPassword, 1, 100, nil, ""); err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "old token of a recreated reseller", tn.resB.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
}

// TestUpdateNode: a role that accounts need stays; labels and capacity
// steer later placements.
func TestUpdateNode(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	testenv.WaitFor(t, 10*time.Second, "alpha1 and bravo1 placed", func() bool {
		a, errA := tn.admin.Account(ctx, "alpha1")
		b, errB := tn.admin.Account(ctx, "bravo1")
		return errA == nil && errB == nil && a.NodeName() == "n-eu" && b.NodeName() != ""
	})
	before := stateOf(t, tn)
	_, err := tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{Roles: []string{"DNS", "MAIL", "DB"}})
	wantAPICode(t, "remove web from a node with accounts", err, "CONFLICT")
	if !strings.Contains(err.Error(), "alpha1") {
		t.Errorf("refusal does not name what needs the role: %v", err)
	}
	_, err = tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{MaxAccounts: ptr(0), DiskMB: ptr(int64(50))})
	wantAPICode(t, "disk below what is allocated", err, "QUOTA_EXCEEDED")
	if after := stateOf(t, tn); after != before {
		t.Fatalf("refused updateNode wrote:\nbefore %s\nafter  %s", before, after)
	}
	// A zone served by n-us keeps its dns role.
	z := &store.Zone{Name: "2.0.192.in-addr.arpa", Node: "n-us", Reverse: true, Generation: 1}
	if err := tn.s.Store().CreateZone(ctx, z, store.NewAuditEvent("test", "", "createZone", z.Name, "ok")); err != nil {
		t.Fatal(err)
	}
	_, err = tn.admin.UpdateNode(ctx, "n-us", client.NodeUpdate{Roles: []string{"WEB", "MAIL", "DB"}})
	wantAPICode(t, "remove dns from a node serving a zone", err, "CONFLICT")
	if !strings.Contains(err.Error(), z.Name) {
		t.Errorf("refusal does not name the zone: %v", err)
	}
	// A database of alpha1 keeps n-eu's db role, and alpha1 off a plan
	// without databases.
	// wait: PT0S, as n-eu is a fake node that never answers.
	if err := tn.admin.Do(ctx, `mutation($a:ID!){createDatabase(account:$a,name:"shop",wait:"PT0S"){name}}`, map[string]any{"a": tn.a1.ID}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{Roles: []string{"WEB", "DNS", "MAIL"}})
	wantAPICode(t, "remove db from a node with databases", err, "CONFLICT")
	if !strings.Contains(err.Error(), "alpha1_shop") {
		t.Errorf("refusal does not name the database: %v", err)
	}
	if _, err := tn.admin.CreatePlan(ctx, client.Plan{Name: "nodb", DiskMB: 10, Domains: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.admin.ChangeAccountPlan(ctx, "alpha1", "nodb")
	wantAPICode(t, "move to a plan resa may not sell", err, "FORBIDDEN")
	if _, err := tn.admin.UpdateReseller(ctx, "resa", client.ResellerUpdate{Plans: []string{"basic", "nodb"}}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.resA.ChangeAccountPlan(ctx, "alpha1", "nodb")
	wantAPICode(t, "move to a plan without databases", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "databases") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	// alpha1's plan includes mailboxes, so its node keeps the mail role;
	// on a plan without them, the role can go.
	_, err = tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{Roles: []string{"WEB", "DB", "DNS"}})
	wantAPICode(t, "remove mail from the node of an account whose plan has mailboxes", err, "CONFLICT")
	if !strings.Contains(err.Error(), "alpha1") {
		t.Errorf("refusal does not name the account: %v", err)
	}
	if _, err := tn.admin.CreatePlan(ctx, client.Plan{Name: "nomail", DiskMB: 100, Domains: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.admin.UpdateReseller(ctx, "resa", client.ResellerUpdate{Plans: []string{"basic", "nodb", "nomail"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.resA.ChangeAccountPlan(ctx, "alpha1", "nomail"); err != nil {
		t.Fatal(err)
	}
	n, err := tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{Roles: []string{"WEB", "DB", "DNS"}})
	if err != nil || len(n.Roles) != 3 {
		t.Fatalf("remove mail: %+v, %v", n, err)
	}
	wantAudited(t, tn, "updateNode", "n-eu")

	// resa's selector is zone=eu: with n-eu relabelled, its next account
	// fits nowhere; labelling n-us eu places it there.
	if _, err := tn.admin.UpdateNode(ctx, "n-eu", client.NodeUpdate{Labels: map[string]string{"zone": "old"}}); err != nil {
		t.Fatal(err)
	}
	a2, err := tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha2", Domain: "alpha2.example.com", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "alpha2 pending for want of a node", func() bool {
		a, err := tn.admin.Account(ctx, a2.ID)
		return err == nil && a.Status == "PENDING" && a.Reason != nil && *a.Reason != ""
	})
	if a, _ := tn.admin.Account(ctx, a2.ID); a.NodeName() != "" {
		t.Fatalf("alpha2 placed on %s, which no longer matches zone=eu", a.NodeName())
	}
	if _, err := tn.admin.UpdateNode(ctx, "n-us", client.NodeUpdate{Labels: map[string]string{"zone": "eu"}}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "alpha2 placed on the relabelled n-us", func() bool {
		a, err := tn.admin.Account(ctx, a2.ID)
		return err == nil && a.NodeName() == "n-us"
	})

	// A new node selector applies to accounts still waiting for a node.
	if _, err := tn.admin.UpdateNode(ctx, "n-us", client.NodeUpdate{Labels: map[string]string{"zone": "us"}}); err != nil {
		t.Fatal(err)
	}
	a3, err := tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha3", Domain: "alpha3.example.com", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "alpha3 pending for want of a node", func() bool {
		a, err := tn.admin.Account(ctx, a3.ID)
		return err == nil && a.Status == "PENDING" && a.Reason != nil && *a.Reason != ""
	})
	if _, err := tn.admin.UpdateReseller(ctx, "resa", client.ResellerUpdate{NodeSelector: ptr("zone=us")}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "alpha3 placed by resa's new selector", func() bool {
		a, err := tn.admin.Account(ctx, a3.ID)
		return err == nil && a.NodeName() == "n-us"
	})
}

// An API token outlives nothing of its user: one left behind (here put
// back after its user was deleted, as a token created while the user was
// being deleted would be) never signs in a new user of the same name.
func TestAPITokenBoundToItsUser(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	if _, err := s.Admin.CreateReseller(ctx, "tokr", resellerPassword, 3, 1000, nil, ""); err != nil {
		t.Fatal(err)
	}
	r := login(t, s, "tokr", resellerPassword)
	tok, rec, err := r.CreateAPIToken(ctx, "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := s.RawEtcd(t)
	key := "/npanel/apitokens/" + rec.ID
	kept, err := raw.Get(ctx, key)
	if err != nil || len(kept.Kvs) != 1 {
		t.Fatalf("token record: %v %v", kept, err)
	}
	if err := s.Admin.DeleteReseller(ctx, "tokr"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, key, string(kept.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreateReseller(ctx, "tokr", resellerPassword, 3, 1000, nil, ""); err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "the old user's token", client.New(s.URL(), tok).Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
}
