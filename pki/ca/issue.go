package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"

	"github.com/npanel/npanel/pki"
)

var (
	// ErrInvalidCSR: the certificate request is badly signed, asks for another
	// identity than the token's or for extra names, or uses a refused key.
	ErrInvalidCSR = errors.New("invalid certificate request")
	// ErrInvalidCertificate: Renew was given a certificate that is not ours,
	// has expired, or carries no nPanel identity.
	ErrInvalidCertificate = errors.New("invalid certificate")
)

// oidSubjectAltName is the X.509 subjectAltName extension (RFC 5280 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

const (
	minRSABits = 2048
	// maxRSABits bounds the cost of checking an attacker's CSR signature.
	maxRSABits = 8192
	// serverTokenTTL is the validity of the tokens IssueServerCertificate
	// mints and redeems in the same call.
	serverTokenTTL = 5 * time.Minute
)

// authorizeToken runs a token through the authority: provisioner lookup by
// issuer and kid, signature, audience, expiry and not-before (both with
// smallstep's one-minute leeway). smallstep's own used-token memory is skipped
// on purpose: it is per process, lost on restart, and records a token before
// its signature is checked, so a forgery carrying a leaked jti could burn the
// genuine token. Single use is the caller's record (Enroll's markUsed).
func (c *CA) authorizeToken(ctx context.Context, tok string) ([]provisioner.SignOption, error) {
	ctx = authority.NewContextWithSkipTokenReuse(ctx)
	ctx = provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	opts, err := c.auth.Authorize(ctx, tok)
	if err != nil {
		if errors.Is(err, jose.ErrExpired) {
			return nil, fmt.Errorf("%w: %w", pki.ErrTokenExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", pki.ErrInvalidToken, err)
	}
	return opts, nil
}

// Enroll redeems a join token for a node certificate. In order: the token is
// verified by the authority and must be a well-formed join token for this root;
// the CSR must be validly signed, name exactly the token's node (CN and a
// single URI SAN) and the token's hosts (IP and DNS SANs, no email), and
// use an ECDSA P-256/P-384, Ed25519 or RSA >= 2048 key; then
// markUsed(claims) is called, and only if it
// succeeds is the certificate signed. The chain returned is [leaf,
// intermediate].
//
// markUsed is where single use is enforced: it must atomically record
// claims.ID and fail (pki.ErrTokenUsed is there for that) if it was recorded
// before. The record must be kept until claims.ExpiresAt has passed on every
// replica's clock; Enroll itself refuses a token at ExpiresAt, without the
// one-minute leeway smallstep allows, so ExpiresAt plus the clock skew between
// replicas is enough. A refused CSR or a cancelled ctx does not consume the
// token, so an agent can fix its request and retry; a signing failure after
// markUsed does (it would mean the CA itself is broken).
func (c *CA) Enroll(ctx context.Context, tok string, csr *x509.CertificateRequest, markUsed func(pki.JoinClaims) error) ([]*x509.Certificate, pki.JoinClaims, error) {
	if markUsed == nil {
		return nil, pki.JoinClaims{}, errors.New("enroll: markUsed is nil: join tokens would be reusable")
	}
	// Shape first: this bounds the work on garbage before any cryptography.
	claims, err := pki.ParseJoinToken(tok)
	if err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll: %w", err)
	}
	signOpts, err := c.authorizeToken(ctx, tok)
	if err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w", claims.Node, err)
	}
	// From here the claims are verified.
	if !time.Now().Before(claims.ExpiresAt) {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w at %s", claims.Node, pki.ErrTokenExpired, claims.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if claims.RootFingerprint != c.fingerprint {
		// Only possible if the provisioner key survived a root change.
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w: token pins root %s, this CA's root is %s", claims.Node, pki.ErrInvalidToken, claims.RootFingerprint, c.fingerprint)
	}
	if err := checkNodeCSR(csr, claims); err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w: %w", claims.Node, ErrInvalidCSR, err)
	}
	// A caller that has gone away must not burn the token for nothing.
	if err := ctx.Err(); err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w", claims.Node, err)
	}
	if err := markUsed(claims); err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: record join token %s as used: %w", claims.Node, claims.ID, err)
	}
	chain, err := c.sign(ctx, csr, signOpts)
	if err != nil {
		return nil, pki.JoinClaims{}, fmt.Errorf("enroll node %q: %w", claims.Node, err)
	}
	c.log.Info("node enrolled", "node", claims.Node, "token_id", claims.ID,
		"serial", pki.SerialHex(chain[0]), "not_after", chain[0].NotAfter.UTC())
	return chain, claims, nil
}

