package controlplane

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

const day = 24 * time.Hour

func TestCertRenewTime(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		ari      time.Time
	}{
		{"90 days", 90 * day, time.Time{}},
		{"6 days", 6 * day, time.Time{}},
		{"one hour", time.Hour, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			na := nb.Add(tc.lifetime)
			for i := range 200 {
				id := fmt.Sprintf("site%d.example.com", i)
				at := renewTime(id, nb, na, tc.ari)
				latest := na.Add(-tc.lifetime / 3)
				earliest := latest.Add(-time.Duration(float64(tc.lifetime) * renewJitterFraction))
				if at.After(latest) || at.Before(earliest) {
					t.Fatalf("%s renews at %s, want within [%s, %s]", id, at, earliest, latest)
				}
				if again := renewTime(id, nb, na, tc.ari); !again.Equal(at) {
					t.Fatalf("jitter not deterministic: %s then %s", at, again)
				}
			}
		})
	}
	na := nb.Add(90 * day)
	if at := renewTime("a.example", nb, na, nb.Add(50*day)); !at.Equal(nb.Add(50 * day)) {
		t.Fatalf("ARI ignored: %s", at)
	}
	if at := renewTime("a.example", nb, na, na.Add(day)); at.After(na) {
		t.Fatalf("ARI past NotAfter taken: %s", at)
	}
	if !renewTime("a.example", time.Time{}, time.Time{}, time.Time{}).IsZero() {
		t.Fatal("a certificate without NotAfter has a renewal time")
	}
}

func TestCertJitterSpreads(t *testing.T) {
	// 1,000 certificates of one lifetime land in at least 9 of 10 equal
	// slices of the jitter window.
	lifetime := 90 * day
	window := time.Duration(float64(lifetime) * renewJitterFraction)
	slots := map[int]bool{}
	for i := range 1000 {
		slots[int(certJitter(fmt.Sprintf("c%d.example", i), lifetime)*10/window)] = true
	}
	if len(slots) < 9 {
		t.Fatalf("jitter uses %d of 10 slices", len(slots))
	}
}

