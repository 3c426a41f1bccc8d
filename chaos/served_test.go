package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent/platform"
)

// checkDatabasesServed: the database node's MariaDB holds every database
// answered ok, and no test database nobody asked for (a duplicate would
// need a second name, so this is the "at most once" on the node itself).
func (c *cluster) checkDatabasesServed(t *testing.T, l *ledger) {
	t.Helper()
	n := c.nodeByName("node-3")
	prof, err := platform.DetectProfile(n.prefix)
	if err != nil {
		t.Fatal(err)
	}
	db, err := (&mariadb.Server{Socket: prof.DB().MariaDBSocket}).Root()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SHOW DATABASES")
	if err != nil {
		t.Fatalf("databases on %s: %v", n.name, err)
	}
	defer rows.Close()
	onNode := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		onNode[name] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	asked := map[string]bool{}
	for _, d := range l.dbs {
		asked[d.name] = d.out != refused
		if d.out == ok && !onNode[d.name] {
			t.Errorf("database %s answered ok, missing from %s's MariaDB", d.name, n.name)
		}
	}
	for name := range onNode {
		if strings.HasPrefix(name, "npt") && !asked[name] {
			t.Errorf("%s's MariaDB has %s, which no request asked for", n.name, name)
		}
	}
}

// checkRecordsServed: both DNS nodes' PowerDNS (each zone's primary and
// its secondary) answer every record answered ok, once.
func (c *cluster) checkRecordsServed(t *testing.T, l *ledger) {
	t.Helper()
	l.mu.Lock()
	var recs []*recordReq
	for _, r := range l.records {
		if r.out == ok {
			recs = append(recs, r)
		}
	}
	l.mu.Unlock()
	for _, name := range []string{"node-1", "node-2"} {
		n := c.nodeByName(name)
		// Secondaries follow NOTIFYs: give them time to.
		waitUntil(t, time.Minute, name+" serving every record", func() (bool, string) {
			for _, r := range recs {
				got := txt(n.dnsAddr, r.name)
				k := 0
				for _, g := range got {
					if g == r.content {
						k++
					}
				}
				if k != 1 {
					return false, fmt.Sprintf("%s TXT %s: %v", name, r.name, got)
				}
			}
			return true, ""
		})
	}
}

func txt(addr, name string) []string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	cl := &dns.Client{Timeout: 2 * time.Second}
	in, _, err := cl.Exchange(m, addr)
	if err != nil || in.Rcode != dns.RcodeSuccess {
		return nil
	}
	var out []string
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, `"`+strings.Join(t.Txt, "")+`"`)
		}
	}
	return out
}
