package dns

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// envFor is an agent env whose DNS module talks to srv.
func envFor(t testing.TB, srv *pdns.Server) *actions.Env {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte(srv.APIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := platform.Debian12(t.TempDir())
	p.DNSListen, p.DNSAPIListen = srv.DNSAddr, srv.APIAddr
	return &actions.Env{Node: "test", Logger: slog.New(slog.DiscardHandler), Profile: p, DataDir: dir}
}

func apply(t testing.TB, env *actions.Env, a actions.Action) *agentpb.ZoneResult {
	t.Helper()
	if err := a.Validate(); err != nil {
		t.Fatalf("%s: Validate: %v", a.Name(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := a.Apply(ctx, env)
	if err != nil {
		t.Fatalf("%s: Apply: %v", a.Name(), err)
	}
	r, _ := out.(*agentpb.ZoneResult)
	return r
}

func rec(name, typ, content string, ttl, prio uint32) *agentpb.Record {
	return &agentpb.Record{Name: name, Type: typ, Content: content, Ttl: ttl, Priority: prio}
}

// primarySpec is a typical account zone. Its nameservers have glue inside
// the zone on loopback: PowerDNS resolves NS names to send NOTIFY, and
// names it cannot find in its own data it asks the system resolver, which
// tests must not depend on (and which stalls NOTIFY for seconds here).
func primarySpec(zone string) *agentpb.EnsureZoneAction {
	return &agentpb.EnsureZoneAction{
		Zone:        zone,
		Kind:        agentpb.ZoneKind_ZONE_KIND_PRIMARY,
		Nameservers: []string{"ns1." + zone, "ns2." + zone},
		Soa:         &agentpb.SOA{Ttl: 300, Minimum: 60},
		Records: []*agentpb.Record{
			rec(zone, "A", "192.0.2.10", 300, 0),
			rec("ns1."+zone, "A", "127.0.0.1", 300, 0),
			rec("ns2."+zone, "A", "127.0.0.2", 300, 0),
			rec(zone, "AAAA", "2001:db8::10", 300, 0),
			rec("www."+zone, "CNAME", zone, 300, 0),
			rec(zone, "MX", "mail."+zone, 300, 10),
			rec("mail."+zone, "A", "192.0.2.20", 300, 0),
			rec(zone, "TXT", "v=spf1 mx -all", 300, 0),
			rec("_sip._tcp."+zone, "SRV", "5 5060 sip."+zone, 300, 10),
			rec(zone, "CAA", `0 issue "letsencrypt.org"`, 300, 0),
		},
	}
}

// query asks server addr for name/type over UDP.
func query(t testing.TB, addr, name string, qtype uint16, do bool) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	if do {
		m.SetEdns0(4096, true)
	}
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second, UDPSize: 4096}
	var r *mdns.Msg
	var err error
	for i := 0; i < 3; i++ {
		if r, _, err = c.Exchange(m, addr); err == nil {
			if r.Truncated {
				c.Net = "tcp"
				continue
			}
			return r
		}
	}
	t.Fatalf("query %s %s at %s: %v", name, mdns.TypeToString[qtype], addr, err)
	return nil
}

// serialAt returns the SOA serial addr serves for zone, 0 if none.
func serialAt(t testing.TB, addr, zone string) uint32 {
	r := query(t, addr, zone, mdns.TypeSOA, false)
	for _, rr := range r.Answer {
		if s, ok := rr.(*mdns.SOA); ok {
			return s.Serial
		}
	}
	return 0
}

func answers(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	return out
}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