func TestCertRetryDelay(t *testing.T) {
	base, max := 5*time.Minute, 24*time.Hour
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 5 * time.Minute}, {1, 5 * time.Minute}, {2, 10 * time.Minute}, {3, 20 * time.Minute},
		{9, 1280 * time.Minute}, {10, 24 * time.Hour}, {100, 24 * time.Hour},
	} {
		if got := retryDelay(tc.n, base, max); got != tc.want {
			t.Errorf("retryDelay(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func TestCertNextStep(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	issued := func(mut func(c *store.Certificate)) *store.Certificate {
		c := &store.Certificate{ID: "a.example", Domains: []string{"a.example"}, AutoRenew: true, Generation: 1,
			Status: store.CertStatus{State: store.CertIssued, ObservedGeneration: 1, ChainPEM: "chain",
				NotBefore: now.Add(-30 * day), NotAfter: now.Add(60 * day), RenewAt: now.Add(20 * day)}}
		if mut != nil {
			mut(c)
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		c       *store.Certificate
		want    certStep
		at      time.Time
		expired bool
	}{
		{"new", &store.Certificate{Generation: 1, Status: store.CertStatus{State: store.CertPending}}, stepIssue, time.Time{}, false},
		{"task in flight", issued(func(c *store.Certificate) { c.Generation = 2; c.Status.TaskID = "T" }), stepNone, time.Time{}, false},
		{"settled", issued(nil), stepWait, now.Add(20 * day), false},
		{"renewal due", issued(func(c *store.Certificate) { c.Status.RenewAt = now.Add(-time.Minute) }), stepIssue, time.Time{}, false},
		{"renewal backing off", issued(func(c *store.Certificate) {
			c.Status.RenewAt, c.Status.Failures, c.Status.NextAttempt = now.Add(-time.Hour), 2, now.Add(time.Hour)
		}), stepWait, now.Add(time.Hour), false},
		{"retry due", issued(func(c *store.Certificate) {
			c.Status.RenewAt, c.Status.Failures, c.Status.NextAttempt = now.Add(-time.Hour), 2, now.Add(-time.Second)
		}), stepIssue, time.Time{}, false},
		{"no auto-renew", issued(func(c *store.Certificate) { c.AutoRenew = false; c.Status.RenewAt = now.Add(-time.Hour) }), stepWait, now.Add(60 * day), false},
		{"expired", issued(func(c *store.Certificate) {
			c.AutoRenew = false
			c.Status.NotAfter = now.Add(-time.Second)
		}), stepNone, time.Time{}, true},
		{"expired, renewing", issued(func(c *store.Certificate) {
			c.Status.NotAfter, c.Status.RenewAt = now.Add(-time.Second), now.Add(-day)
		}), stepIssue, time.Time{}, true},
		{"renew asked", issued(func(c *store.Certificate) { c.Generation = 2 }), stepIssue, time.Time{}, false},
		{"custom", issued(func(c *store.Certificate) { c.Custom, c.Generation = true, 2 }), stepInstall, time.Time{}, false},
		{"custom never auto-renews", issued(func(c *store.Certificate) { c.Custom, c.AutoRenew, c.Status.RenewAt = true, false, now.Add(-day) }), stepWait, now.Add(60 * day), false},
		{"custom ACME takes over, not yet", issued(func(c *store.Certificate) { c.Custom = true }), stepWait, now.Add(20 * day), false},
		{"custom ACME takes over, due", issued(func(c *store.Certificate) { c.Custom, c.Status.RenewAt = true, now.Add(-time.Minute) }), stepTakeover, time.Time{}, false},
		{"custom ACME takes over, expired", issued(func(c *store.Certificate) {
			c.Custom, c.Status.RenewAt, c.Status.NotAfter = true, now.Add(-day), now.Add(-time.Second)
		}), stepTakeover, time.Time{}, true},
		{"custom ACME takes over, revoking", issued(func(c *store.Certificate) { c.Custom, c.Revoke, c.Generation = true, true, 2 }), stepRevoke, time.Time{}, false},
		{"revoke", issued(func(c *store.Certificate) { c.Revoke, c.Generation = true, 2 }), stepRevoke, time.Time{}, false},
		{"revoked", issued(func(c *store.Certificate) { c.Revoke, c.Status.State = true, store.CertRevoked }), stepNone, time.Time{}, false},
		{"deleting", issued(func(c *store.Certificate) { c.Deleting, c.Generation = true, 2 }), stepRemove, time.Time{}, false},
		{"names missing, backing off", issued(func(c *store.Certificate) {
			c.Domains, c.Status.IssuedDomains, c.Status.PartialRetryAt = []string{"a.example", "www.a.example"}, []string{"a.example"}, now.Add(time.Hour)
		}), stepWait, now.Add(time.Hour), false},
		{"names missing, due", issued(func(c *store.Certificate) {
			c.Domains, c.Status.IssuedDomains, c.Status.PartialRetryAt = []string{"a.example", "www.a.example"}, []string{"a.example"}, now.Add(-time.Minute)
			c.Status.NextAttempt = now.Add(5 * time.Minute) // a recheck only: a zone event may wake it
		}), stepIssue, time.Time{}, false},
		{"names missing, failed re-order backs off", issued(func(c *store.Certificate) {
			c.Domains, c.Status.IssuedDomains, c.Status.PartialRetryAt = []string{"a.example", "www.a.example"}, []string{"a.example"}, now.Add(-time.Minute)
			c.Status.Failures, c.Status.NextAttempt = 1, now.Add(2*time.Hour)
		}), stepWait, now.Add(2 * time.Hour), false},
		{"names covered", issued(func(c *store.Certificate) { c.Status.IssuedDomains = []string{"a.example"} }), stepWait, now.Add(20 * day), false},
		{"waiting for names", &store.Certificate{Generation: 1, Status: store.CertStatus{State: store.CertPending, LastError: "x", NextAttempt: now.Add(time.Hour)}}, stepIssue, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nextCertStep(tc.c, now)
			if got.step != tc.want || !got.at.Equal(tc.at) || got.expired != tc.expired {
				t.Fatalf("got %s at %s expired %t, want %s at %s expired %t", got.step, got.at, got.expired, tc.want, tc.at, tc.expired)
			}
		})
	}
}

func TestCertEntryDue(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		e    certEntry
		due  bool
	}{
		{"pending", certEntry{pending: true}, true},
		{"in flight", certEntry{pending: true, inFlight: true}, false},
		{"backing off", certEntry{pending: true, nextAttempt: now.Add(time.Hour)}, false},
		{"renewal due", certEntry{state: store.CertIssued, autoRenew: true, renewAt: now.Add(-time.Second), notAfter: now.Add(day)}, true},
		{"renewal later", certEntry{state: store.CertIssued, autoRenew: true, renewAt: now.Add(time.Hour), notAfter: now.Add(day)}, false},
		{"expiring without renewal", certEntry{state: store.CertIssued, notAfter: now.Add(-time.Second)}, true},
		{"installed, not renewed", certEntry{state: store.CertIssued, custom: true, renewAt: now.Add(-time.Second), notAfter: now.Add(day)}, false},
		{"installed, ACME takes over", certEntry{state: store.CertIssued, custom: true, autoRenew: true, renewAt: now.Add(-time.Second), notAfter: now.Add(day)}, true},
		{"revoked", certEntry{state: store.CertRevoked, notAfter: now.Add(-time.Second)}, false},
	} {
		at := tc.e.dueAt()
		if got := !at.IsZero() && !now.Before(at); got != tc.due {
			t.Errorf("%s: due %t (at %s), want %t", tc.name, got, at, tc.due)
		}
	}
}

