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

	"github.com/go-acme/lego/v5/challenge/dns01"
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

// Timeout implements challenge.ProviderTimeout: lego waits interval before
// the first check and polls at it, for up to timeout.
func (p *dnsProvider) Timeout() (timeout, interval time.Duration) {
	return p.timeout, p.interval
}

// served is the pre-check that replaces lego's: lego asks the system's
// resolver and the zone's authoritative servers on port 53, found through
// public delegation, and its resolver is process-wide. We know our
// nameservers: every one of them (primary and secondaries) must serve the
// value before the CA is asked to look, or a CA that happens to query a
// lagging secondary fails the name.
func (p *dnsProvider) served(ctx context.Context, domain, _, value string, _ dns01.PreCheckFunc) (bool, error) {
	// lego's wait loop knows no context: stopping it is the only way to
	// give up promptly when the task is cancelled.
	if err := ctx.Err(); err != nil {
		return true, err
	}
	fqdn := dns.Fqdn(challengeFQDN(domain))
	for _, ns := range p.nameservers {
		// Not yet, or a server restarting or a zone still transferring:
		// what the wait is for. The last reason is in the timeout's error.
		ok, err := hasTXT(ctx, ns, fqdn, value)
		if err != nil {
			return false, fmt.Errorf("nameserver %s: %w", ns, err)
		}
		if !ok {
			return false, fmt.Errorf("nameserver %s does not serve the record yet", ns)
		}
	}
	return true, nil
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
