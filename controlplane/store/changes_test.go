package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// TestUpdatePlanAllOrNothing: a plan change rebuilds every account on it,
// moves its owner's usage with the disk, in one transaction; one that does
// not fit in a transaction, or that the reseller's quota refuses, writes
// nothing at all.
func TestUpdatePlanAllOrNothing(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("test", "", "x", "y", "ok")
	now := time.Now().UTC()
	if err := s.CreatePlan(ctx, store.Plan{Name: "p", DiskMB: 10, Domains: 1, PHPVersions: []string{"8.2"}, CreatedAt: now}, audit); err != nil {
		t.Fatal(err)
	}
	res := store.Reseller{Name: "r", MaxAccounts: 100, MaxDiskMB: 400, Plans: []string{"p"}, CreatedAt: now}
	if err := s.CreateReseller(ctx, res, store.User{Name: "r", Role: store.RoleReseller}, audit); err != nil {
		t.Fatal(err)
	}
	_, planRev, err := s.GetPlanRev(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		name := fmt.Sprintf("acct%d", i)
		a := &store.Account{ID: store.NewAccountID(now), Username: name, Domain: name + ".example.com", Plan: "p", Owner: "r",
			DiskMB: 10, Roles: []string{"web"}, Generation: 1, CreatedAt: now}
		if err := s.CreateAccount(ctx, a, planRev, store.Limits{MaxAccounts: 100, MaxDiskMB: 400}, audit); err != nil {
			t.Fatal(err)
		}
	}
	grow := func(mb int64) func(*store.Plan, []*store.Account) error {
		return func(p *store.Plan, accts []*store.Account) error {
			if len(accts) != n {
				return fmt.Errorf("change saw %d accounts, want %d", len(accts), n)
			}
			p.DiskMB = mb
			return nil
		}
	}
	unchanged := func() {
		t.Helper()
		if _, rev, _ := s.GetPlanRev(ctx, "p"); rev != planRev {
			t.Fatal("refused plan change wrote the plan")
		}
		if u, _, _ := s.GetUsage(ctx, "r"); u.DiskMB != n*10 {
			t.Fatalf("refused plan change moved usage to %+v", u)
		}
		accts, err := s.AccountsWhere(ctx, func(a *store.Account) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range accts {
			if a.Generation != 1 || a.DiskMB != 10 {
				t.Fatalf("refused plan change wrote account %s: gen %d, %d MB", a.Username, a.Generation, a.DiskMB)
			}
		}
	}

	// 30 accounts × 20 MB = 600 MB > the reseller's 400.
	if _, _, err := s.UpdatePlan(ctx, "p", grow(20), audit); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("plan over the reseller's disk: %v", err)
	}
	unchanged()
	s.SetTxnLimits(20, 1<<20) // 30 accounts need 30 puts and 30 compares
	if _, _, err := s.UpdatePlan(ctx, "p", grow(12), audit); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("plan change larger than a transaction: %v", err)
	}
	unchanged()
	s.SetTxnLimits(store.MaxTxnOps, 3<<19)
	p, count, err := s.UpdatePlan(ctx, "p", grow(12), audit)
	if err != nil || count != n || p.Generation != 1 {
		t.Fatalf("update plan: %+v, %d, %v", p, count, err)
	}
	if u, _, _ := s.GetUsage(ctx, "r"); u.DiskMB != n*12 || u.Accounts != n {
		t.Errorf("usage after update: %+v", u)
	}
	accts, err := s.AccountsWhere(ctx, func(a *store.Account) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accts {
		if a.Generation != 2 || a.DiskMB != 12 || a.PlanGeneration != 1 {
			t.Errorf("account %s after update: gen %d, %d MB, plan gen %d", a.Username, a.Generation, a.DiskMB, a.PlanGeneration)
		}
	}
	if err := s.DeletePlan(ctx, "p", func(*store.Plan) error { return nil }, audit); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a plan in use: %v", err)
	}
	if err := s.DeleteReseller(ctx, "r", audit); !errors.Is(err, store.ErrConflict) {
		t.Errorf("delete a reseller with accounts: %v", err)
	}
}