// renewHeap orders simulated certificates by renewal time.
type simCert struct {
	id                  string
	notBefore, notAfter time.Time
	renewAt             time.Time
}

type renewHeap []*simCert

func (h renewHeap) Len() int           { return len(h) }
func (h renewHeap) Less(i, j int) bool { return h[i].renewAt.Before(h[j].renewAt) }
func (h renewHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *renewHeap) Push(x any)        { *h = append(*h, x.(*simCert)) }
func (h *renewHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// BenchmarkRenewalSweep10k simulates 90 days of the renewal sweep over
// 10,000 90-day certificates, in minute steps, with renewTime deciding
// each renewal: half were issued at random over the last 50 days, half in
// one minute (a bulk migration, the case jitter is for). Every renewal
// succeeds at once. Reported: ACME orders sent, the most in any one
// minute, the p50/p99 lead time of renewals before expiry (days), and the
// wall time of one sweep pass over the 10,000 index entries (the
// controller's minute tick: certIndex.due).
func BenchmarkRenewalSweep10k(b *testing.B) {
	const n = 10000
	const lifetime = 90 * day
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var orders, maxPerMinute int
	var leads []time.Duration
	for b.Loop() {
		rng := rand.New(rand.NewPCG(1, 2))
		h := make(renewHeap, 0, n)
		for i := range n {
			// Issued within the last 50 days: none is overdue when the
			// simulation starts (renewals begin 51 days in at the earliest).
			issued := start.Add(-time.Duration(rng.Int64N(int64(50 * day))))
			if i%2 == 1 {
				issued = start.Add(-10 * day) // the bulk
			}
			c := &simCert{id: fmt.Sprintf("site%05d.example.com", i), notBefore: issued, notAfter: issued.Add(lifetime)}
			c.renewAt = renewTime(c.id, c.notBefore, c.notAfter, time.Time{})
			h = append(h, c)
		}
		heap.Init(&h)
		orders, maxPerMinute, leads = 0, 0, leads[:0]
		end := start.Add(90 * day)
		for now := start; now.Before(end); now = now.Add(time.Minute) {
			inMinute := 0
			for h.Len() > 0 && !h[0].renewAt.After(now) {
				c := h[0]
				orders++
				inMinute++
				leads = append(leads, c.notAfter.Sub(now))
				c.notBefore, c.notAfter = now, now.Add(lifetime)
				c.renewAt = renewTime(c.id, c.notBefore, c.notAfter, time.Time{})
				heap.Fix(&h, 0)
			}
			maxPerMinute = max(maxPerMinute, inMinute)
		}
	}
	slices.Sort(leads)
	b.ReportMetric(float64(orders), "acme_orders")
	b.ReportMetric(float64(maxPerMinute), "max_orders/minute")
	b.ReportMetric(leads[len(leads)/2].Hours()/24, "p50_lead_days")
	b.ReportMetric(leads[len(leads)*99/100].Hours()/24, "p99_lead_days")
	b.ReportMetric(leads[len(leads)/100].Hours()/24, "p1_lead_days")

	// One sweep pass over an index of 10,000 certificates.
	idx := newCertIndex()
	now := time.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		na := now.Add(time.Duration(rng.Int64N(int64(lifetime))))
		id := fmt.Sprintf("site%05d.example.com", i)
		idx.put(id, &certEntry{state: store.CertIssued, autoRenew: true,
			notAfter: na, renewAt: renewTime(id, na.Add(-lifetime), na, time.Time{})})
	}
	const passes = 50
	t0 := time.Now()
	due := 0
	for range passes {
		due = len(idx.due(now))
	}
	b.ReportMetric(float64(time.Since(t0).Microseconds())/passes, "sweep_pass_us")
	b.ReportMetric(float64(due), "due_in_pass")
}

