package security

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// b1Record is a record of b1's zone that a1 must not be able to touch.
const b1RecordContent = "b1-record-content"

// setupDNS gives b1's zone a record of its own and waits until node-a's
// PowerDNS serves it.
func (c *cluster) setupDNS(t *testing.T) {
	t.Helper()
	// Records added before the zone controller has filled in a new zone's
	// default records are lost (see dnsFindings): wait for the defaults.
	c.waitZoneApplied(t, c.b1.Domain, true)
	rec, err := c.b1.owner.AddRecord(context.Background(), c.b1.Domain, client.RecordInput{Name: "secret", Type: "TXT", Content: b1RecordContent})
	if err != nil {
		t.Fatal(err)
	}
	c.b1RecordID = rec.ID
	c.waitZoneApplied(t, c.b1.Domain, false)
	testenv.WaitFor(t, 30*time.Second, "b1's record served", func() bool {
		return slices.ContainsFunc(c.lookup("secret."+c.b1.Domain, dns.TypeTXT), func(s string) bool { return strings.Contains(s, b1RecordContent) })
	})
}

// waitZoneApplied waits until the node has applied the zone's latest
// generation (and, with defaults, the controller has filled in its default
// records).
func (c *cluster) waitZoneApplied(t *testing.T, zone string, defaults bool) {
	t.Helper()
	testenv.WaitFor(t, 90*time.Second, "zone "+zone+" applied", func() bool {
		z, _, err := c.s.Store().GetZone(context.Background(), zone)
		if err != nil {
			return false
		}
		if z.Status == store.ZoneFailed {
			t.Fatalf("zone %s FAILED: %s", zone, z.Reason)
		}
		return (!defaults || !z.Defaults) && z.AppliedGeneration == z.Generation && z.TaskID == ""
	})
}

// lookup asks node-a's PowerDNS for name/type and returns the answers'
// data (nil when it does not answer authoritatively).
func (c *cluster) lookup(name string, qtype uint16) []string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	in, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, c.dns)
	if err != nil || in.Rcode != dns.RcodeSuccess || !in.Authoritative {
		return nil
	}
	var out []string
	for _, rr := range in.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	return out
}

// zoneRecords is a zone's records as the admin sees them.
func (c *cluster) zoneRecords(t *testing.T, zone string) []client.DNSRecord {
	t.Helper()
	z, err := c.admin.Zone(context.Background(), zone)
	if err != nil || z == nil {
		t.Fatalf("zone %s: %+v %v", zone, z, err)
	}
	return z.Records
}

// dnsRefused is a vector whose call must fail with one of codes and leave
// a1's and b1's zones as they were.
func dnsRefused(name, attempt string, codes []string, call func(c *cluster) error) vector {
	return vector{name: name, attempt: attempt, refusal: strings.Join(codes, " or ") + "; a1's and b1's records are unchanged",
		run: func(t *testing.T, c *cluster) {
			unchanged(t, "a1's and b1's zones", func() [][]client.DNSRecord {
				return [][]client.DNSRecord{c.zoneRecords(t, c.a1.Domain), c.zoneRecords(t, c.b1.Domain)}
			}, func() { wantCode(t, name, call(c), codes...) })
		}}
}

func addA1(c *cluster, r client.RecordInput) error {
	_, err := c.a1.owner.AddRecord(context.Background(), c.a1.Domain, r)
	return err
}

func ptr(i int) *int { return &i }

// importRefused is a vector importing a zone file into a1's zone: every
// line must be refused (nothing imported), and nothing of text may appear
// in the zone.
func importRefused(name, attempt string, text func(c *cluster) string) vector {
	return vector{name: "import " + name, attempt: attempt, refusal: "each line refused with a reason; a1's and b1's records unchanged",
		run: func(t *testing.T, c *cluster) {
			unchanged(t, "a1's and b1's zones", func() [][]client.DNSRecord {
				return [][]client.DNSRecord{c.zoneRecords(t, c.a1.Domain), c.zoneRecords(t, c.b1.Domain)}
			}, func() {
				imp, err := c.a1.owner.ImportZone(context.Background(), c.a1.Domain, text(c))
				if err != nil {
					wantCode(t, "importZone", err, "INVALID_INPUT")
					return
				}
				if len(imp.Imported) > 0 {
					t.Fatalf("imported %+v", imp.Imported)
				}
			})
		}}
}

