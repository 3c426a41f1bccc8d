package dns

import (
	"context"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
)

// TestStats reads a real PowerDNS's counters and zone count.
func TestStats(t *testing.T) {
	srv := pdns.Start(t, pdns.Options{})
	env := envFor(t, srv)
	apply(t, env, testModule.NewEnsureZone(primarySpec("stats.test")))
	query(t, srv.DNSAddr, "stats.test.", mdns.TypeSOA, false)
	st, err := testModule.Stats(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if st.Zones != 1 || st.UDPQueries < 1 {
		t.Fatalf("stats = %+v, want 1 zone and at least 1 UDP query", st)
	}
}