func TestCertNewEvents(t *testing.T) {
	at := time.Unix(1, 0)
	c := &store.Certificate{}
	for i := range 60 {
		c.AddEvent(at.Add(time.Duration(i)), "e", fmt.Sprint(i))
	}
	before := slices.Clone(c.Status.Events)
	c.AddEvent(at.Add(100), "new", "a")
	c.AddEvent(at.Add(101), "new", "b")
	got := newEvents(before, c.Status.Events)
	if len(got) != 2 || got[0].Message != "a" || got[1].Message != "b" {
		t.Fatalf("new events: %+v", got)
	}
	if got := newEvents(nil, c.Status.Events[:1]); len(got) != 1 {
		t.Fatalf("from none: %+v", got)
	}
}

func TestCertTakeRequest(t *testing.T) {
	now := time.Now()
	failed := func(mut func(c *store.Certificate)) *store.Certificate {
		c := &store.Certificate{Generation: 2, Status: store.CertStatus{State: store.CertFailed, ObservedGeneration: 0,
			Failures: 6, NextAttempt: now.Add(5 * time.Hour)}}
		mut(c)
		return c
	}
	// A deletion of a certificate whose orders kept failing goes at once.
	c := failed(func(c *store.Certificate) { c.Deleting = true })
	if !takeRequest(c) || c.Status.Failures != 0 || nextCertStep(c, now).step != stepRemove {
		t.Fatalf("deletion held up by the order's backoff: %+v", c.Status)
	}
	// Taken once: a failing removal then backs off.
	c.Status.Failures, c.Status.NextAttempt = 1, now.Add(time.Minute)
	if takeRequest(c) || nextCertStep(c, now).step != stepWait {
		t.Fatalf("a failed removal does not back off: %+v", c.Status)
	}
	// A renewal asked for keeps the backoff.
	c = failed(func(*store.Certificate) {})
	if takeRequest(c) || nextCertStep(c, now).step != stepWait {
		t.Fatalf("a renewal skipped the backoff: %+v", c.Status)
	}
	// Not while a task is in flight.
	c = failed(func(c *store.Certificate) { c.Revoke, c.Status.TaskID = true, "T" })
	if takeRequest(c) {
		t.Fatal("took a revocation while a task is in flight")
	}
}

