package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

const resellerPassword = "reseller-password-123"

type tenants struct {
	s                 *testenv.Server
	admin, resA, resB *client.Client
	userA             *client.Client
	a1, b1            *client.Account
}

func mustPlan(t *testing.T, c *client.Client, name string, diskMB int64) {
	t.Helper()
	if _, err := c.CreatePlan(context.Background(), client.Plan{Name: name, DiskMB: diskMB, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatalf("plan %s: %v", name, err)
	}
}

func login(t *testing.T, s *testenv.Server, user, pw string) *client.Client {
	t.Helper()
	c, _, err := client.New(s.URL(), "").Login(context.Background(), user, pw)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

func setupTenants(t *testing.T) *tenants {
	t.Helper()
	ctx := context.Background()
	s := testenv.StartServer(t)
	s.FakeNode(t, "n-eu", map[string]string{"zone": "eu"}, 100, 100_000)
	s.FakeNode(t, "n-us", map[string]string{"zone": "us"}, 100, 100_000)
	tn := &tenants{s: s, admin: s.Admin}
	mustPlan(t, s.Admin, "basic", 100)
	mustPlan(t, s.Admin, "premium", 200)
	if _, err := s.Admin.CreateReseller(ctx, "resa", resellerPassword, 3, 1000, []string{"basic"}, "zone=eu"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreateReseller(ctx, "resb", resellerPassword, 5, 1000, []string{"basic", "premium"}, ""); err != nil {
		t.Fatal(err)
	}
	tn.resA = login(t, s, "resa", resellerPassword)
	tn.resB = login(t, s, "resb", resellerPassword)
	var err error
	if tn.a1, err = tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha1", Domain: "alpha1.example.com", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	if tn.b1, err = tn.resB.CreateAccount(ctx, client.CreateAccountInput{Username: "bravo1", Domain: "bravo1.example.com", Plan: "premium"}); err != nil {
		t.Fatal(err)
	}
	if err := tn.resA.CreateUser(ctx, "alphauser", resellerPassword, "alpha1"); err != nil {
		t.Fatal(err)
	}
	tn.userA = login(t, s, "alphauser", resellerPassword)
	return tn
}

func usernames(t *testing.T, c *client.Client) map[string]bool {
	t.Helper()
	accts, _, err := c.Accounts(context.Background(), client.AccountFilter{}, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, a := range accts {
		out[a.Username] = true
	}
	return out
}

// TestRBAC walks every query and mutation with each role: what a reseller
// may not see is NOT_FOUND (existence does not leak), what a role may never
// do is FORBIDDEN.
func TestRBAC(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()

	// Listing is scoped by tenancy, whatever filter the caller asks for.
	for name, tc := range map[string]struct {
		c    *client.Client
		want []string
	}{
		"admin": {tn.admin, []string{"alpha1", "bravo1"}},
		"resa":  {tn.resA, []string{"alpha1"}},
		"resb":  {tn.resB, []string{"bravo1"}},
		"user":  {tn.userA, []string{"alpha1"}},
	} {
		got := usernames(t, tc.c)
		if len(got) != len(tc.want) {
			t.Errorf("%s sees %v, want %v", name, got, tc.want)
		}
		for _, u := range tc.want {
			if !got[u] {
				t.Errorf("%s does not see %s", name, u)
			}
		}
	}
	if accts, _, err := tn.resA.Accounts(ctx, client.AccountFilter{Owner: "resb"}, 50, ""); err != nil || len(accts) != 0 {
		t.Errorf("resa filtering by owner resb got %d accounts, %v", len(accts), err)
	}
	for _, c := range []*client.Client{tn.resA, tn.userA} {
		if a, err := c.Account(ctx, tn.b1.ID); err != nil || a != nil {
			t.Errorf("another tenant's account visible: %+v, %v", a, err)
		}
	}

	// Mutations on another tenant's account.
	_, err := tn.resA.AccountAction(ctx, "suspendAccount", tn.b1.ID)
	wantAPICode(t, "resa suspends resb's account", err, "NOT_FOUND")
	_, err = tn.resA.AccountAction(ctx, "deleteAccount", tn.b1.ID)
	wantAPICode(t, "resa deletes resb's account", err, "NOT_FOUND")
	_, err = tn.userA.AccountAction(ctx, "suspendAccount", tn.a1.ID)
	wantAPICode(t, "user suspends own account", err, "FORBIDDEN")
	wantAPICode(t, "resa creates a user on resb's account", tn.resA.CreateUser(ctx, "sneaky", resellerPassword, tn.b1.ID), "NOT_FOUND")

	// What a role may never do.
	forbidden := map[string]func(*client.Client) error{
		"createAccount for another owner": func(c *client.Client) error {
			_, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: "x1", Domain: "x1.example.com", Plan: "basic", Owner: "resb"})
			return err
		},
		"createAccount pinned": func(c *client.Client) error {
			_, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: "x2", Domain: "x2.example.com", Plan: "basic", Node: "n-eu"})
			return err
		},
		"createAccount with a plan not allowed": func(c *client.Client) error {
			_, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: "x3", Domain: "x3.example.com", Plan: "premium"})
			return err
		},
		"createReseller": func(c *client.Client) error {
			_, err := c.CreateReseller(ctx, "resc", resellerPassword, 1, 100, nil, "")
			return err
		},
		"resellers":   func(c *client.Client) error { _, err := c.Resellers(ctx); return err },
		"nodes":       func(c *client.Client) error { _, err := c.Nodes(ctx); return err },
		"drainNode":   func(c *client.Client) error { return c.SetDraining(ctx, "n-eu", true) },
		"auditEvents": func(c *client.Client) error { return c.Do(ctx, `{auditEvents{edges{cursor}}}`, nil, nil) },
		"runNodeAction": func(c *client.Client) error {
			_, err := c.Ping(ctx, "n-eu", "", 1)
			return err
		},
		"cluster":         func(c *client.Client) error { _, err := c.ClusterStatus(ctx); return err },
		"clusterSnapshot": func(c *client.Client) error { _, _, err := c.ClusterSnapshot(ctx, io.Discard); return err },
	}
	for name, call := range forbidden {
		wantAPICode(t, "resa: "+name, call(tn.resA), "FORBIDDEN")
		wantAPICode(t, "user: "+name, call(tn.userA), "FORBIDDEN")
	}
	anon := tn.s.Client("")
	for _, name := range []string{"cluster", "clusterSnapshot"} {
		wantAPICode(t, "resb: "+name, forbidden[name](tn.resB), "FORBIDDEN")
		wantAPICode(t, "anonymous: "+name, forbidden[name](anon), "UNAUTHENTICATED")
		if err := forbidden[name](tn.admin); err != nil {
			t.Errorf("admin: %s: %v", name, err)
		}
	}
	for name, call := range map[string]func(*client.Client) error{
		"createAccount": func(c *client.Client) error {
			_, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: "x4", Domain: "x4.example.com", Plan: "basic"})
			return err
		},
		"plans":          func(c *client.Client) error { _, err := c.Plans(ctx); return err },
		"createAPIToken": func(c *client.Client) error { _, _, err := c.CreateAPIToken(ctx, "t", nil); return err },
		"createPlan": func(c *client.Client) error {
			_, err := c.CreatePlan(ctx, client.Plan{Name: "mine", Domains: 1})
			return err
		},
	} {
		wantAPICode(t, "user: "+name, call(tn.userA), "FORBIDDEN")
	}

	// A reseller sees its allowed and own plans only.
	mustPlan(t, tn.resA, "resa-own", 50)
	plans, err := tn.resA.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range plans {
		seen[p.Name] = true
	}
	if len(seen) != 2 || !seen["basic"] || !seen["resa-own"] {
		t.Errorf("resa's plans = %v, want basic and resa-own", seen)
	}
	if plans, _ := tn.resB.Plans(ctx); len(plans) != 2 {
		t.Errorf("resb sees %d plans, want basic and premium (not resa's own)", len(plans))
	}

	// The reseller's node selector confines placement.
	testenv.WaitFor(t, 10*time.Second, "alpha1 placed", func() bool {
		a, err := tn.admin.Account(ctx, tn.a1.ID)
		return err == nil && a.NodeName() != ""
	})
	if a, _ := tn.admin.Account(ctx, tn.a1.ID); a.NodeName() != "n-eu" {
		t.Errorf("resa's account placed on %s, selector allows n-eu only", a.NodeName())
	}

	// A reseller whose pool has no node: the account waits with the reason
	// in words; the labels of the other nodes are for admins only.
	if _, err := tn.admin.CreateReseller(ctx, "resc", resellerPassword, 3, 1000, []string{"basic"}, "zone=mars"); err != nil {
		t.Fatal(err)
	}
	resC := login(t, tn.s, "resc", resellerPassword)
	c1, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: "charlie1", Domain: "charlie1.example.org", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "charlie1's placement reason", func() bool {
		a, err := tn.admin.Account(ctx, c1.ID)
		return err == nil && a.Reason != nil && strings.Contains(*a.Reason, "node selector zone=mars (")
	})
	if a, err := resC.Account(ctx, c1.ID); err != nil || a.Reason == nil ||
		!strings.Contains(*a.Reason, "outside the reseller's node selector zone=mars") || strings.Contains(*a.Reason, "zone=eu") || strings.Contains(*a.Reason, " have ") || strings.Contains(*a.Reason, " has ") {
		t.Errorf("the reseller's view of the reason: %q %v", deref(a.Reason), err)
	}

	// API tokens authenticate as their owner and stop working when revoked.
	tok, rec, err := tn.resA.CreateAPIToken(ctx, "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	bot := client.New(tn.s.URL(), tok)
	if got := usernames(t, bot); len(got) != 1 || !got["alpha1"] {
		t.Errorf("API token of resa sees %v", got)
	}
	wantAPICode(t, "resb revokes resa's token", tn.resB.RevokeAPIToken(ctx, rec.ID), "NOT_FOUND")
	if err := tn.resA.RevokeAPIToken(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "revoked token", bot.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")

	// Subscriptions are scoped too.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ch, err := tn.resA.Subscribe(sctx, `subscription($id:ID!){accountEvents(id:$id){status}}`, map[string]any{"id": tn.b1.ID})
	if err == nil {
		if _, ok := <-ch; ok {
			t.Error("resa received events of resb's account")
		}
	}
}

func TestQuotas(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	for i := 2; i <= 3; i++ {
		u := fmt.Sprintf("alpha%d", i)
		if _, err := tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "basic"}); err != nil {
			t.Fatalf("account %d of 3: %v", i, err)
		}
	}
	_, err := tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha4", Domain: "alpha4.example.com", Plan: "basic"})
	wantAPICode(t, "fourth account of three allowed", err, "QUOTA_EXCEEDED")
	if got := usernames(t, tn.admin); got["alpha4"] || len(got) != 4 {
		t.Fatalf("after a refused create: %v", got)
	}
	// Disk: 150 MB allows one 100 MB account.
	if _, err := tn.admin.CreateReseller(ctx, "resc", resellerPassword, 10, 150, []string{"basic"}, ""); err != nil {
		t.Fatal(err)
	}
	resC := login(t, tn.s, "resc", resellerPassword)
	if _, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: "charlie1", Domain: "charlie1.example.com", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	_, err = resC.CreateAccount(ctx, client.CreateAccountInput{Username: "charlie2", Domain: "charlie2.example.com", Plan: "basic"})
	wantAPICode(t, "disk over quota", err, "QUOTA_EXCEEDED")

	// Deleting frees the slot once the account is gone... which needs the
	// node to run the delete; an unplaced account is released at once.
	rs, err := tn.admin.Resellers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == "resa" && (r.Usage.Accounts != 3 || r.Usage.DiskMB != 300) {
			t.Errorf("resa usage = %+v, want 3 accounts, 300 MB", r.Usage)
		}
	}
}

