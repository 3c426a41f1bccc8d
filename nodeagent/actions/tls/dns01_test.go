package tls

import (
	"context"
	"testing"
	"time"

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

	p := &dnsProvider{nameservers: []string{a.dns.DNSAddr, b.dns.DNSAddr}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const value = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	req := &agentpb.PublishChallengeRequest{Fqdn: "_acme-challenge.example.com", Value: value}
	if err := a.publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := a.publish(ctx, &agentpb.PublishChallengeRequest{Fqdn: "_acme-challenge.example.com", Value: "other"}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.served(ctx, "*.example.com", "", value, nil); ok {
		t.Fatal("ready while the second nameserver lacks the value")
	}
	if err := b.publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.served(ctx, "*.example.com", "", value, nil); !ok {
		t.Fatalf("not ready with both serving it: %v", err)
	}
	// A nameserver that does not answer is not ready either (and does not
	// hang the check).
	p.nameservers = append(p.nameservers, "127.0.0.1:1")
	if ok, _ := p.served(ctx, "example.com", "", value, nil); ok {
		t.Fatal("ready with a dead nameserver")
	}
}
