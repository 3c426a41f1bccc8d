package controlplane

import (
	"hash/fnv"
	"slices"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// Renewal scheduling: pure functions of a certificate's record and the
// time, so that they are table-tested and benchmarked without etcd.
//
// A certificate is renewed when a third of its lifetime remains (30 days
// of a 90-day certificate; 2 of a 6-day one), earlier by a jitter that is
// fixed per certificate: a hash of its id picks a point within
// renewJitterFraction of the lifetime. Certificates issued in the same
// minute (a migration, a bulk import) then renew days apart instead of all
// at once, and a certificate renews at the same point of every lifetime,
// so the spread does not decay. An ACME server's renewal information
// (ARI) wins when it names an earlier or later time inside the lifetime.
const (
	renewJitterFraction = 0.10
	// Defaults of ACMEConfig's timing.
	defaultRenewSweep = time.Minute
	defaultRetryBase  = 5 * time.Minute
	defaultRetryMax   = 24 * time.Hour
	defaultOrderBurst = 10
	defaultOrderEvery = 30 * time.Second
	// waitRecheck is how often a certificate whose names do not resolve
	// yet is looked at again without a zone event saying so.
	waitRecheck = 10 * time.Minute
)

// certJitter is id's fixed share of the jitter window of a lifetime.
func certJitter(id string, lifetime time.Duration) time.Duration {
	window := time.Duration(float64(lifetime) * renewJitterFraction)
	if window <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(window))
}

// renewTime is when certificate id, valid from notBefore to notAfter,
// should be renewed; ari is the ACME server's suggestion (zero: none).
func renewTime(id string, notBefore, notAfter, ari time.Time) time.Time {
	if notAfter.IsZero() {
		return time.Time{}
	}
	if !ari.IsZero() && ari.Before(notAfter) && ari.After(notBefore) {
		return ari.UTC()
	}
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return notAfter.UTC()
	}
	return notAfter.Add(-lifetime / 3).Add(-certJitter(id, lifetime)).UTC()
}

// retryDelay is the backoff after the n-th consecutive failure (n ≥ 1):
// base·2^(n-1), at most max. The CA's failed-validation limits are far
// above what this sends (Let's Encrypt: 5 per hour per account and name).
func retryDelay(n int, base, max time.Duration) time.Duration {
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n; i++ {
		d *= 2
		if d >= max || d <= 0 {
			return max
		}
	}
	return min(d, max)
}

// certStep is what a certificate needs next, decided from its record.
type certStep int

const (
	stepNone    certStep = iota // nothing now
	stepWait                    // something is due at certPlan.at
	stepIssue                   // order (or renew) from the ACME server
	stepInstall                 // install the custom certificate
	stepRevoke
	stepRemove // remove it from the node (deletion)
	stepForget // delete the record: nothing left on a node
	// stepTakeover turns an installed certificate that ACME takes over
	// (acmeTakesOver) into the site's automatic one, ordered at once.
	stepTakeover
)

func (s certStep) String() string {
	return [...]string{"none", "wait", "issue", "install", "revoke", "remove", "forget", "takeover"}[s]
}

// certPlan is nextCertStep's answer: the step, and for stepWait (or a
// served certificate waiting for its renewal) when to look again.
type certPlan struct {
	step certStep
	at   time.Time
	// expired: the served certificate's NotAfter passed without a
	// renewal; the record turns EXPIRED.
	expired bool
}