func TestUniqueness(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	_, err := tn.resB.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha1", Domain: "other.example.com", Plan: "basic"})
	wantAPICode(t, "taken username", err, "CONFLICT")
	_, err = tn.resB.CreateAccount(ctx, client.CreateAccountInput{Username: "other", Domain: "ALPHA1.example.com.", Plan: "basic"})
	wantAPICode(t, "taken domain (differently spelled)", err, "CONFLICT")

	// Racing creations of one name: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := tn.admin.CreateAccount(ctx, client.CreateAccountInput{Username: "racer", Domain: fmt.Sprintf("racer%d.example.com", i), Plan: "basic"})
			if err == nil {
				wins.Add(1)
			} else if client.CodeOf(err) != "CONFLICT" {
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d racing creations of one username succeeded", wins.Load())
	}
}

func TestAccountInputErrors(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := context.Background()
	mustPlan(t, s.Admin, "basic", 100)
	for _, in := range []client.CreateAccountInput{
		{Username: "root", Domain: "r.example.com", Plan: "basic"},
		{Username: "Bad", Domain: "b.example.com", Plan: "basic"},
		{Username: "a;rm -rf", Domain: "c.example.com", Plan: "basic"},
		{Username: "okname", Domain: "co.uk", Plan: "basic"},
		{Username: "okname", Domain: "192.0.2.1", Plan: "basic"},
		{Username: "okname", Domain: "../etc/passwd", Plan: "basic"},
		{Username: "okname", Domain: "ok.example.com", Plan: "nosuchplan"},
	} {
		_, err := s.Admin.CreateAccount(ctx, in)
		wantAPICode(t, fmt.Sprintf("%+v", in), err, "INVALID_INPUT")
	}
	if got := usernames(t, s.Admin); len(got) != 0 {
		t.Fatalf("refused input wrote accounts: %v", got)
	}
}