// TestCertRecordRevoked: a revocation clears the served chain, so a later
// failed order leaves the certificate FAILED, not ISSUED with the revoked
// chain; a revoke result that arrives after the certificate was asked for
// again does not switch its automatic renewal off.
func TestCertRecordRevoked(t *testing.T) {
	now := time.Now().UTC()
	cc := &certController{s: &Server{}, retryBase: time.Minute, retryMax: time.Hour}
	served := func() *store.Certificate {
		return &store.Certificate{ID: "a.example", Node: "n1", AutoRenew: true, Revoke: true, Generation: 2,
			Status: store.CertStatus{State: store.CertIssued, ChainPEM: "PEM", Serial: "ab", NotBefore: now.Add(-day), NotAfter: now.Add(80 * day),
				IssuedDomains: []string{"a.example"}, TaskID: "R", TaskGeneration: 2}}
	}
	revoked := map[string]*store.Task{"R": {ID: "R", Action: actionRevokeCert, Status: store.TaskSucceeded}}

	c := served()
	cc.record(c, revoked, now)
	st := c.Status
	if st.State != store.CertRevoked || st.ChainPEM != "" || st.Serial != "" || !st.NotAfter.IsZero() || st.IssuedDomains != nil || c.AutoRenew {
		t.Fatalf("revoked: autoRenew %t status %+v", c.AutoRenew, st)
	}
	if !slices.ContainsFunc(st.Events, func(ev store.CertEvent) bool {
		return ev.Kind == "revoked" && ev.Message != "" && ev.Message[:9] == "serial ab"
	}) {
		t.Fatalf("the revoked serial is not in an event: %+v", st.Events)
	}
	// Ordered again, and that order fails.
	c.Revoke, c.AutoRenew = false, true
	c.Generation++
	c.Status.TaskID, c.Status.TaskGeneration = "I", c.Generation
	cc.record(c, map[string]*store.Task{"I": {ID: "I", Action: actionIssueCert, Status: store.TaskFailed, Error: "boom"}}, now)
	if c.Status.State != store.CertFailed {
		t.Fatalf("a failed order after a revocation: %s, want FAILED", c.Status.State)
	}

	// A late revoke result: the certificate was asked for again meanwhile.
	c = served()
	c.Revoke = false
	c.Generation = 3
	cc.record(c, revoked, now)
	if !c.AutoRenew {
		t.Fatal("a late revoke result switched automatic renewal off")
	}
}

// TestCertWaitForAfterFailure: a certificate that waits after a failed
// attempt is not due again before waitRecheck (its passed backoff does
// not make it due on every sweep).
func TestCertWaitForAfterFailure(t *testing.T) {
	now := time.Now().UTC()
	c := &store.Certificate{ID: "a.example", Generation: 2, Status: store.CertStatus{State: store.CertFailed, ObservedGeneration: 1,
		Failures: 2, NextAttempt: now.Add(-time.Hour)}}
	waitFor(c, "a.example: does not resolve", now)
	if c.Status.NextAttempt.Before(now.Add(waitRecheck)) {
		t.Fatalf("NextAttempt %s, want at least %s", c.Status.NextAttempt, now.Add(waitRecheck))
	}
	if at := entryOf(c).dueAt(); at.Before(now.Add(waitRecheck)) {
		t.Fatalf("due at %s while waiting", at)
	}
	// A later backoff is kept.
	c.Status.NextAttempt = now.Add(5 * time.Hour)
	waitFor(c, "a.example: does not resolve", now)
	if !c.Status.NextAttempt.Equal(now.Add(5 * time.Hour)) {
		t.Fatalf("backoff shortened to %s", c.Status.NextAttempt)
	}
}

