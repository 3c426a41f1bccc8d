package graph_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/internal/testenv"
)

// TestCertOrderWeeklyLimit: a user orders one certificate at most three
// times a week (requestCertificate and renewCertificate alike), counted in
// the record, and may not renew a certificate served for less than 24
// hours; both refusals are RATE_LIMITED and change nothing. Admins are
// exempt.
func TestCertOrderWeeklyLimit(t *testing.T) {
	tn := setupCertTenants(t)
	t.Cleanup(graph.SetCertificateOrdersPerWeek(3))
	ctx := context.Background()
	d := tn.a1Domain
	if _, err := tn.userA.RequestCertificate(ctx, d, []string{"www." + d}, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := tn.resA.RenewCertificate(ctx, d); err != nil {
			t.Fatalf("renewal %d: %v", i+1, err)
		}
	}
	before := certState(t, tn)
	_, err := tn.userA.RenewCertificate(ctx, d)
	wantCode(t, "a fourth order (renew)", err, "RATE_LIMITED")
	if !strings.Contains(err.Error(), "3 times in the last 7 days") {
		t.Errorf("refusal does not say why: %v", err)
	}
	_, err = tn.resA.RequestCertificate(ctx, d, nil, "")
	wantCode(t, "a fourth order (request)", err, "RATE_LIMITED")
	if certState(t, tn) != before {
		t.Fatal("a refused order changed the certificate")
	}
	if _, err := tn.admin.RenewCertificate(ctx, d); err != nil {
		t.Fatalf("admin renewal over the weekly limit: %v", err)
	}
	c, err := tn.s.Store().GetCertificate(ctx, d)
	if err != nil || len(c.OrderRequests) != 4 {
		t.Fatalf("orders recorded: %+v, %v", c, err)
	}

	// Orders older than a week no longer count; a certificate issued an
	// hour ago is not renewed for a user, one issued 25 hours ago is.
	setCert := func(notBefore time.Time) {
		t.Helper()
		if _, err := tn.s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
			for i := range c.OrderRequests {
				c.OrderRequests[i] = c.OrderRequests[i].Add(-8 * 24 * time.Hour)
			}
			c.Status.State, c.Status.NotBefore, c.Status.NotAfter = store.CertIssued, notBefore, notBefore.Add(90*24*time.Hour)
			return nil, nil
		}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
	}
	setCert(time.Now().Add(-time.Hour))
	_, err = tn.userA.RenewCertificate(ctx, d)
	wantCode(t, "renewal of an hour-old certificate", err, "RATE_LIMITED")
	if !strings.Contains(err.Error(), "less than 24 hours ago") {
		t.Errorf("refusal does not say why: %v", err)
	}
	if _, err := tn.admin.RenewCertificate(ctx, d); err != nil {
		t.Fatalf("admin renewal of an hour-old certificate: %v", err)
	}
	setCert(time.Now().Add(-25 * time.Hour))
	if _, err := tn.userA.RenewCertificate(ctx, d); err != nil {
		t.Fatalf("renewal of a day-old certificate with old orders only: %v", err)
	}
	if c, err := tn.s.Store().GetCertificate(ctx, d); err != nil || len(c.OrderRequests) != 1 {
		t.Fatalf("orders older than a week kept: %+v, %v", c, err)
	}
}