// Two account controllers on two replicas race to place accounts on small
// nodes. The allocation compare in the placement transaction must make one
// of them re-plan whenever they collide: no node ends up over capacity, and
// every account is placed at most once.
func TestSchedulersRacing(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := testenv.StartServer(t, testenv.WithEtcd(etcd))
	b := testenv.StartServer(t, testenv.WithEtcd(etcd))
	ctx := testenv.Context(t)
	for _, n := range []string{"small-1", "small-2", "small-3"} {
		a.FakeNode(t, n, nil, 4, 100_000)
	}
	mustPlan(t, a.Admin, "basic", 100)
	// Whichever replica leads already runs a controller; give the other one
	// its own, so that two schedulers work on every batch.
	follower := b
	if b.IsLeader() {
		follower = a
	}
	go follower.RunAccountController(ctx)

	const total = 20
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() {
			c := a.Admin
			if i%2 == 1 {
				c = b.Admin
			}
			u := fmt.Sprintf("race%02d", i)
			if _, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "basic"}); err != nil {
				t.Errorf("create %s: %v", u, err)
			}
		})
	}
	wg.Wait()
	var accts []client.Account
	testenv.WaitFor(t, 30*time.Second, "12 placed, 8 waiting", func() bool {
		var err error
		accts, _, err = a.Admin.Accounts(ctx, client.AccountFilter{}, 500, "")
		if err != nil {
			return false
		}
		placed, waiting := 0, 0
		for _, acc := range accts {
			switch {
			case acc.NodeName() != "" && acc.Status == "PROVISIONING":
				placed++
			case acc.Status == "PENDING" && acc.Reason != nil:
				waiting++
			}
		}
		return placed == 12 && waiting == 8
	})
	perNode := map[string]int{}
	for _, acc := range accts {
		if n := acc.NodeName(); n != "" {
			perNode[n]++
		}
	}
	allocs, _, err := a.Store().Allocs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range perNode {
		if c > 4 || allocs[n].Accounts != c {
			t.Errorf("node %s: %d accounts placed, allocation says %d, capacity 4", n, c, allocs[n].Accounts)
		}
	}
	// Each placed account has exactly one task queued for its node.
	for _, n := range []string{"small-1", "small-2", "small-3"} {
		q, err := a.Store().QueueLen(ctx, n)
		if err != nil || int(q) != perNode[n] {
			t.Errorf("node %s: %d queued tasks for %d accounts (%v)", n, q, perNode[n], err)
		}
	}
}

