package tls

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/protos/agentpb"
)

// The DNS-01 pre-check asks every nameserver directly: a value served by
// the primary but not yet by a secondary is not ready.
func TestDNSPreCheckEveryNameserver(t *testing.T) {
	requireRoot(t)
	a := &acmeEnv{zone: testZone, published: map[string][]string{}}
	a.dns = pdns.Start(t, pdns.Options{})
	a.createZone(t, nil)
	b := &acmeEnv{zone: testZone, published: map[string][]string{}}
	b.dns = pdns.Start(t, pdns.Options{IP: "127.0.0.2"})
	b.createZone(t, nil)

	p := &dnsProvider{nameservers: []string{a.dns.DNSAddr, b.dns.DNSAddr}, timeout: 2 * time.Second, interval: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const keyAuth = "token.thumbprint"
	req := &agentpb.PublishChallengeRequest{Fqdn: "_acme-challenge.example.com", Value: txtValue(keyAuth)}
	if err := a.publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := a.publish(ctx, &agentpb.PublishChallengeRequest{Fqdn: "_acme-challenge.example.com", Value: "other"}); err != nil {
		t.Fatal(err)
	}
	if err := p.waitServed(ctx, "*.example.com", keyAuth); err == nil || !strings.Contains(err.Error(), b.dns.DNSAddr+" does not serve") {
		t.Fatalf("ready while the second nameserver lacks the value: %v", err)
	}
	if err := b.publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := p.waitServed(ctx, "*.example.com", keyAuth); err != nil {
		t.Fatalf("not ready with both serving it: %v", err)
	}
	// A nameserver that does not answer is not ready either (and does not
	// hang the check).
	p.nameservers = append(p.nameservers, "127.0.0.1:1")
	if err := p.waitServed(ctx, "example.com", keyAuth); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("ready with a dead nameserver: %v", err)
	}
	// A cancelled task stops the wait at once, with its error.
	cancel()
	start := time.Now()
	if err := p.waitServed(ctx, "example.com", keyAuth); err == nil || time.Since(start) > time.Second {
		t.Fatalf("cancelled: err %v after %s", err, time.Since(start))
	}
}

// The reason a wait gives up is the last finished check's, not one the
// deadline cut short: with a nameserver that stops answering before a dead
// one, the error names the dead one; with only the silent one, it names that.
func TestDNSPreCheckReasonSurvivesDeadline(t *testing.T) {
	const keyAuth = "token.thumbprint"
	fqdn := dns.Fqdn(challengeFQDN("example.com"))
	release := make(chan struct{})
	var answered atomic.Int32
	srv := &dns.Server{Net: "tcp", Listener: listenTCP(t), Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if answered.Add(1) > 1 {
			<-release // accepted, never answered
			return
		}
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{txtValue(keyAuth)}}}
		_ = w.WriteMsg(r)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { close(release); _ = srv.Shutdown() })
	silent := srv.Listener.Addr().String()

	p := &dnsProvider{nameservers: []string{silent, "127.0.0.1:1"}, timeout: 500 * time.Millisecond, interval: 10 * time.Millisecond}
	err := p.waitServed(context.Background(), "example.com", keyAuth)
	if err == nil || !strings.Contains(err.Error(), "nameserver 127.0.0.1:1:") {
		t.Fatalf("want the dead nameserver as the reason, got %v", err)
	}
	p.nameservers = []string{silent}
	err = p.waitServed(context.Background(), "example.com", keyAuth)
	if err == nil || !strings.Contains(err.Error(), "nameserver "+silent+":") {
		t.Fatalf("want the silent nameserver as the reason, got %v", err)
	}
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A task cancelled while the nameservers do not serve the record gives up
// promptly and withdraws what it published.
func TestIssueDNS01Cancelled(t *testing.T) {
	e := newACMEEnv(t)
	var mu sync.Mutex
	var calls []*agentpb.PublishChallengeRequest
	e.env.PublishChallenge = func(_ context.Context, req *agentpb.PublishChallengeRequest) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, req) // recorded, never served
		return nil
	}
	req := issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01, "example.com")
	a := e.m.NewIssue(req)
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.Apply(ctx, e.env)
	took := time.Since(start)
	if err == nil {
		t.Fatal("issued without the record")
	}
	if took > 10*time.Second {
		t.Errorf("gave up after %s", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[0].Remove || !calls[1].Remove || calls[1].Value != calls[0].Value || calls[0].CertificateId != req.Id {
		t.Errorf("publish calls %v", calls)
	}
	if len(e.web.installs) != 0 {
		t.Error("installed")
	}
	t.Logf("gave up after %s: %v", took, err)
}

// A name in a zone the control plane does not serve fails alone.
func TestIssueDNS01OneNameFails(t *testing.T) {
	e := newACMEEnv(t)
	publish := e.env.PublishChallenge
	e.env.PublishChallenge = func(ctx context.Context, req *agentpb.PublishChallengeRequest) error {
		if req.Fqdn != "_acme-challenge.example.com" {
			return errors.New("not a zone of this cluster")
		}
		return publish(ctx, req)
	}
	res, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01, "*.example.com", "example.com", "example.net"))
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if !slices.Equal(slices.Sorted(slices.Values(res.Domains)), []string{"*.example.com", "example.com"}) {
		t.Errorf("domains %v", res.Domains)
	}
	if len(res.Failed) != 1 || res.Failed[0].Name != "example.net" || !strings.Contains(res.Failed[0].Error, "not a zone of this cluster") {
		t.Fatalf("failed %v", res.Failed)
	}
	if got := e.txt(t, "_acme-challenge.example.com"); len(got) != 0 {
		t.Errorf("challenge record left: %v", got)
	}
}
