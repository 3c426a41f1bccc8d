package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/internal/testenv"
)

// wantRefusedOverlap asserts a CONFLICT that names neither the account
// holding the other name nor its reseller.
func wantRefusedOverlap(t *testing.T, what string, err error, secrets ...string) {
	t.Helper()
	if client.CodeOf(err) != "CONFLICT" {
		t.Errorf("%s: %v, want CONFLICT", what, err)
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("%s: the refusal names %q: %v", what, s, err)
		}
	}
}

// The red team's takeover: a tenant creating an account, add-on domain or
// zone inside or above another tenant's domain, through the API. PowerDNS
// answers from the most specific zone, so the child would override the
// victim's records (MX, HTTP-01), the parent would answer for every name
// the victim does not serve. Each attempt is CONFLICT, says nothing of who
// holds the other name, and writes nothing; an account's own subdomains
// stay allowed, and a public suffix is nobody's parent.
func TestCrossTenantNameTakeover(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	if _, err := tn.admin.CreatePlan(ctx, client.Plan{Name: "multi", DiskMB: 10, BandwidthMB: 100, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.admin.CreateReseller(ctx, "resc", resellerPassword, 50, 10_000, []string{"multi"}, ""); err != nil {
		t.Fatal(err)
	}
	resC := login(t, tn.s, "resc", resellerPassword)
	c1, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: "charlie1", Domain: "charlie1.example.net", Plan: "multi"})
	if err != nil {
		t.Fatal(err)
	}
	// The victim is alpha1.example.com, reseller A's.
	secrets := []string{tn.a1.ID, "resa"}
	accountsBefore := usernames(t, tn.admin)

	for i, d := range []string{"mail.alpha1.example.com", "a.b.alpha1.example.com", "example.com", "ALPHA1.example.com."} {
		_, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: fmt.Sprintf("evil%d", i), Domain: d, Plan: "multi"})
		wantRefusedOverlap(t, "reseller C creates account "+d, err, secrets...)
	}
	// Admins create accounts for customers; the rule holds for them too.
	_, err = tn.admin.CreateAccount(ctx, client.CreateAccountInput{Username: "evil9", Domain: "mail.alpha1.example.com", Plan: "basic"})
	wantRefusedOverlap(t, "admin creates a child account", err)
	// Reseller A's own second account is another customer: refused too.
	_, err = tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha2", Domain: "shop.alpha1.example.com", Plan: "basic"})
	wantRefusedOverlap(t, "the victim's reseller creates a child account", err)
	if got := usernames(t, tn.admin); len(got) != len(accountsBefore) {
		t.Fatalf("refused creations wrote accounts: %v", got)
	}

	for _, d := range []string{"mail.alpha1.example.com", "example.com", "alpha1.example.com", "x.bravo1.example.com"} {
		_, err := resC.AddDomain(ctx, c1.ID, d, "")
		wantRefusedOverlap(t, "add-on domain "+d, err, secrets...)
	}
	ds, err := resC.Domains(ctx, c1.ID)
	if err != nil || len(ds) != 1 {
		t.Fatalf("refused add-ons wrote domains: %+v %v", ds, err)
	}

	// The account's own subdomains are its business.
	if _, err := resC.AddDomain(ctx, c1.ID, "shop.charlie1.example.net", ""); err != nil {
		t.Errorf("own subdomain as an add-on: %v", err)
	}
	// Siblings under a shared parent and names on either side of a public
	// suffix are unrelated.
	if _, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: "charlie2", Domain: "charlie2.example.com", Plan: "multi"}); err != nil {
		t.Errorf("sibling of another account's domain: %v", err)
	}
	if _, err := tn.admin.CreateAccount(ctx, client.CreateAccountInput{Username: "ukone", Domain: "hostco.co.uk", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := resC.CreateAccount(ctx, client.CreateAccountInput{Username: "uktwo", Domain: "other.co.uk", Plan: "multi"}); err != nil {
		t.Errorf("a second registrable name under co.uk: %v", err)
	}
	if _, err := resC.AddDomain(ctx, c1.ID, "co.uk", ""); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("a public suffix as an add-on: %v", err)
	}
	_, err = resC.AddDomain(ctx, c1.ID, "www2.hostco.co.uk", "")
	wantRefusedOverlap(t, "child of a name under co.uk", err)

	// A zone file cannot reach into the victim's zone either: its owners
	// must be inside the importing zone.
	testenv.WaitFor(t, 30*time.Second, "zones placed", func() bool {
		_, _, e1 := tn.s.Store().GetZone(ctx, "charlie1.example.net")
		_, _, e2 := tn.s.Store().GetZone(ctx, "alpha1.example.com")
		return e1 == nil && e2 == nil
	})
	victim, _, err := tn.s.Store().GetZone(ctx, "alpha1.example.com")
	if err != nil {
		t.Fatal(err)
	}
	imp, err := resC.ImportZone(ctx, "charlie1.example.net", "mail.alpha1.example.com. 300 IN A 192.0.2.66\n$ORIGIN alpha1.example.com.\n@ 300 IN MX 10 evil.example.org.\n")
	if err != nil || len(imp.Imported) != 0 || len(imp.Refused) != 2 {
		t.Errorf("import reaching into another zone: %+v %v", imp, err)
	}
	if _, err := resC.ImportZone(ctx, "alpha1.example.com", "@ 300 IN MX 10 evil.example.org.\n"); client.CodeOf(err) != "NOT_FOUND" {
		t.Errorf("import into another tenant's zone: %v", err)
	}
	if after, _, err := tn.s.Store().GetZone(ctx, "alpha1.example.com"); err != nil || after.Generation != victim.Generation || len(after.Records) != len(victim.Records) {
		t.Errorf("the victim's zone changed: %+v %v", after, err)
	}
}