// TestAccountsPageNodes: a page of accounts names each account's node as
// its record does, and no node for one whose node record is gone.
func TestAccountsPageNodes(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	nodes := []string{"page-1", "page-2", "page-3"}
	for _, n := range nodes {
		s.FakeNode(t, n, nil, 2, 100_000)
	}
	mustPlan(t, s.Admin, "basic", 100)
	for i := range 6 {
		u := fmt.Sprintf("pagenode%d", i)
		if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "basic"}); err != nil {
			t.Fatal(err)
		}
	}
	page := func() []client.Account {
		accts, _, err := s.Admin.Accounts(ctx, client.AccountFilter{}, 50, "")
		if err != nil {
			t.Fatal(err)
		}
		return accts
	}
	testenv.WaitFor(t, 30*time.Second, "6 accounts placed", func() bool {
		placed := 0
		for _, a := range page() {
			if a.NodeName() != "" {
				placed++
			}
		}
		return placed == 6
	})
	perNode := map[string]int{}
	for _, a := range page() {
		rec, _, err := s.Store().GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.NodeName() != rec.Node {
			t.Errorf("%s: node %q in the page, %q in its record", a.Username, a.NodeName(), rec.Node)
		}
		perNode[a.NodeName()]++
	}
	if len(perNode) != len(nodes) {
		t.Errorf("accounts per node %v: want all %d nodes in one page", perNode, len(nodes))
	}

	audit := store.NewAuditEvent("system", "test", "removeNode", "page-2", "ok")
	if err := s.Store().RemoveNode(ctx, "page-2", audit); err != nil {
		t.Fatal(err)
	}
	for _, a := range page() {
		rec, _, err := s.Store().GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := rec.Node
		if want == "page-2" {
			want = ""
		}
		if a.NodeName() != want {
			t.Errorf("%s on %s after page-2 was removed: node %q, want %q", a.Username, rec.Node, a.NodeName(), want)
		}
	}
}