// nextCertStep decides a certificate's next step at now. The caller has
// recorded every finished task first; a certificate with a task in flight
// waits for it. A step is retried only once the backoff of its failures
// (NextAttempt) has passed; a certificate waiting for its names to resolve
// (no failures, NextAttempt set) is looked at whenever asked.
func nextCertStep(c *store.Certificate, now time.Time) certPlan {
	st := &c.Status
	if st.TaskID != "" {
		return certPlan{step: stepNone}
	}
	expired := st.ChainPEM != "" && !st.NotAfter.IsZero() && !now.Before(st.NotAfter) &&
		(st.State == store.CertIssued || st.State == store.CertRenewing)
	backoff := st.Failures > 0 && now.Before(st.NextAttempt)
	wait := func(step certStep) certPlan {
		if backoff {
			return certPlan{step: stepWait, at: st.NextAttempt, expired: expired}
		}
		return certPlan{step: step, expired: expired}
	}
	changed := c.Generation > st.ObservedGeneration
	switch {
	case c.Deleting:
		return wait(stepRemove)
	case c.Revoke:
		if st.State == store.CertRevoked && !changed {
			return certPlan{step: stepNone}
		}
		return wait(stepRevoke)
	case st.State == store.CertRevoked && !changed:
		return certPlan{step: stepNone}
	}
	if changed {
		if c.Custom {
			return wait(stepInstall)
		}
		return wait(stepIssue)
	}
	if missingNames(c) && !expired && (st.RenewAt.IsZero() || now.Before(st.RenewAt)) {
		// Names left out of the served certificate: ordered again once
		// the partial backoff (and any failure's) has passed; issueTask
		// sends nothing unless a missing name can validate now.
		at := st.PartialRetryAt
		if st.Failures > 0 {
			at = maxTime(at, st.NextAttempt)
		}
		if now.Before(at) {
			return certPlan{step: stepWait, at: at}
		}
		return certPlan{step: stepIssue}
	}
	if acmeTakesOver(c) && !st.RenewAt.IsZero() && st.ChainPEM != "" {
		if now.Before(st.RenewAt) {
			return certPlan{step: stepWait, at: st.RenewAt}
		}
		return certPlan{step: stepTakeover, expired: expired}
	}
	if c.Custom || !c.AutoRenew || st.RenewAt.IsZero() || st.ChainPEM == "" {
		if expired {
			return certPlan{step: stepNone, expired: true}
		}
		if st.ChainPEM != "" && !st.NotAfter.IsZero() && now.Before(st.NotAfter) {
			return certPlan{step: stepWait, at: st.NotAfter} // when it expires
		}
		return certPlan{step: stepNone}
	}
	if now.Before(st.RenewAt) {
		return certPlan{step: stepWait, at: st.RenewAt}
	}
	return wait(stepIssue)
}

// acmeTakesOver: c is an installed certificate whose renewal ACME takes
// over. installCertificate installs with AutoRenew off (the user installs
// the successor); a cPanel import installs the archive's certificate with
// it on, so that, rather than expire, it is replaced at its renewal time
// (RenewAt: a third of its lifetime before it expires) by the site's
// automatic certificate, ordered from the ACME server while the imported
// one is still served. setAutoRenew false keeps it until it expires.
func acmeTakesOver(c *store.Certificate) bool {
	return c.Custom && c.AutoRenew && !c.Revoke && !c.Deleting
}

// takeRequest starts a deletion or revocation the API just asked for
// (Generation past ObservedGeneration, no task in flight): the backoff of
// earlier failed orders does not hold it up, as it would a user waiting
// a day for a certificate to go. Failures of the removal or revocation
// itself back off as any. It reports whether c changed.
func takeRequest(c *store.Certificate) bool {
	st := &c.Status
	if !(c.Deleting || c.Revoke) || c.Generation <= st.ObservedGeneration || st.TaskID != "" {
		return false
	}
	st.ObservedGeneration = c.Generation
	st.Failures, st.NextAttempt = 0, time.Time{}
	return true
}

// certDueAt is when a certificate with the index entry e next needs the
// controller without any event (zero: never): the sweep queues those whose
// time has come.
func (e *certEntry) dueAt() time.Time {
	if e.inFlight {
		return time.Time{}
	}
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	switch {
	case e.pending:
		// A generation not yet applied, a deletion or revocation: due
		// at once unless it backs off or waits for its names.
		if e.nextAttempt.IsZero() {
			return time.Unix(0, 0)
		}
		earliest(e.nextAttempt)
		return at
	case e.state == store.CertRevoked:
		return time.Time{}
	}
	if e.autoRenew {
		// An installed certificate renews only when ACME takes it over
		// (acmeTakesOver), at the same time.
		earliest(maxTime(e.renewAt, e.nextAttempt))
	}
	if e.partial {
		earliest(maxTime(e.partialRetryAt, e.nextAttempt))
	}
	if e.state == store.CertIssued || e.state == store.CertRenewing {
		earliest(e.notAfter)
	}
	return at
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// orderBucket paces one node's ACME orders: up to burst at once, then one
// per every.
type orderBucket struct {
	tokens float64
	last   time.Time
}

// take spends a token at now if there is one; otherwise it reports when
// the next one is there.
func (b *orderBucket) take(now time.Time, burst int, every time.Duration) (bool, time.Time) {
	if b.last.IsZero() {
		b.tokens, b.last = float64(burst), now
	}
	if now.After(b.last) {
		b.tokens = min(float64(burst), b.tokens+float64(now.Sub(b.last))/float64(every))
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, time.Time{}
	}
	return false, b.last.Add(time.Duration((1 - b.tokens) * float64(every)))
}

// missingNames reports whether c's served, ordered certificate leaves out
// some of the names wanted.
func missingNames(c *store.Certificate) bool {
	st := &c.Status
	if c.Custom || c.Revoke || c.Deleting || st.ChainPEM == "" || len(st.IssuedDomains) == 0 || (st.State != store.CertIssued && st.State != store.CertRenewing) {
		return false
	}
	for _, d := range c.Domains {
		if !slices.Contains(st.IssuedDomains, d) {
			return true
		}
	}
	return false
}