// TestCertListTenancy: a user and a reseller list the certificates of
// their accounts' sites only, never a record of the site left from another
// account; an admin pages through every certificate with first/after.
func TestCertListTenancy(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	st := tn.s.Store()
	for _, d := range []string{tn.a1Domain, tn.b1Domain} {
		c := &store.Certificate{ID: d, Domains: []string{d}, Challenge: store.ChallengeHTTP01}
		c.Account = tn.a1.ID
		if d == tn.b1Domain {
			c.Account = tn.b1.ID
		}
		if err := st.CreateCertificate(ctx, c, store.AuditEvent{}); err != nil && !strings.Contains(err.Error(), "conflict") {
			t.Fatal(err)
		}
	}
	// Certificates of no site any tenant has, and one claiming bravo1's
	// account under a name that is no site of it.
	var extra []string
	for _, n := range []string{"orphan-a.example.net", "orphan-b.example.net", "orphan-c.example.net"} {
		if err := st.CreateCertificate(ctx, &store.Certificate{ID: n, Account: tn.b1.ID, Domains: []string{n}}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, n)
	}
	ids := func(list []client.Certificate) []string {
		var out []string
		for _, c := range list {
			out = append(out, c.ID)
		}
		return out
	}
	for name, tc := range map[string]struct {
		c    *client.Client
		want []string
	}{
		"alphauser": {tn.userA, []string{tn.a1Domain}},
		"resa":      {tn.resA, []string{tn.a1Domain}},
		"bravouser": {tn.userB, []string{tn.b1Domain}},
		"resb":      {tn.resB, []string{tn.b1Domain}},
	} {
		list, _, err := tc.c.Certificates(ctx, client.CertificateFilter{}, 50, "")
		if err != nil || !slices.Equal(ids(list), tc.want) {
			t.Errorf("%s lists %v (%v), want %v", name, ids(list), err, tc.want)
		}
	}
	// A record of alpha1's site that names bravo1 (left from a move) is
	// bravo1's reseller's to see only by id, never listed for alpha1.
	if _, err := st.UpdateCertificate(ctx, tn.a1Domain, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.Account = tn.b1.ID
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client.Client{"alphauser": tn.userA, "resa": tn.resA, "resb": tn.resB} {
		if list, _, err := c.Certificates(ctx, client.CertificateFilter{}, 50, ""); err != nil || hasCert(list, tn.a1Domain) {
			t.Errorf("%s lists a record of alpha1's site naming bravo1: %v %v", name, ids(list), err)
		}
	}

	// The admin pages one at a time through all of them, in id order.
	all, err := st.ListCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, c := range all {
		want = append(want, c.ID)
	}
	for after, n := "", 0; ; n++ {
		if n > len(want) {
			t.Fatalf("paging does not end: %v", got)
		}
		list, next, err := tn.admin.Certificates(ctx, client.CertificateFilter{}, 1, after)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(list)...)
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, want) || len(want) < len(extra)+2 {
		t.Fatalf("admin pages %v, want %v", got, want)
	}
	// A filter skipping most records still fills the page.
	list, next, err := tn.admin.Certificates(ctx, client.CertificateFilter{Domain: extra[2]}, 1, "")
	if err != nil || next != "" || !slices.Equal(ids(list), extra[2:]) {
		t.Fatalf("admin filtered page: %v %q %v", ids(list), next, err)
	}
}

// TestCertEventsEndWhenAccountLeaves: a reseller's certificateEvents
// subscription ends (the channel closes) once the account is handed to
// another reseller; the admin's stays open.
func TestCertEventsEndWhenAccountLeaves(t *testing.T) {
	tn := setupCertTenants(t)
	t.Cleanup(graph.SetCertificateSubscriptionRecheck(100 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := tn.a1Domain
	if _, err := tn.userA.RequestCertificate(ctx, d, nil, ""); err != nil {
		t.Fatal(err)
	}
	resa, err := tn.resA.CertificateEvents(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tn.admin.CertificateEvents(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// Both streams are live: the history arrives.
	for name, ch := range map[string]<-chan client.CertificateEvent{"resa": resa, "admin": admin} {
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: stream ended at once", name)
			}
		case <-ctx.Done():
			t.Fatalf("%s: no history", name)
		}
	}
	if _, err := tn.s.Store().UpdateAccount(ctx, tn.a1.ID, func(a *store.Account) error { a.Owner = "resb"; return nil }); err != nil {
		t.Fatal(err)
	}
	ended := false
	testenv.WaitFor(t, 15*time.Second, "resa's subscription to end", func() bool {
		for {
			select {
			case _, ok := <-resa:
				if !ok {
					ended = true
					return true
				}
			default:
				return ended
			}
		}
	})
	// The admin's goes on: a new event reaches it.
	if _, err := tn.s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.AddEvent(time.Now(), "ordering", "")
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case e, ok := <-admin:
			if !ok {
				t.Fatal("the admin's subscription ended")
			}
			if e.Kind == "ordering" {
				return
			}
		case <-ctx.Done():
			t.Fatal("no event for the admin")
		}
	}
}

// TestCertHTTP01NeedsOurZone: requestCertificate with HTTP01 refuses a
// site whose domain no zone of the account holds (the controller would
// wait for ever for it to resolve on our nameservers), INVALID_INPUT,
// storing nothing.
func TestCertHTTP01NeedsOurZone(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	d := tn.a1Domain
	if _, err := tn.s.Store().UpdateZone(ctx, d, func(z *store.Zone) error { z.Deleted = true; return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	before := certState(t, tn)
	for _, challenge := range []string{"", "HTTP01"} {
		_, err := tn.userA.RequestCertificate(ctx, d, []string{"www." + d}, challenge)
		wantCode(t, "HTTP01 outside our zones", err, "INVALID_INPUT")
		if !strings.Contains(err.Error(), d+" is not served by our nameservers; HTTP-01 certificates are ordered only for names in the account's zones") {
			t.Errorf("refusal: %v", err)
		}
	}
	if certState(t, tn) != before {
		t.Fatal("a refused request stored a certificate")
	}
	// bravo1's zone is there: its request goes through.
	if _, err := tn.userB.RequestCertificate(ctx, tn.b1Domain, nil, "HTTP01"); err != nil {
		t.Fatal(err)
	}
}