// TestMailPlanNeedsMailNode: an account whose plan includes mailboxes is
// placed only on a node with the mail role (its mail lives on its node);
// a plan change gives the account the new plan's roles, and the role
// cannot be taken off a node while such an account is placed there.
func TestMailPlanNeedsMailNode(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	st := s.Store()
	s.FakeNode(t, "web-only", nil, 100, 100_000)
	if _, err := s.Admin.UpdateNode(ctx, "web-only", client.NodeUpdate{Roles: []string{"WEB", "DNS"}}); err != nil {
		t.Fatal(err)
	}
	s.FakeNode(t, "mailer", nil, 100, 100_000)
	for _, p := range []client.Plan{
		{Name: "withmail", DiskMB: 100, Domains: 1, Mailboxes: 5, PHPVersions: []string{"8.2"}},
		{Name: "nomail", DiskMB: 100, Domains: 1, PHPVersions: []string{"8.2"}},
	} {
		if _, err := s.Admin.CreatePlan(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	roles := func(id string) []string {
		a, _, err := st.GetAccount(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a.Roles
	}
	placed := func(id string) string {
		var node string
		testenv.WaitFor(t, 15*time.Second, id+" placed", func() bool {
			a, err := s.Admin.Account(ctx, id)
			node = a.NodeName()
			return err == nil && node != ""
		})
		return node
	}
	for i := range 4 {
		a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: fmt.Sprintf("mailacct%d", i), Domain: fmt.Sprintf("mailacct%d.example.com", i), Plan: "withmail"})
		if err != nil {
			t.Fatal(err)
		}
		if got := roles(a.ID); fmt.Sprint(got) != "[web mail]" {
			t.Fatalf("account on a plan with mailboxes has roles %v", got)
		}
		if node := placed(a.ID); node != "mailer" {
			t.Fatalf("account on a plan with mailboxes placed on %s, which has no mail role", node)
		}
	}

	// Pinned to the node without the role: it waits, saying why.
	pinned, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "pinnedmail", Domain: "pinnedmail.example.com", Plan: "withmail", Node: "web-only"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "pinnedmail pending for want of the mail role", func() bool {
		a, err := s.Admin.Account(ctx, pinned.ID)
		return err == nil && a.Status == "PENDING" && a.Reason != nil && strings.Contains(*a.Reason, "mail role")
	})

	// Without mailboxes it may go to web-only; moved to a plan with them,
	// it stays there (placement is not redone) and takes the plan's roles.
	plain, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "plain", Domain: "plain.example.com", Plan: "nomail", Node: "web-only"})
	if err != nil {
		t.Fatal(err)
	}
	if got := roles(plain.ID); fmt.Sprint(got) != "[web]" {
		t.Fatalf("account on a plan without mailboxes has roles %v", got)
	}
	if node := placed(plain.ID); node != "web-only" {
		t.Fatalf("plain placed on %s", node)
	}
	if _, err := s.Admin.ChangeAccountPlan(ctx, "plain", "withmail"); err != nil {
		t.Fatal(err)
	}
	if got := roles(plain.ID); fmt.Sprint(got) != "[web mail]" {
		t.Fatalf("after the plan change the account has roles %v", got)
	}
	_, err = s.Admin.UpdateNode(ctx, "mailer", client.NodeUpdate{Roles: []string{"WEB", "DNS"}})
	wantAPICode(t, "take mail off the node of accounts whose plans have mailboxes", err, "CONFLICT")
	if !strings.Contains(err.Error(), "role mail") || !strings.Contains(err.Error(), "mailacct") {
		t.Errorf("refusal does not name the role and the accounts: %v", err)
	}
}
