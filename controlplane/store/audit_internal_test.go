package store

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The refusal audit counts a client as every per-client limit does (an
// IPv6 client by its /64), and each action of it separately.
func TestRefusalAuditBuckets(t *testing.T) {
	a := &RefusalAudit{PerSourceBurst: 2, PerSourceEvery: time.Hour, GlobalBurst: 100, GlobalPerSecond: 1,
		per: map[string]*rate.Limiter{}}
	allow := func(action, source string) bool {
		return a.allow(refusalKey(RefusedMutation, AuditEvent{Action: action, Source: source}))
	}
	for i, src := range []string{"2001:db8:1:2::1", "2001:db8:1:2::ffff"} {
		if !allow("suspendAccount", src) {
			t.Fatalf("refusal %d of the burst suppressed", i)
		}
	}
	if allow("suspendAccount", "2001:db8:1:2:abcd::1") {
		t.Fatal("a third address of the /64 got its own bucket")
	}
	if !allow("deleteAccount", "2001:db8:1:2::1") {
		t.Fatal("another action shares the bucket")
	}
	if !allow("suspendAccount", "2001:db8:1:3::1") || !allow("suspendAccount", "192.0.2.1") {
		t.Fatal("another client shares the bucket")
	}
}