// TestCertRevokeWithoutACME: with ordering off, a revocation waits with
// its reason in lastError and an event instead of failing the sync.
func TestCertRevokeWithoutACME(t *testing.T) {
	now := time.Now().UTC()
	cc := &certController{s: &Server{}}
	c := &store.Certificate{ID: "a.example", Node: "n1", Revoke: true, Generation: 2,
		Status: store.CertStatus{State: store.CertIssued, ChainPEM: "PEM", Serial: "ab", ObservedGeneration: 2}}
	task, err := cc.step(t.Context(), c, &store.Account{}, certPlan{step: stepRevoke}, now)
	if err != nil || task != nil {
		t.Fatalf("step: task %v err %v", task, err)
	}
	if c.Status.LastError == "" || c.Status.NextAttempt.IsZero() || c.Status.Events[len(c.Status.Events)-1].Kind != "waiting" {
		t.Fatalf("not visible: %+v", c.Status)
	}
}

func TestCertOrderBucket(t *testing.T) {
	now := time.Now()
	var b orderBucket
	for i := range 3 {
		if ok, _ := b.take(now, 3, 30*time.Second); !ok {
			t.Fatalf("order %d of the burst refused", i)
		}
	}
	ok, at := b.take(now, 3, 30*time.Second)
	if ok || !at.Equal(now.Add(30*time.Second)) {
		t.Fatalf("over the burst: ok %t next %s", ok, at.Sub(now))
	}
	if ok, _ := b.take(now.Add(29*time.Second), 3, 30*time.Second); ok {
		t.Fatal("a token before its time")
	}
	if ok, _ := b.take(now.Add(30*time.Second), 3, 30*time.Second); !ok {
		t.Fatal("no token after 30s")
	}
	if ok, _ := b.take(now.Add(31*time.Second), 3, 30*time.Second); ok {
		t.Fatal("two tokens after 30s")
	}
}

// TestCertFailuresStayUnderCALimit drives a certificate whose every order
// fails through the controller's own decisions (record, then nextCertStep
// each minute) for a week at the default timing: no hour ever holds more
// than 5 orders, Let's Encrypt's failed-validation limit per hostname
// (an order validates each name at most once: obtain drops a failing name
// rather than asking again), and orders keep coming, at most a day apart.
func TestCertFailuresStayUnderCALimit(t *testing.T) {
	const caLimit = 5
	cc := &certController{s: &Server{}, retryBase: defaultRetryBase, retryMax: defaultRetryMax}
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := &store.Certificate{ID: "a.example", Domains: []string{"a.example"}, AutoRenew: true, Generation: 1}
	var orders []time.Time
	for now := start; now.Before(start.Add(7 * day)); now = now.Add(time.Minute) {
		if p := nextCertStep(c, now); p.step != stepIssue {
			continue
		}
		orders = append(orders, now)
		id := fmt.Sprintf("T%d", len(orders))
		c.Status.TaskID, c.Status.TaskGeneration = id, c.Generation
		cc.record(c, map[string]*store.Task{id: {ID: id, Action: actionIssueCert, Status: store.TaskFailed,
			Error: "acme: urn:ietf:params:acme:error:unauthorized: invalid response"}}, now)
	}
	if len(orders) < 10 {
		t.Fatalf("%d orders in a week: retries stopped", len(orders))
	}
	for i, at := range orders {
		n := 0
		for _, o := range orders[i:] {
			if o.Sub(at) < time.Hour {
				n++
			}
		}
		if n > caLimit {
			t.Fatalf("%d orders in the hour from %s (limit %d): %v", n, at.Sub(start), caLimit, orders[:i+n])
		}
		if i > 0 && at.Sub(orders[i-1]) > defaultRetryMax+time.Minute {
			t.Fatalf("order %d came %s after the one before", i, at.Sub(orders[i-1]))
		}
	}
	t.Logf("%d failed orders in a week, the first at %v", len(orders), orders[:min(6, len(orders))])
}