func (c *CA) sign(ctx context.Context, csr *x509.CertificateRequest, signOpts []provisioner.SignOption) ([]*x509.Certificate, error) {
	chain, err := c.auth.SignWithContext(ctx, csr, provisioner.SignOptions{}, signOpts...)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	if len(chain) != 2 {
		return nil, fmt.Errorf("sign certificate: authority returned a chain of %d certificates, want leaf and intermediate", len(chain))
	}
	return chain, nil
}

// checkNodeCSR is stricter than smallstep's validators, which accept a CSR
// without SANs or without a common name and let the token decide: we want a
// request that names the node exactly as the certificate will.
func checkNodeCSR(csr *x509.CertificateRequest, claims pki.JoinClaims) error {
	node := claims.Node
	if csr == nil {
		return errors.New("no certificate request")
	}
	// The key first: it bounds the cost of the signature check below.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return err
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	if cn := csr.Subject.CommonName; cn != node {
		return fmt.Errorf("common name %q, want %q", cn, node)
	}
	want := pki.NodeURI(node).String()
	if len(csr.URIs) != 1 || csr.URIs[0].String() != want {
		got := make([]string, len(csr.URIs))
		for i, u := range csr.URIs {
			got[i] = u.String()
		}
		return fmt.Errorf("URI SANs %q, want exactly [%q]", got, want)
	}
	if n := len(csr.EmailAddresses); n != 0 {
		return fmt.Errorf("has %d email SANs, a node certificate carries none", n)
	}
	// Compared as lists, not only as sets: a repeated name is refused too;
	// and per field: an address written as a DNS name is not that address.
	wantIPs, wantNames := pki.SplitHosts(claims.Hosts)
	if got, want := ipStrings(csr.IPAddresses), ipStrings(wantIPs); !slices.Equal(got, want) {
		return fmt.Errorf("IP SANs %q, want exactly the token's %q", got, want)
	}
	if got := slices.Sorted(slices.Values(csr.DNSNames)); !slices.Equal(got, wantNames) {
		return fmt.Errorf("DNS SANs %.100q, want exactly the token's %q", got, wantNames)
	}
	return nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	slices.Sort(out)
	return out
}

func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not allowed, use P-256 or P-384", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("RSA key of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
		}
	default:
		return fmt.Errorf("key type %T is not allowed", pub)
	}
	return nil
}

// Renew re-issues cert with the same public key and identity and a fresh
// validity of CertLifetime. Its other names become hosts (IP addresses and
// DNS names; none is allowed): the caller passes what the node's record
// says today, so a certificate follows a changed address, and one issued
// before nodes carried their address gains it, at its next renewal. The
// certificate must have been issued by this CA's intermediate, be within
// its validity period and carry a node or server identity. Renew does not
// know whether the node still belongs to the cluster: the caller checks that
// before calling it.
func (c *CA) Renew(ctx context.Context, cert *x509.Certificate, hosts []string) ([]*x509.Certificate, error) {
	if cert == nil {
		return nil, fmt.Errorf("renew: %w: no certificate", ErrInvalidCertificate)
	}
	hosts, err := pki.NodeHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("renew certificate %s: %w", pki.SerialHex(cert), err)
	}
	now := time.Now()
	if err := c.verifyIssued(cert, now); err != nil {
		return nil, fmt.Errorf("renew certificate %s: %w: %w", pki.SerialHex(cert), ErrInvalidCertificate, err)
	}
	who, err := identity(cert)
	if err != nil {
		return nil, fmt.Errorf("renew certificate %s: %w: %w", pki.SerialHex(cert), ErrInvalidCertificate, err)
	}
	// smallstep's RenewContext copies the old certificate and keeps its
	// lifetime (NotAfter-NotBefore). Hand it a copy whose window is "now, for
	// CertLifetime" so that renewals follow the configured lifetime even if it
	// changed since the certificate was first issued. The real window was
	// checked above; nothing else is read from these two fields.
	tmpl := *cert
	tmpl.NotBefore = now.Add(-certBackdate)
	tmpl.NotAfter = now.Add(c.lifetime)
	// smallstep copies the old certificate's extensions verbatim, the SAN
	// extension with them, and x509 uses a SAN extension it is given over
	// the name fields. Dropping it makes the fields (the identity URI kept,
	// the hosts replaced) what the new certificate names.
	tmpl.IPAddresses, tmpl.DNSNames = pki.SplitHosts(hosts)
	tmpl.EmailAddresses = nil
	tmpl.Extensions = slices.DeleteFunc(slices.Clone(cert.Extensions), func(e pkix.Extension) bool {
		return e.Id.Equal(oidSubjectAltName)
	})
	chain, err := c.auth.RenewContext(ctx, &tmpl, nil)
	if err != nil {
		return nil, fmt.Errorf("renew %s: %w", who, err)
	}
	if len(chain) != 2 {
		return nil, fmt.Errorf("renew %s: authority returned a chain of %d certificates, want leaf and intermediate", who, len(chain))
	}
	c.log.Debug("certificate renewed", "identity", who, "old_serial", pki.SerialHex(cert),
		"serial", pki.SerialHex(chain[0]), "not_after", chain[0].NotAfter.UTC())
	return chain, nil
}