func dnsVectors() []vector {
	ctx := context.Background()
	inv := []string{"INVALID_INPUT"}
	var vs []vector

	// --- record content, per type ---------------------------------------------
	contents := []struct{ typ, name, content string }{
		{"A", "newline injecting an NS", "192.0.2.1\n@ IN NS ns.evil.example."},
		{"A", "two addresses", "192.0.2.1 192.0.2.2"},
		{"A", "IPv6 in A", "2001:db8::1"},
		{"A", "octet overflow", "192.0.2.256"},
		{"A", "hostname", "evil.example."},
		{"A", "shell", "$(id)"},
		{"AAAA", "IPv4 in AAAA", "192.0.2.1"},
		{"AAAA", "zone id", "fe80::1%eth0"},
		{"TXT", "newline injecting a record", "ok\nevil 3600 IN A 192.0.2.66"},
		{"TXT", "quoted string then a second line", "\"ok\"\nevil 3600 IN A 192.0.2.66"},
		{"CAA", "a second line", "0 issue \"ca.example.com\"\nx A 192.0.2.66"},
		{"TXT", "CRLF", "ok\r\nevil"},
		{"TXT", "NUL", "ok\x00evil"},
		{"TXT", "unbalanced quote", `"abc`},
		{"TXT", "overlong", strings.Repeat("x", 70000)},
		{"CNAME", "semicolon", "evil;.example."},
		{"CNAME", "space", "a b.example."},
		{"CNAME", "IP address", "192.0.2.1"},
		{"CNAME", "empty label", "a..example."},
		{"CNAME", "overlong", strings.Repeat("a", 300) + ".example."},
		{"MX", "IP address", "192.0.2.1"},
		{"MX", "newline", "mail.example.\n@ NS evil."},
		{"MX", "space", "mail example."},
		{"NS", "IP address", "192.0.2.1"},
		{"NS", "newline", "ns.example.\nx A 1.2.3.4"},
		{"SRV", "missing fields", "5060"},
		{"SRV", "port overflow", "5 99999 sip.example."},
		{"SRV", "newline", "5 5060 sip.example.\nx A 1.2.3.4"},
		{"CAA", "unknown tag", `0 evil "x"`},
		{"CAA", "flag overflow", `256 issue "ca.example"`},
		{"PTR", "IP address", "192.0.2.1"},
	}
	for _, k := range contents {
		vs = append(vs, dnsRefused(k.typ+" content "+k.name, "addRecord "+k.typ+" with content "+truncate(k.content), inv, func(c *cluster) error {
			r := client.RecordInput{Name: "inj", Type: k.typ, Content: k.content}
			if k.typ == "MX" || k.typ == "SRV" {
				r.Priority = ptr(10)
			}
			if k.typ == "SRV" {
				r.Name = "_sip._tcp"
			}
			return addA1(c, r)
		}))
	}

	// --- owner names ---------------------------------------------------------------
	names := []struct{ name, owner string }{
		{"other tenant's apex", "B."},
		{"other tenant's subdomain", "www.B."},
		{"other tenant's record name", "secret.B."},
		{"out of zone", "www.example.org."},
		{"the root", "."},
		{"the TLD", "com."},
		{"own name under another zone", "A.evil.example."},
		{"semicolon", "a;b"},
		{"newline", "a\nb"},
		{"space", "a b"},
		{"dollar directive", "$INCLUDE"},
		{"parent label", ".."},
		{"empty label", "a..b"},
		{"wildcard not leftmost", "a.*"},
		{"double wildcard", "*.*"},
		{"wildcard inside a label", "a*"},
		{"NUL", "a\x00b"},
		{"overlong label", strings.Repeat("a", 64)},
		{"overlong name", strings.Repeat("abcdefgh.", 30)},
		{"homoglyph", "www\u0430"},
	}
	for _, n := range names {
		vs = append(vs, dnsRefused("owner "+n.name, "addRecord A named "+truncate(n.owner)+" in a1's zone", inv, func(c *cluster) error {
			owner := strings.ReplaceAll(strings.ReplaceAll(n.owner, "B.", c.b1.Domain+"."), "A.", c.a1.Domain+".")
			return addA1(c, client.RecordInput{Name: owner, Type: "A", Content: "192.0.2.66"})
		}))
	}

	// --- zone rules, TTLs and priorities --------------------------------------
	vs = append(vs,
		dnsRefused("CNAME at the apex", "CNAME at @ (would hide SOA and NS)", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "@", Type: "CNAME", Content: "evil.example."})
		}),
		dnsRefused("NS at the apex", "an NS at @ pointing the zone elsewhere", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "@", Type: "NS", Content: "ns.evil.example."})
		}),
		dnsRefused("TTL above the maximum", "TTL 2^31-1", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "ttl", Type: "A", Content: "192.0.2.1", TTL: ptr(2147483647)})
		}),
		dnsRefused("TTL just above a week", "TTL 604801", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "ttl", Type: "A", Content: "192.0.2.1", TTL: ptr(604801)})
		}),
		dnsRefused("negative TTL", "TTL -1", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "ttl", Type: "A", Content: "192.0.2.1", TTL: ptr(-1)})
		}),
		dnsRefused("negative MX priority", "MX priority -1", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "@", Type: "MX", Content: "mail.example.", Priority: ptr(-1)})
		}),
		dnsRefused("MX priority overflow", "MX priority 65536", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "@", Type: "MX", Content: "mail.example.", Priority: ptr(65536)})
		}),
		dnsRefused("priority on an A record", "an A record with a priority", inv, func(c *cluster) error {
			return addA1(c, client.RecordInput{Name: "prio", Type: "A", Content: "192.0.2.1", Priority: ptr(5)})
		}),
		dnsRefused("SOA type", "a record of type SOA", []string{"INVALID_INPUT", "GRAPHQL_VALIDATION_FAILED"}, func(c *cluster) error {
			return c.a1.owner.Do(ctx, `mutation($z:String!){addRecord(zone:$z,record:{name:"@",type:SOA,content:"x"}){id}}`, map[string]any{"z": c.a1.Domain}, nil)
		}),
		dnsRefused("DNSKEY type", "a record of type DNSKEY (unknown to the API)", []string{"GRAPHQL_VALIDATION_FAILED"}, func(c *cluster) error {
			return c.a1.owner.Do(ctx, `mutation($z:String!){addRecord(zone:$z,record:{name:"@",type:DNSKEY,content:"x"}){id}}`, map[string]any{"z": c.a1.Domain}, nil)
		}),
	)

	// --- other tenants' zones and records -------------------------------------
	vs = append(vs,
		dnsRefused("add record to other tenant's zone", "a1's owner adds an A record to b1's zone", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, err := c.a1.owner.AddRecord(ctx, c.b1.Domain, client.RecordInput{Name: "evil", Type: "A", Content: "192.0.2.66"})
			return err
		}),
		dnsRefused("update other zone's record directly", "updateRecord(zone: b1's zone, id: b1's record id) by a1's owner", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, err := c.a1.owner.UpdateRecord(ctx, c.b1.Domain, c.b1RecordID, client.RecordInput{Name: "secret", Type: "TXT", Content: "owned"})
			return err
		}),
		dnsRefused("delete other zone's record directly", "deleteRecord(zone: b1's zone, id: b1's record id) by a1's owner", []string{"NOT_FOUND"}, func(c *cluster) error {
			return c.a1.owner.DeleteRecord(ctx, c.b1.Domain, c.b1RecordID)
		}),
		dnsRefused("reseller deletes other reseller's record", "reseller A deletes b1's record", []string{"NOT_FOUND"}, func(c *cluster) error {
			return c.resA.DeleteRecord(ctx, c.b1.Domain, c.b1RecordID)
		}),
		dnsRefused("import into other tenant's zone", "a1's owner imports a zone file into b1's zone", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, err := c.a1.owner.ImportZone(ctx, c.b1.Domain, "evil 3600 IN A 192.0.2.66\n")
			return err
		}),
		dnsRefused("enable DNSSEC on other tenant's zone", "a1's owner calls enableDNSSEC on b1's zone", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, _, err := c.a1.owner.EnableDNSSEC(ctx, c.b1.Domain, 1)
			return err
		}),
		dnsRefused("disable DNSSEC on other tenant's zone", "a1's owner calls disableDNSSEC on b1's zone", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, err := c.a1.owner.ZoneMutation(ctx, "disableDNSSEC", c.b1.Domain)
			return err
		}),
		dnsRefused("rotate keys of other tenant's zone", "a1's owner calls rotateDNSSECKeys on b1's zone", []string{"NOT_FOUND"}, func(c *cluster) error {
			_, err := c.a1.owner.ZoneMutation(ctx, "rotateDNSSECKeys", c.b1.Domain)
			return err
		}),
		dnsRefused("record in a reverse zone", "a1's owner adds a PTR to an admin's reverse zone", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			if _, err := c.admin.AddReverseZone(ctx, "198.51.100.0/24"); err != nil && client.CodeOf(err) != "CONFLICT" {
				return fmt.Errorf("setup: %w", err)
			}
			_, err := c.a1.owner.AddRecord(ctx, "100.51.198.in-addr.arpa", client.RecordInput{Name: "7", Type: "PTR", Content: "evil.example."})
			return err
		}),
		dnsRefused("record id of garbage", "updateRecord with an id holding path characters", []string{"NOT_FOUND", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.UpdateRecord(ctx, c.a1.Domain, "../../"+c.b1.Domain+"/"+c.b1RecordID, client.RecordInput{Name: "x", Type: "A", Content: "192.0.2.1"})
			return err
		}),
		dnsRefused("zone name with traversal", "addRecord on zone \"a1/../b1\"", []string{"NOT_FOUND", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddRecord(ctx, c.a1.Domain+"/../"+c.b1.Domain, client.RecordInput{Name: "x", Type: "A", Content: "192.0.2.1"})
			return err
		}),
		dnsRefused("zone name with a trailing dot", "addRecord on b1's zone written with a trailing dot", []string{"NOT_FOUND", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddRecord(ctx, c.b1.Domain+".", client.RecordInput{Name: "x", Type: "A", Content: "192.0.2.1"})
			return err
		}),
		dnsRefused("zone name in capitals", "addRecord on b1's zone written in capitals", []string{"NOT_FOUND", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddRecord(ctx, strings.ToUpper(c.b1.Domain), client.RecordInput{Name: "x", Type: "A", Content: "192.0.2.1"})
			return err
		}),
	)

	// Record ids count per zone ("r1", "r2", ...), so b1's record id names
	// some record of a1's zone too: updating it through a1's zone may
	// succeed, but must change a1's own record, never b1's.
	vs = append(vs,
		vector{name: "update other zone's record id through own zone", attempt: "updateRecord(zone: a1's zone, id: b1's record's id)",
			refusal: "NOT_FOUND, or a1's own record of that id changes; b1's records unchanged", run: func(t *testing.T, c *cluster) {
				own := slices.ContainsFunc(c.zoneRecords(t, c.a1.Domain), func(r client.DNSRecord) bool { return r.ID == c.b1RecordID })
				unchanged(t, "b1's zone", func() []client.DNSRecord { return c.zoneRecords(t, c.b1.Domain) }, func() {
					_, err := c.a1.owner.UpdateRecord(ctx, c.a1.Domain, c.b1RecordID, client.RecordInput{Name: "idclash", Type: "TXT", Content: "owned"})
					if err != nil || !own {
						wantCode(t, "updateRecord", err, "NOT_FOUND", "INVALID_INPUT")
					}
				})
			}},
		vector{name: "delete other zone's record id through own zone", attempt: "deleteRecord(zone: a1's zone, id: b1's record's id)",
			refusal: "NOT_FOUND, or a1's own record of that id goes; b1's records unchanged", run: func(t *testing.T, c *cluster) {
				own := slices.ContainsFunc(c.zoneRecords(t, c.a1.Domain), func(r client.DNSRecord) bool { return r.ID == c.b1RecordID })
				unchanged(t, "b1's zone", func() []client.DNSRecord { return c.zoneRecords(t, c.b1.Domain) }, func() {
					err := c.a1.owner.DeleteRecord(ctx, c.a1.Domain, c.b1RecordID)
					if err != nil || !own {
						wantCode(t, "deleteRecord", err, "NOT_FOUND")
					}
				})
			}},
		vector{name: "zero TTL", attempt: "a record with TTL 0 (would defeat caching and amplify load)",
			refusal: "INVALID_INPUT, or stored and served with the zone's default TTL, never 0", run: func(t *testing.T, c *cluster) {
				rec, err := c.a1.owner.AddRecord(ctx, c.a1.Domain, client.RecordInput{Name: "ttlzero", Type: "A", Content: "192.0.2.9", TTL: ptr(0)})
				if err != nil {
					wantCode(t, "addRecord", err, "INVALID_INPUT")
					return
				}
				defer func() {
					if err := c.a1.owner.DeleteRecord(ctx, c.a1.Domain, rec.ID); err != nil {
						t.Error(err)
					}
				}()
				if rec.TTL < 30 {
					t.Fatalf("stored TTL %d", rec.TTL)
				}
			}},
		vector{name: "TXT quotes stay inside one string", attempt: `TXT content abc" "def" ; comment, to split the record or end it early`,
			refusal: "stored as one escaped character-string and served literally", run: func(t *testing.T, c *cluster) {
				const content = `abc" "def" ; comment`
				rec, err := c.a1.owner.AddRecord(ctx, c.a1.Domain, client.RecordInput{Name: "quotes", Type: "TXT", Content: content})
				if err != nil {
					wantCode(t, "addRecord", err, "INVALID_INPUT")
					return
				}
				defer func() {
					if err := c.a1.owner.DeleteRecord(ctx, c.a1.Domain, rec.ID); err != nil {
						t.Error(err)
					}
				}()
				if want := `"abc\" \"def\" ; comment"`; rec.Content != want {
					t.Fatalf("stored %s, want %s", rec.Content, want)
				}
				testenv.WaitFor(t, 30*time.Second, "TXT served", func() bool {
					got := c.lookup("quotes."+c.a1.Domain, dns.TypeTXT)
					if len(got) > 1 || len(got) == 1 && got[0] != `"abc\" \"def\" ; comment"` {
						t.Fatalf("served %q", got)
					}
					return len(got) == 1
				})
			}},
	)

	// --- zone file import ------------------------------------------------------------
	vs = append(vs,
		importRefused("$INCLUDE", "a zone file with $INCLUDE /etc/passwd", func(c *cluster) string { return "$INCLUDE /etc/passwd\n" }),
		importRefused("$INCLUDE of other home", "$INCLUDE of a file in b1's home", func(c *cluster) string {
			return "$INCLUDE " + filepath.Join(c.b1.home, "private.txt") + "\n"
		}),
		importRefused("$GENERATE bomb", "$GENERATE 1-1000000 making a million records", func(c *cluster) string {
			return "$GENERATE 1-1000000 host$ A 192.0.2.1\n"
		}),
		importRefused("$ORIGIN of other tenant", "$ORIGIN b1's domain, then records", func(c *cluster) string {
			return "$ORIGIN " + c.b1.Domain + ".\nevil 3600 IN A 192.0.2.66\n"
		}),
		importRefused("absolute name of other tenant", "a record for www.<b1's domain>. in a1's import", func(c *cluster) string {
			return "www." + c.b1.Domain + ". 3600 IN A 192.0.2.66\n"
		}),
		importRefused("other tenant's apex", "records at b1's apex in a1's import", func(c *cluster) string {
			return c.b1.Domain + ". 3600 IN MX 10 mail.evil.example.\n"
		}),
		importRefused("out-of-zone name", "a record for www.example.org.", func(*cluster) string { return "www.example.org. 3600 IN A 192.0.2.66\n" }),
		importRefused("NS at the apex", "an apex NS pointing elsewhere", func(*cluster) string { return "@ 3600 IN NS ns.evil.example.\n" }),
		importRefused("CNAME at the apex", "an apex CNAME", func(*cluster) string { return "@ 3600 IN CNAME evil.example.\n" }),
		importRefused("huge TTL", "a record with TTL 2147483647", func(*cluster) string { return "ttl 2147483647 IN A 192.0.2.1\n" }),
		importRefused("unknown type", "a DNSKEY record", func(*cluster) string { return "@ 3600 IN DNSKEY 257 3 13 AAAA\n" }),
		importRefused("CH class", "a record of class CH", func(*cluster) string { return "ch 3600 CH A 192.0.2.1\n" }),
		importRefused("NUL in a line", "a line with a NUL byte", func(*cluster) string { return "nul 3600 IN TXT \"a\x00b\"\n" }),
		importRefused("unterminated quote", "a TXT whose quote never closes", func(*cluster) string { return "q 3600 IN TXT \"abc\n" }),
		importRefused("unbalanced parenthesis", "an A record opening a parenthesis that never closes", func(*cluster) string { return "p 3600 IN A ( 192.0.2.1\n" }),
	)

	// --- the DNS servers themselves ---------------------------------------------------
	vs = append(vs,
		vector{name: "AXFR from an unlisted address", attempt: "a zone transfer of a1's zone asked from 127.0.0.2 (not in allow-axfr-ips)",
			refusal: "REFUSED or no records", run: func(t *testing.T, c *cluster) {
				if recs := axfr(t, c.dns, c.a1.Domain, "127.0.0.2"); len(recs) > 0 {
					t.Fatalf("transferred %d records", len(recs))
				}
			}},
		vector{name: "AXFR of other tenant's zone from an unlisted address", attempt: "a zone transfer of b1's zone from 127.0.0.3",
			refusal: "REFUSED or no records", run: func(t *testing.T, c *cluster) {
				if recs := axfr(t, c.dns, c.b1.Domain, "127.0.0.3"); len(recs) > 0 {
					t.Fatalf("transferred %d records", len(recs))
				}
			}},
		vector{name: "dynamic update", attempt: "an RFC 2136 UPDATE adding an A record to a1's zone",
			refusal: "the server refuses the update; the name does not resolve", run: func(t *testing.T, c *cluster) {
				m := new(dns.Msg)
				m.SetUpdate(dns.Fqdn(c.a1.Domain))
				rr, _ := dns.NewRR("dynupd." + c.a1.Domain + ". 60 IN A 192.0.2.66")
				m.Insert([]dns.RR{rr})
				in, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, c.dns)
				if err == nil && in.Rcode == dns.RcodeSuccess {
					t.Fatal("update accepted")
				}
				if got := c.lookup("dynupd."+c.a1.Domain, dns.TypeA); len(got) > 0 {
					t.Fatalf("updated name resolves: %v", got)
				}
			}},
		vector{name: "NOTIFY from an unlisted address", attempt: "a NOTIFY for b1's zone from 127.0.0.2",
			refusal: "REFUSED or NOTAUTH; the zone keeps its records", run: func(t *testing.T, c *cluster) {
				m := new(dns.Msg)
				m.SetNotify(dns.Fqdn(c.b1.Domain))
				in, _, err := exchangeFrom(c.dns, m, "127.0.0.2")
				if err == nil && in.Rcode == dns.RcodeSuccess {
					t.Fatal("NOTIFY accepted")
				}
			}},
		vector{name: "PowerDNS API without key", attempt: "GET the PowerDNS HTTP API's zone list without X-API-Key",
			refusal: "HTTP 401", run: func(t *testing.T, c *cluster) {
				if code := pdnsAPI(t, c.node.Config.DNSAPIListen, ""); code != http.StatusUnauthorized {
					t.Fatalf("HTTP %d", code)
				}
			}},
		vector{name: "PowerDNS API with a guessed key", attempt: "the PowerDNS HTTP API with X-API-Key: changeme",
			refusal: "HTTP 401", run: func(t *testing.T, c *cluster) {
				if code := pdnsAPI(t, c.node.Config.DNSAPIListen, "changeme"); code != http.StatusUnauthorized {
					t.Fatalf("HTTP %d", code)
				}
			}},
		phpDenied("reads the PowerDNS API key", "read", func(c *cluster) string { return filepath.Join(c.node.Config.DataDir, "pdns-api-key") }),
		vector{name: "refused record never served", attempt: "after every refused injection above, ask PowerDNS for the names they tried to create",
			refusal: "no answer for inj, evil, or ns.evil.example delegation", run: func(t *testing.T, c *cluster) {
				for _, q := range []struct {
					name string
					t    uint16
				}{{"inj." + c.a1.Domain, dns.TypeA}, {"inj." + c.a1.Domain, dns.TypeTXT}, {"evil." + c.a1.Domain, dns.TypeA},
					{"evil." + c.b1.Domain, dns.TypeA}, {c.a1.Domain, dns.TypeNS}, {"www." + c.b1.Domain, dns.TypeA}} {
					for _, got := range c.lookup(q.name, q.t) {
						if strings.Contains(got, "evil") || strings.Contains(got, "192.0.2.66") {
							t.Fatalf("%s: %v", q.name, got)
						}
					}
				}
			}},
	)

	// Regression vectors of issue 23's findings are added here after their
	// fixes merge (they fail on the code this suite was written against):
	//   1  an account, add-on domain, import or reverse zone inside or above
	//      another owner's zone (cross-tenant takeover)
	//   6  PowerDNS's database (DNSSEC private keys) readable by tenants
	//   7  more records in one zone than the node accepts
	vs = append(vs, earlyRecordVector())
	return vs
}

