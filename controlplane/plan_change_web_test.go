package controlplane_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// TestPlanChangeReachesPHPPool: moving an account to a plan with
// allowExec, and then taking allowExec off that plan, reach the account's
// PHP-FPM pool on a real node: PHP sees exec allowed, then disabled again.
func TestPlanChangeReachesPHPPool(t *testing.T) {
	s, ag, addr := startWebNode(t)
	ctx := testenv.Context(t)
	for _, p := range []client.Plan{
		{Name: "noexec", DiskMB: 100, BandwidthMB: 100, Domains: 1, PHPVersions: []string{"8.2"}},
		{Name: "withexec", DiskMB: 100, BandwidthMB: 100, Domains: 1, PHPVersions: []string{"8.2"}, AllowExec: true},
	} {
		if _, err := s.Admin.CreatePlan(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	user := testUsername(t)
	domain := user + ".example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "noexec"})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")
	home := filepath.Join(ag.Config.Prefix, "home", user)
	writeOwned(t, filepath.Join(home, "public_html", "exec.php"),
		`<?php echo in_array("exec", array_map("trim", explode(",", ini_get("disable_functions")))) ? "exec off" : "exec on";`, user)
	waitExec := func(want string) {
		t.Helper()
		var body string
		testenv.WaitFor(t, 30*time.Second, "PHP reports "+want, func() bool {
			var code int
			code, body, _ = get(t, addr, domain, "/exec.php")
			return code == 200 && body == want
		})
	}
	waitExec("exec off")

	if _, err := s.Admin.ChangeAccountPlan(ctx, user, "withexec"); err != nil {
		t.Fatal(err)
	}
	waitExec("exec on")

	if _, err := s.Admin.UpdatePlan(ctx, "withexec", client.PlanUpdate{AllowExec: new(bool)}); err != nil {
		t.Fatal(err)
	}
	waitExec("exec off")
	if a, err := s.Admin.Account(ctx, user); err != nil || a.Plan.Name != "withexec" || !strings.EqualFold(a.Status, "ACTIVE") {
		t.Errorf("account after the changes: %+v, %v", a, err)
	}
}
