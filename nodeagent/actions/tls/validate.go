package tls

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Limits on the wire form.
const (
	maxNames       = 100 // Let's Encrypt's limit of names per certificate
	maxNameservers = 16
	maxPEM         = 256 << 10
	maxIDLen       = 128
)

// certName validates one name to order: a canonical domain, or one with a
// single leftmost "*" label when wildcards are allowed.
func certName(n string, wildcardOK bool) error {
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		if strings.Contains(rest, "*") {
			return fmt.Errorf("name %q: a wildcard is allowed only as the whole leftmost label", n)
		}
		if !wildcardOK {
			return fmt.Errorf("wildcard name %q needs the DNS-01 challenge", n)
		}
		return validate.CanonicalDomain(rest)
	}
	if strings.Contains(n, "*") {
		return fmt.Errorf("name %q: a wildcard is allowed only as the whole leftmost label", n)
	}
	return validate.CanonicalDomain(n)
}

// covers reports whether name (a canonical domain or wildcard) covers
// host, by the rules of RFC 6125: a wildcard covers exactly one label.
func covers(name, host string) bool {
	if name == host {
		return true
	}
	rest, ok := strings.CutPrefix(name, "*.")
	if !ok {
		return false
	}
	i := strings.IndexByte(host, '.')
	return i > 0 && host[i+1:] == rest
}

func coveredBy(names []string, host string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return covers(n, host) })
}

func validID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("certificate id must be 1 to %d characters", maxIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("certificate id %q: only letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// validAcme checks the ACME server settings.
func validAcme(a *agentpb.AcmeServer) error {
	if a == nil {
		return errors.New("no ACME server")
	}
	u, err := url.Parse(a.DirectoryUrl)
	if err != nil {
		return fmt.Errorf("ACME directory: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || len(a.DirectoryUrl) > 2048 {
		return fmt.Errorf("ACME directory %q must be an https URL with a host", a.DirectoryUrl)
	}
	if a.Email != "" {
		if _, _, _, err := validate.MailAddress(a.Email); err != nil {
			return fmt.Errorf("ACME email: %w", err)
		}
	}
	if len(a.RootCasPem) > 0 {
		if len(a.RootCasPem) > maxPEM {
			return errors.New("ACME root CAs: too large")
		}
		if _, err := parseCerts(a.RootCasPem); err != nil {
			return fmt.Errorf("ACME root CAs: %w", err)
		}
	}
	if (a.EabKid == "") != (len(a.SealedEabHmac) == 0) {
		return errors.New("ACME external account binding needs both a key id and an HMAC key")
	}
	if a.EabKid != "" {
		if len(a.EabKid) > 256 || strings.ContainsFunc(a.EabKid, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return errors.New("ACME EAB key id: at most 256 printable ASCII characters")
		}
	}
	return nil
}

// validNameserver accepts host:port with an IP address host: the agent
// queries our own nameservers directly, never through a resolver.
func validNameserver(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("nameserver %q: %w", s, err)
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("nameserver %q: the host must be an IP address", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("nameserver %q: bad port", s)
	}
	return nil
}

// parseCerts parses every CERTIFICATE block of a PEM bundle, in order, and
// refuses anything else in it (a private key pasted by mistake included).
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(strings.TrimSpace(string(rest))) > 0 {
				return nil, errors.New("trailing data that is not PEM")
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q (only CERTIFICATE)", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// validChain parses a chain, leaf first.
func validChain(b []byte) ([]*x509.Certificate, error) {
	if len(b) == 0 {
		return nil, errors.New("no certificate chain")
	}
	if len(b) > maxPEM {
		return nil, errors.New("certificate chain too large")
	}
	certs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("certificate chain: %w", err)
	}
	if certs[0].IsCA {
		return nil, errors.New("certificate chain: the first certificate is a CA, not the leaf")
	}
	return certs, nil
}

// Validate implements actions.Action.
func (a *Issue) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validID(r.Id); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	if err := validate.CanonicalDomain(r.Site); err != nil {
		return err
	}
	var wildcardOK bool
	switch r.Challenge {
	case agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01:
		if len(r.Nameservers) > 0 {
			return errors.New("nameservers are for DNS-01 only")
		}
	case agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01:
		wildcardOK = true
		if len(r.Nameservers) == 0 || len(r.Nameservers) > maxNameservers {
			return fmt.Errorf("DNS-01 needs 1 to %d nameservers", maxNameservers)
		}
		for _, ns := range r.Nameservers {
			if err := validNameserver(ns); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown ACME challenge %d", r.Challenge)
	}
	if len(r.Domains) == 0 || len(r.Domains) > maxNames {
		return fmt.Errorf("1 to %d names to order", maxNames)
	}
	seen := map[string]bool{}
	for _, d := range r.Domains {
		if err := certName(d, wildcardOK); err != nil {
			return err
		}
		if seen[d] {
			return fmt.Errorf("name %q is listed twice", d)
		}
		seen[d] = true
	}
	if r.Domains[0] != r.Site && !coveredBy(r.Domains, r.Site) {
		return fmt.Errorf("the names do not cover the site %q", r.Site)
	}
	if r.Mail && !coveredBy(r.Domains, mailHost(r.Site)) {
		return fmt.Errorf("mail: the names do not cover %q", mailHost(r.Site))
	}
	return validAcme(r.Acme)
}

// Validate implements actions.Action.
func (a *Install) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validID(r.Id); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	if err := validate.CanonicalDomain(r.Site); err != nil {
		return err
	}
	if _, err := validChain(r.ChainPem); err != nil {
		return err
	}
	if len(r.SealedPrivateKey) == 0 || len(r.SealedPrivateKey) > 64<<10 {
		return errors.New("no sealed private key, or one too large")
	}
	return nil
}

// Validate implements actions.Action.
func (a *Revoke) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validID(r.Id); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	if err := validate.CanonicalDomain(r.Site); err != nil {
		return err
	}
	if _, err := validChain(r.ChainPem); err != nil {
		return err
	}
	// RFC 5280 §5.3.1: 0-10 without 7; RFC 8555 §7.6 lets the CA refuse
	// some of them, which it says.
	if r.Reason > 10 || r.Reason == 7 {
		return fmt.Errorf("revocation reason %d is not an RFC 5280 CRLReason", r.Reason)
	}
	return validAcme(r.Acme)
}

// Validate implements actions.Action.
func (a *Remove) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validID(r.Id); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	return validate.CanonicalDomain(r.Site)
}