// axfr asks for a zone transfer from the local address src and returns the
// records received.
func axfr(t *testing.T, server, zone, src string) []dns.RR {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(dns.Fqdn(zone))
	d := &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", server)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	tr := &dns.Transfer{Conn: &dns.Conn{Conn: conn}}
	ch, err := tr.In(m, server)
	if err != nil {
		return nil
	}
	var out []dns.RR
	for env := range ch {
		if env.Error != nil {
			break
		}
		out = append(out, env.RR...)
	}
	return out
}

// exchangeFrom sends m over UDP from the local address src.
func exchangeFrom(server string, m *dns.Msg, src string) (*dns.Msg, time.Duration, error) {
	c := &dns.Client{Timeout: 3 * time.Second, Dialer: &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
	return c.Exchange(m, server)
}

func pdnsAPI(t *testing.T, addr, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/servers/localhost/zones", nil)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// dnsFindings fail on the code as it is; none are open.
func dnsFindings() []vector { return nil }

// earlyRecordVector: a record added before the zone controller filled in a
// new zone's default records was replaced by them (a finding of this suite).
// It skips when the controller wins the race.
func earlyRecordVector() vector {
	ctx := context.Background()
	return vector{name: "record added right after the account is kept", attempt: "a new account's owner adds a record at once, before the zone controller fills in the zone's default records",
		refusal: "the record is kept (today: when the add lands before the zone controller fills in the defaults, plan() replaces the zone's records with them and the record, accepted with an id, is silently lost; seen in 3 of 8 fixture runs)",
		run: func(t *testing.T, c *cluster) {
			u := testenv.TestUsername()
			a, err := c.resB.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: planName})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if _, err := c.admin.AccountAction(ctx, "deleteAccount", a.ID); err != nil {
					t.Error(err)
				}
			}()
			// The zone exists once the account is placed; add at once.
			var z *store.Zone
			testenv.WaitFor(t, 60*time.Second, "zone "+a.Domain+" created", func() bool {
				z, _, err = c.s.Store().GetZone(ctx, a.Domain)
				return err == nil
			})
			if !z.Defaults {
				t.Skip("the controller filled in the default records before the add: the race was not hit this time")
			}
			if _, err := c.resB.AddRecord(ctx, a.Domain, client.RecordInput{Name: "early", Type: "TXT", Content: "early-record"}); err != nil {
				t.Fatal(err)
			}
			c.waitActive(t, a.ID)
			c.waitZoneApplied(t, a.Domain, true)
			if !slices.ContainsFunc(c.zoneRecords(t, a.Domain), func(r client.DNSRecord) bool { return strings.Contains(r.Content, "early-record") }) {
				t.Fatalf("the record added at once is gone: %+v", c.zoneRecords(t, a.Domain))
			}
		}}
}
