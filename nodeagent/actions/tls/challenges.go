package tls

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// httpProvider answers HTTP-01 challenges with token files in the
// directory every vhost serves under /.well-known/acme-challenge/.
type httpProvider struct {
	dir string
}

// validToken accepts what RFC 8555 §8.3 allows a token to be: base64url.
// It also keeps the token a plain file name in dir.
func validToken(tok string) error {
	if tok == "" || len(tok) > 256 {
		return errors.New("bad ACME token length")
	}
	for _, r := range tok {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return errors.New("ACME token is not base64url")
		}
	}
	return nil
}

func (p *httpProvider) Present(_ context.Context, _, token, keyAuth string) error {
	if err := validToken(token); err != nil {
		return err
	}
	if p.dir == "" {
		return errors.New("this node's profile has no ACME challenge directory")
	}
	// Public: nginx serves the tokens to anyone, as the protocol intends.
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return fmt.Errorf("http-01: %w", err)
	}
	if err := os.Chmod(p.dir, 0o755); err != nil {
		return fmt.Errorf("http-01: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(p.dir, token), []byte(keyAuth), 0o644, nil); err != nil {
		return fmt.Errorf("http-01: %w", err)
	}
	return nil
}

func (p *httpProvider) CleanUp(_ context.Context, _, token, _ string) error {
	if err := validToken(token); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(p.dir, token))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("http-01: %w", err)
	}
	return nil
}

// dnsProvider answers DNS-01 challenges through the control plane, which
// writes _acme-challenge.NAME into the zone on our DNS. One name may carry
// two values at once (NAME and *.NAME share the record), so the control
// plane adds and removes single values, never the whole record set.
type dnsProvider struct {
	env         *actions.Env
	id          string
	nameservers []string
	// timeout bounds the wait for every nameserver to serve a value;
	// interval is the time between checks.
	timeout, interval time.Duration
}

func challengeFQDN(domain string) string {
	return "_acme-challenge." + strings.TrimPrefix(domain, "*.")
}

// txtValue is the record value of a key authorization (RFC 8555 §8.4).
func txtValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (p *dnsProvider) publish(ctx context.Context, domain, keyAuth string, remove bool) error {
	if p.env.PublishChallenge == nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "dns-01: this agent cannot publish DNS records")
	}
	return p.env.PublishChallenge(ctx, &agentpb.PublishChallengeRequest{
		CertificateId: p.id,
		Fqdn:          challengeFQDN(domain),
		Value:         txtValue(keyAuth),
		Remove:        remove,
	})
}

func (p *dnsProvider) Present(ctx context.Context, domain, _, keyAuth string) error {
	if err := p.publish(ctx, domain, keyAuth, false); err != nil {
		return fmt.Errorf("dns-01: publish %s: %w", challengeFQDN(domain), err)
	}
	return nil
}

func (p *dnsProvider) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	// The order may have been cancelled: withdraw the record anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := p.publish(ctx, domain, keyAuth, true); err != nil {
		return fmt.Errorf("dns-01: withdraw %s: %w", challengeFQDN(domain), err)
	}
	return nil
}

// waitServed returns once every one of our nameservers (primary and
// secondaries) serves domain's response, or fails after p.timeout. lego
// would ask the system's resolver and the zone's servers found through
// public delegation; we know our nameservers, and a CA that happens to
// query a lagging secondary would fail the name.
func (p *dnsProvider) waitServed(ctx context.Context, domain, keyAuth string) error {
	deadline := time.Now().Add(p.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	fqdn, value := dns.Fqdn(challengeFQDN(domain)), txtValue(keyAuth)
	var why error
	for {
		err := p.served(ctx, fqdn, value)
		switch {
		case err == nil:
			return nil
		// A check cut short by the deadline says less than a finished one:
		// it is the reason only when there is no other. The dialer's own
		// timer can fail it before ctx.Err() is set, so the clock decides.
		case why == nil || ctx.Err() == nil && time.Now().Before(deadline):
			why = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dns-01: %s not served by every nameserver in %s: %w", fqdn, p.timeout, why)
		case <-time.After(p.interval):
		}
	}
}

// served reports why fqdn's value is not served by every nameserver yet
// (not yet, a server restarting, a zone still transferring: what the wait
// is for), or nil once it is.
func (p *dnsProvider) served(ctx context.Context, fqdn, value string) error {
	for _, ns := range p.nameservers {
		ok, err := hasTXT(ctx, ns, fqdn, value)
		if err != nil {
			return fmt.Errorf("nameserver %s: %w", ns, err)
		}
		if !ok {
			return fmt.Errorf("nameserver %s does not serve the record yet", ns)
		}
	}
	return nil
}

// hasTXT asks ns over TCP (our servers answer on TCP as on UDP, and TCP has
// no truncation to handle) whether fqdn has a TXT record with value.
func hasTXT(ctx context.Context, ns, fqdn, value string) (bool, error) {
	c := &dns.Client{Net: "tcp", Timeout: 3 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(fqdn, dns.TypeTXT)
	q.RecursionDesired = false
	r, _, err := c.ExchangeContext(ctx, q, ns)
	if err != nil {
		return false, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return false, nil
	}
	return slices.ContainsFunc(r.Answer, func(rr dns.RR) bool {
		t, ok := rr.(*dns.TXT)
		return ok && strings.Join(t.Txt, "") == value
	}), nil
}