// verifyIssued is the check smallstep leaves to its HTTP layer: RenewContext
// trusts that the certificate it is given was verified by the mTLS handshake.
func (c *CA) verifyIssued(cert *x509.Certificate, now time.Time) error {
	if err := cert.CheckSignatureFrom(c.inter); err != nil {
		return fmt.Errorf("not issued by this CA's intermediate: %w", err)
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if cert.IsCA {
		return errors.New("is a CA certificate")
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         c.rootPool,
		Intermediates: c.interPool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("verify chain: %w", err)
	}
	return nil
}

// identity names the node or server a certificate identifies, for errors and
// logs.
func identity(cert *x509.Certificate) (string, error) {
	if n, err := pki.NodeName(cert); err == nil {
		return "node " + n, nil
	}
	if id, err := pki.ServerID(cert); err == nil {
		return "server " + id, nil
	}
	return "", errors.New("carries neither a node nor a server identity")
}

// IssueServerCertificate makes a fresh P-256 key and a certificate for a
// control-plane replica: URI SAN pki.ServerURI(id), DNS and IP SANs from hosts
// (names or IP addresses, no ports), server and client auth, valid for
// CertLifetime. The chain is leaf, intermediate, root: the root is included so
// that an enrolling agent, which only knows its fingerprint, can find and pin
// it. Leaf is set.
//
// It goes through the same authority path as Enroll, with a token minted and
// redeemed on the spot, so server certificates carry the provisioner
// extension and can be renewed like node certificates.
func (c *CA) IssueServerCertificate(id string, hosts []string) (tls.Certificate, error) {
	if err := pki.ValidServerID(id); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	sans := []string{pki.ServerURI(id).String()}
	seen := map[string]bool{}
	for _, h := range hosts {
		n, err := pki.NormalizeHost(h)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: %w", id, err)
		}
		if !seen[n] {
			seen[n] = true
			sans = append(sans, n)
		}
	}
	key, err := pki.NewKey()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: %w", id, err)
	}
	// The certificate's names come from the token; the request only has to
	// agree with it, which a bare common name does.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: create request: %w", id, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: parse request: %w", id, err)
	}
	tok, _, err := c.signToken(id, sans, time.Now(), serverTokenTTL)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: %w", id, err)
	}
	ctx := context.Background()
	signOpts, err := c.authorizeToken(ctx, tok)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: %w", id, err)
	}
	chain, err := c.sign(ctx, csr, signOpts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %q: %w", id, err)
	}
	c.log.Info("server certificate issued", "server", id, "sans", sans,
		"serial", pki.SerialHex(chain[0]), "not_after", chain[0].NotAfter.UTC())
	return tls.Certificate{
		Certificate: [][]byte{chain[0].Raw, chain[1].Raw, c.root.Raw},
		PrivateKey:  key,
		Leaf:        chain[0],
	}, nil
}