// A parent and a child created at the same moment by two tenants through
// the API: exactly one wins, whichever it is.
func TestCrossTenantNameRace(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	if _, err := tn.admin.CreateReseller(ctx, "resc", resellerPassword, 50, 10_000, []string{"basic"}, ""); err != nil {
		t.Fatal(err)
	}
	resC := login(t, tn.s, "resc", resellerPassword)
	for i := range 8 {
		parent := fmt.Sprintf("race%d.example.org", i)
		var wg sync.WaitGroup
		var errs [2]error
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, errs[0] = tn.admin.CreateAccount(ctx, client.CreateAccountInput{Username: fmt.Sprintf("parent%d", i), Domain: parent, Plan: "basic"})
		})
		wg.Go(func() {
			<-start
			_, errs[1] = resC.CreateAccount(ctx, client.CreateAccountInput{Username: fmt.Sprintf("child%d", i), Domain: "mail." + parent, Plan: "basic"})
		})
		close(start)
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: parent %v, child %v: want exactly one", i, errs[0], errs[1])
		}
		for _, err := range errs {
			if err != nil && client.CodeOf(err) != "CONFLICT" {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
}

// The API holds a zone to the record limit every node accepts (the red
// team's 10,005 records went through, the node refused the zone and it
// took no change after): an import or a record past it is QUOTA_EXCEEDED
// and writes nothing; changes that do not grow the zone still go through.
func TestZoneRecordLimit(t *testing.T) {
	s := testenv.StartServer(t)
	s.FakeNode(t, "n1", nil, 10, 10_000)
	ctx := context.Background()
	mustPlan(t, s.Admin, "basic", 100)
	if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "big", Domain: "big.example.com", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	waitZone(t, s, "big.example.com", func(*store.Zone) bool { return true })
	file := func(from, n int) string {
		var b strings.Builder
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&b, "h%d 300 IN A 192.0.2.1\n", i)
		}
		return b.String()
	}
	count := func() int {
		z, _, err := s.Store().GetZone(ctx, "big.example.com")
		if err != nil {
			t.Fatal(err)
		}
		return len(z.Records)
	}

	if _, err := s.Admin.ImportZone(ctx, "big.example.com", file(0, 10_005)); client.CodeOf(err) != "QUOTA_EXCEEDED" {
		t.Fatalf("10,005 records in one import: %v", err)
	}
	if n := count(); n != 0 {
		t.Fatalf("a refused import wrote %d records", n)
	}
	if imp, err := s.Admin.ImportZone(ctx, "big.example.com", file(0, dnszone.MaxZoneRecords)); err != nil || len(imp.Imported) != dnszone.MaxZoneRecords {
		t.Fatalf("import up to the limit: %v", err)
	}
	if _, err := s.Admin.AddRecord(ctx, "big.example.com", client.RecordInput{Name: "one-more", Type: "A", Content: "192.0.2.2"}); client.CodeOf(err) != "QUOTA_EXCEEDED" {
		t.Errorf("a record past the limit: %v", err)
	}
	if _, err := s.Admin.ImportZone(ctx, "big.example.com", "one-more 300 IN A 192.0.2.2\n"); client.CodeOf(err) != "QUOTA_EXCEEDED" {
		t.Errorf("an import past the limit: %v", err)
	}
	if n := count(); n != dnszone.MaxZoneRecords {
		t.Fatalf("refused changes left %d records", n)
	}
	// Replacing an rrset keeps the count: allowed at the limit.
	if imp, err := s.Admin.ImportZone(ctx, "big.example.com", "h1 300 IN A 192.0.2.9\n"); err != nil || len(imp.Imported) != 1 {
		t.Errorf("replacing an rrset at the limit: %+v %v", imp, err)
	}
	z, err := s.Admin.Zone(ctx, "big.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Admin.DeleteRecord(ctx, "big.example.com", z.Records[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.AddRecord(ctx, "big.example.com", client.RecordInput{Name: "one-more", Type: "A", Content: "192.0.2.2"}); err != nil {
		t.Errorf("a record back under the limit: %v", err)
	}
	// A zone the API accepted fits on the node with the glue the control
	// plane adds.
	if dnszone.MaxZoneRecords+dnszone.MaxGlueRecords > dnszone.MaxRecords {
		t.Errorf("limits: %d records + %d glue > %d", dnszone.MaxZoneRecords, dnszone.MaxGlueRecords, dnszone.MaxRecords)
	}
}
