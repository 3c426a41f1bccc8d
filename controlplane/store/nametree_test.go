package store_test

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/net/publicsuffix"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/validate"
)

func TestNameAncestors(t *testing.T) {
	for name, want := range map[string][]string{
		"mail.bobb.example.org":   {"bobb.example.org", "example.org"},
		"example.org":             nil,
		"shop.example.co.uk":      {"example.co.uk"},
		"example.co.uk":           nil,
		"co.uk":                   nil,
		"a.b.github.io":           {"b.github.io"}, // a private suffix is no parent either
		"100.51.198.in-addr.arpa": {"51.198.in-addr.arpa", "198.in-addr.arpa"},
		"www.example.com.":        {"example.com"},
	} {
		if got := store.NameAncestors(name); !slices.Equal(got, want) {
			t.Errorf("NameAncestors(%q) = %q, want %q", name, got, want)
		}
	}
}

type treeFixture struct {
	s       *store.Store
	cli     *clientv3.Client
	planRev int64
}

func newTreeFixture(t *testing.T) *treeFixture {
	t.Helper()
	cli := testenv.EtcdClient(t, testenv.StartEtcd(t))
	s := store.New(cli)
	ctx := context.Background()
	if err := s.CreatePlan(ctx, store.Plan{Name: "basic", DiskMB: 10, Domains: 3}, store.NewAuditEvent("t", "t", "createPlan", "basic", "ok")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.GetPlanRev(ctx, "basic")
	if err != nil {
		t.Fatal(err)
	}
	return &treeFixture{s: s, cli: cli, planRev: rev}
}

func (f *treeFixture) create(username, domain string) (*store.Account, error) {
	now := time.Now().UTC()
	a := &store.Account{ID: store.NewAccountID(now), Username: username, Domain: domain, Plan: "basic", Owner: "admin",
		Status: store.AccountPending, Generation: 1, CreatedAt: now, UpdatedAt: now}
	return a, f.s.CreateAccount(context.Background(), a, f.planRev, store.Limits{}, store.NewAuditEvent("t", "t", "createAccount", username, "ok"))
}

func (f *treeFixture) addSite(id, domain string) error {
	_, err := f.s.ChangeSites(context.Background(), id, func(a *store.Account) (store.SiteChange, error) {
		a.Sites = append(a.Sites, store.Site{Domain: domain, Docroot: domain})
		return store.SiteChange{Added: []string{domain}}, nil
	}, store.NewAuditEvent("t", "t", "addDomain", domain, "ok"))
	return err
}

func (f *treeFixture) keys(t *testing.T) int64 {
	t.Helper()
	resp, err := f.cli.Get(context.Background(), "/npanel/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// An account's domain, add-on domain or a zone inside or above another
// account's domain is refused and writes nothing; the account's own
// subdomains, siblings under a shared parent and names on either side of a
// public suffix are not.
func TestNameTreeRefusesOverlap(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	victim, err := f.create("victim", "bobb.example.org")
	if err != nil {
		t.Fatal(err)
	}
	before := f.keys(t)
	for name, try := range map[string]func() error{
		"child account":  func() error { _, err := f.create("evil1", "mail.bobb.example.org"); return err },
		"parent account": func() error { _, err := f.create("evil2", "example.org"); return err },
		"deep child":     func() error { _, err := f.create("evil3", "a.b.mail.bobb.example.org"); return err },
		"cluster zone inside": func() error {
			return f.s.CreateZone(ctx, &store.Zone{Name: "x.bobb.example.org", Status: store.ZonePending}, store.NewAuditEvent("t", "t", "z", "z", "ok"))
		},
		"cluster zone above": func() error {
			return f.s.CreateZone(ctx, &store.Zone{Name: "example.org", Status: store.ZonePending}, store.NewAuditEvent("t", "t", "z", "z", "ok"))
		},
	} {
		err := try()
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want a conflict", name, err)
			continue
		}
		if err.Error() == "" || strings.Contains(err.Error(), victim.ID) || strings.Contains(err.Error(), "victim") {
			t.Errorf("%s: the refusal names the holder: %v", name, err)
		}
	}
	if after := f.keys(t); after != before {
		t.Fatalf("refused creations wrote %d keys", after-before)
	}

	other, err := f.create("other", "other.example.org")
	if err != nil {
		t.Fatalf("a sibling under a shared parent: %v", err)
	}
	for _, d := range []string{"mail.bobb.example.org", "example.org", "bobb.example.org"} {
		if err := f.addSite(other.ID, d); !errors.Is(err, store.ErrConflict) {
			t.Errorf("add-on %s on another account: %v", d, err)
		}
	}
	if err := f.addSite(other.ID, "mail.other.example.org"); err != nil {
		t.Errorf("an account's own subdomain as an add-on: %v", err)
	}
	if err := f.addSite(victim.ID, "shop.bobb.example.org"); err != nil {
		t.Errorf("an account's own subdomain as an add-on: %v", err)
	}
	// The victim cannot take the parent either while another account
	// lives under it.
	if err := f.addSite(victim.ID, "example.org"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("parent of another account's domain as an add-on: %v", err)
	}

	// co.uk is nobody's: two registrable names under it are unrelated.
	if _, err := f.create("uk1", "example.co.uk"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.create("uk2", "other.co.uk"); err != nil {
		t.Errorf("a second name under co.uk: %v", err)
	}
	if _, err := f.create("uk3", "www2.example.co.uk"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a child of example.co.uk: %v", err)
	}

	// Reverse zones are the cluster's and may nest.
	for _, z := range []string{"10.in-addr.arpa", "1.10.in-addr.arpa"} {
		if err := f.s.CreateZone(ctx, &store.Zone{Name: z, Reverse: true, Status: store.ZonePending}, store.NewAuditEvent("t", "t", "z", z, "ok")); err != nil {
			t.Errorf("reverse zone %s: %v", z, err)
		}
	}
	if h, _ := f.s.NameHolder(ctx, "1.10.in-addr.arpa"); h != store.ClusterHolder {
		t.Errorf("reverse zone held by %q", h)
	}
}

// Releasing a name (add-on removed, account deleted, cluster zone
// deleted) frees the names around it.
func TestNameTreeRelease(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a, err := f.create("alice", "alice.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.addSite(a.ID, "shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.ChangeSites(ctx, a.ID, func(a *store.Account) (store.SiteChange, error) {
		a.Sites = a.Sites[:1]
		return store.SiteChange{Removed: []string{"shop.example.com"}}, nil
	}, store.NewAuditEvent("t", "t", "removeDomain", "x", "ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.create("shopper", "example.com"); err != nil {
		t.Fatalf("parent of a removed add-on: %v", err)
	}
	if _, err := f.s.UpdateAccount(ctx, a.ID, func(a *store.Account) error { a.Deleted = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.s.FinishAccountDeletion(ctx, a.ID, nil, store.NewAuditEvent("t", "t", "deleted", "alice", "ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.create("bob", "mail.alice.example.net"); err != nil {
		t.Fatalf("child of a deleted account's domain: %v", err)
	}

	if err := f.s.CreateZone(ctx, &store.Zone{Name: "2.0.192.in-addr.arpa", Reverse: true, Status: store.ZonePending}, store.NewAuditEvent("t", "t", "z", "z", "ok")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := f.s.GetZone(ctx, "2.0.192.in-addr.arpa")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.s.DeleteZone(ctx, "2.0.192.in-addr.arpa", rev, store.NewAuditEvent("t", "t", "z", "z", "ok")); err != nil || !ok {
		t.Fatalf("delete zone: %v %v", ok, err)
	}
	if h, _ := f.s.NameHolder(ctx, "2.0.192.in-addr.arpa"); h != "" {
		t.Errorf("deleted zone still held by %q", h)
	}
}

// A parent and a child created at once by two accounts: the check and the
// write are one transaction, so exactly one of them wins, every time.
func TestNameTreeRace(t *testing.T) {
	f := newTreeFixture(t)
	for i := range 20 {
		parent := fmt.Sprintf("race%d.example.com", i)
		names := []string{parent, "mail." + parent, "a.mail." + parent, "www2." + parent}
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for j, d := range names {
			wg.Go(func() {
				<-start
				_, errs[j] = f.create(fmt.Sprintf("r%dn%d", i, j), d)
			})
		}
		close(start)
		wg.Wait()
		wins := 0
		for j, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("%s: %v", names[j], err)
			}
		}
		// The siblings mail. and www2. may both win only when the parent
		// lost; parent and child never both.
		if errs[0] == nil && wins != 1 || errs[1] == nil && errs[2] == nil {
			t.Fatalf("round %d: overlapping names both created: %v", i, errs)
		}
		if wins == 0 {
			t.Fatalf("round %d: nobody won: %v", i, errs)
		}
	}
}

// A cluster created before the name tree gets its names back into it, once.
func TestBackfillNameTree(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a, err := f.create("old", "old.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.addSite(a.ID, "addon.example.net"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.CreateZone(ctx, &store.Zone{Name: "5.10.in-addr.arpa", Reverse: true, Status: store.ZonePending}, store.NewAuditEvent("t", "t", "z", "z", "ok")); err != nil {
		t.Fatal(err)
	}
	// As an older version left it: reservations, no tree.
	if _, err := f.cli.Delete(ctx, "/npanel/names/tree/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.create("late", "mail.old.example.org"); err != nil {
		t.Fatal("without the tree the overlap is not seen; the test's premise broke")
	}
	n, err := f.s.BackfillNameTree(ctx)
	if err != nil || n != 3 {
		// old.example.org, addon.example.net and the reverse zone; the
		// account created after the wipe holds its key already.
		t.Fatalf("backfill wrote %d: %v", n, err)
	}
	if n, err := f.s.BackfillNameTree(ctx); err != nil || n != 0 {
		t.Fatalf("second backfill wrote %d: %v", n, err)
	}
	for d, want := range map[string]string{"old.example.org": a.ID, "addon.example.net": a.ID, "5.10.in-addr.arpa": store.ClusterHolder} {
		if h, _ := f.s.NameHolder(ctx, d); h != want {
			t.Errorf("%s held by %q, want %q", d, h, want)
		}
	}
	if _, err := f.create("evil", "x.addon.example.net"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("child of a backfilled add-on: %v", err)
	}
}

// FuzzNameAncestors: for any domain the API accepts, each ancestor is a
// parent of the one before it, and none is a public suffix (nobody holds
// co.uk).
func FuzzNameAncestors(f *testing.F) {
	for _, s := range []string{"mail.bobb.example.org", "example.co.uk", "a.b.c.github.io", "co.uk", "x", "..", "a..b.com", "example.org."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		name, err := validate.Domain(name)
		if err != nil {
			return
		}
		prev := strings.TrimSuffix(name, ".")
		for _, a := range store.NameAncestors(name) {
			if !strings.HasSuffix(prev, "."+a) {
				t.Fatalf("NameAncestors(%q): %q is not a parent of %q", name, a, prev)
			}
			if ps, _ := publicsuffix.PublicSuffix(a); ps == a {
				t.Fatalf("NameAncestors(%q) holds the public suffix %q", name, a)
			}
			prev = a
		}
	})
}

// An account with more domains than one etcd transaction holds is deleted
// all the same: its names are released in parts, and its names are free
// for another account afterwards.
func TestFinishDeletionOfManyDomains(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a, err := f.create("many", "many.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 80 {
		if err := f.addSite(a.ID, fmt.Sprintf("addon%02d.example.org", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.FinishAccountDeletion(ctx, a.ID, nil, store.NewAuditEvent("t", "t", "deleteAccount", "many", "ok")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.s.GetAccount(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("account after deletion: %v", err)
	}
	b, err := f.create("next", "addon79.example.org")
	if err != nil {
		t.Fatalf("a released name is not free: %v", err)
	}
	// Finishing the first deletion again (a retry) leaves the new holder's
	// name alone.
	if err := f.s.FinishAccountDeletion(ctx, a.ID, nil, store.NewAuditEvent("t", "t", "deleteAccount", "many", "ok")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second finish: %v", err)
	}
	if _, err := f.create("third", "addon79.example.org"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("the new holder %s lost its name: %v", b.Username, err)
	}
}

// Races with a reseller's or a plan's change are caught by the
// transaction: an account is never created for a reseller deleted after
// the caller read it, and moving an account onto a plan changes the plan's
// revision, so an updatePlan that scanned the plan's accounts before
// scans again.
func TestAccountChangesCompareWhatTheyRead(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	now := time.Now().UTC()
	ghost := &store.Account{ID: store.NewAccountID(now), Username: "ghost1", Domain: "ghost1.example.com", Plan: "basic", Owner: "deletedreseller",
		Status: store.AccountPending, Generation: 1, CreatedAt: now, UpdatedAt: now}
	err := f.s.CreateAccount(ctx, ghost, f.planRev, store.Limits{MaxAccounts: 5, MaxDiskMB: 100}, store.NewAuditEvent("t", "t", "createAccount", "ghost1", "ok"))
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("account for a reseller with no record: %v", err)
	}

	if err := f.s.CreatePlan(ctx, store.Plan{Name: "big", DiskMB: 10, Domains: 3}, store.NewAuditEvent("t", "t", "createPlan", "big", "ok")); err != nil {
		t.Fatal(err)
	}
	a, err := f.create("mover", "mover.example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, before, err := f.s.GetPlanRev(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.ChangeAccountPlan(ctx, a.ID, "big", func(*store.Account, *store.Plan) error { return nil }, store.NewAuditEvent("t", "t", "changeAccountPlan", "mover", "ok")); err != nil {
		t.Fatal(err)
	}
	if _, after, err := f.s.GetPlanRev(ctx, "big"); err != nil || after == before {
		t.Fatalf("the target plan's revision did not move (%d -> %d, %v)", before, after, err)
	}
}
