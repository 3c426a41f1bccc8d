package controlplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestPlanAllowExecRBAC: only an admin creates a plan whose accounts' PHP
// may start processes (issue 23, finding 3); a refused createPlan writes
// nothing; the flag reaches the agent in the account's web spec, and
// accounts of other plans get pools with exec disabled.
func TestPlanAllowExecRBAC(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	execPlan := func(name string) client.Plan {
		return client.Plan{Name: name, DiskMB: 10, BandwidthMB: 10, Domains: 1, PHPVersions: []string{"8.2"}, AllowExec: true}
	}
	for name, c := range map[string]*client.Client{"resa": tn.resA, "resb": tn.resB, "user": tn.userA} {
		_, err := c.CreatePlan(ctx, execPlan("exec-"+name))
		wantAPICode(t, name+" creates an allowExec plan", err, "FORBIDDEN")
		plans, err := tn.admin.Plans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range plans {
			if p.Name == "exec-"+name {
				t.Errorf("refused plan %s was written", p.Name)
			}
		}
	}
	// Resellers still create plans, without exec.
	p, err := tn.resA.CreatePlan(ctx, client.Plan{Name: "resa-noexec", DiskMB: 10, Domains: 1})
	if err != nil || p.AllowExec {
		t.Fatalf("reseller plan without exec: %+v, %v", p, err)
	}
	p, err = tn.admin.CreatePlan(ctx, execPlan("exec-admin"))
	if err != nil || !p.AllowExec {
		t.Fatalf("admin allowExec plan: %+v, %v", p, err)
	}
	plans, err := tn.admin.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if p.AllowExec != (p.Name == "exec-admin") {
			t.Errorf("plan %s: allowExec %v", p.Name, p.AllowExec)
		}
	}

	for _, in := range []client.CreateAccountInput{
		{Username: "execacct", Domain: "execacct.example.com", Plan: "exec-admin", Node: "n-us"},
		{Username: "plainacct", Domain: "plainacct.example.com", Plan: "basic", Node: "n-us"},
	} {
		if _, err := tn.admin.CreateAccount(ctx, in); err != nil {
			t.Fatalf("account %s: %v", in.Username, err)
		}
	}
	// n-us is a fake node: its tasks stay queued, to be read here.
	got := map[string]*agentpb.WebSpec{}
	testenv.WaitFor(t, 10*time.Second, "both accounts' ensure tasks queued", func() bool {
		tasks, _, err := tn.s.Store().PendingTasks(ctx, "n-us")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if e := task.GetEnsureAccount(); e != nil {
				got[e.GetUsername()] = e.GetWeb()
			}
		}
		return got["execacct"] != nil && got["plainacct"] != nil
	})
	if !got["execacct"].GetPhp().GetAllowExec() {
		t.Errorf("allowExec plan's account: web spec %v, want allow_exec", got["execacct"])
	}
	if got["plainacct"].GetPhp().GetAllowExec() {
		t.Errorf("basic plan's account: web spec %v allows exec", got["plainacct"])
	}
}
