package dns

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
)

// TestFlushCache changes a record behind PowerDNS's back (in its
// database, so that nothing purges its cache) and checks that the stale
// answer stays until flushCache drops it.
func TestFlushCache(t *testing.T) {
	srv := pdns.Start(t, pdns.Options{})
	env := envFor(t, srv)
	const zone = "flush.npanel-test.com"
	apply(t, env, testModule.NewEnsureZone(primarySpec(zone)))
	name := "late." + zone
	if m := query(t, srv.DNSAddr, name, mdns.TypeA, false); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("%s before insert: rcode %s", name, mdns.RcodeToString[m.Rcode])
	}
	sql := "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) " +
		"SELECT id, '" + name + "', 'A', '192.0.2.77', 300, 0, 0, 1 FROM domains WHERE name = '" + zone + "';"
	if out, err := exec.Command(pdns.Sqlite3, filepath.Join(srv.Dir, "pdns.sqlite3"), sql).CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}
	if m := query(t, srv.DNSAddr, name, mdns.TypeA, false); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("%s: the cached NXDOMAIN is gone before the flush (rcode %s): the test proves nothing", name, mdns.RcodeToString[m.Rcode])
	}
	if err := testModule.client(srv.APIAddr, srv.APIKey).flushCache(context.Background(), zone+"."); err != nil {
		t.Fatal(err)
	}
	if got := answers(query(t, srv.DNSAddr, name, mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.77" {
		t.Errorf("%s after flush = %q", name, got)
	}
}
