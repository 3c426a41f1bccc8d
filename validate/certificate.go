package validate

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Limits of a certificate bought elsewhere (installCertificate's input, or
// a cPanel archive's apache_tls file). A chain of a commercial CA is a few
// KiB; these only keep the parser from working for nothing.
const (
	MaxCertPEMBytes = 64 << 10
	MaxKeyPEMBytes  = 16 << 10
	MaxChainCerts   = 10
	MinRSAKeyBits   = 2048
)

// certRoots is what CertificateRoots returns: the system's roots, unless a
// test replaced them.
var certRoots = struct {
	sync.Mutex
	f func() (*x509.CertPool, error)
}{f: x509.SystemCertPool}

// CertificateRoots returns the roots an installed certificate's chain must
// verify to: the system's. The API (installCertificate) and the node (a
// cPanel archive's certificates) check against the same set.
func CertificateRoots() (*x509.CertPool, error) {
	certRoots.Lock()
	f := certRoots.f
	certRoots.Unlock()
	return f()
}

// SetCertificateRoots makes CertificateRoots return pool until the returned
// func restores the previous roots. For tests, whose server and agents run
// in one process and trust a test CA.
func SetCertificateRoots(pool *x509.CertPool) (restore func()) {
	certRoots.Lock()
	old := certRoots.f
	certRoots.f = func() (*x509.CertPool, error) { return pool, nil }
	certRoots.Unlock()
	return func() {
		certRoots.Lock()
		certRoots.f = old
		certRoots.Unlock()
	}
}

// CertificateChain is a certificate's chain as CheckCertificateChain took
// it: re-encoded from what parsed (leaf first; nothing else of the input
// survives).
type CertificateChain struct {
	Leaf     *x509.Certificate
	ChainPEM string
	// Trusted: the chain verified to the roots.
	Trusted bool
	// VerifyError says why it did not ("" when Trusted).
	VerifyError string
}

// InstalledCertificate is a CertificateChain with its private key as
// PKCS#8 DER, which the caller seals at once.
type InstalledCertificate struct {
	CertificateChain
	KeyPKCS8 []byte
}

// CheckCertificateChain validates the public part of a certificate bought
// elsewhere: the PEM parses (certificates only, in certPEM and chainPEM),
// the leaf is no CA, covers domain and is valid at now, and the chain
// verifies to roots with the given intermediates unless allowUntrusted. It
// is the check of installCertificate without the key: what the API can do
// with a certificate whose key is sealed to a node.
func CheckCertificateChain(domain, certPEM, chainPEM string, allowUntrusted bool, roots *x509.CertPool, now time.Time) (*CertificateChain, error) {
	if len(certPEM) > MaxCertPEMBytes || len(chainPEM) > MaxCertPEMBytes {
		return nil, &Error{Field: "certificatePEM", Reason: fmt.Sprintf("more than %d KiB of PEM", MaxCertPEMBytes>>10)}
	}
	certs, err := pemCertificates("certificatePEM", certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, &Error{Field: "certificatePEM", Reason: "no CERTIFICATE PEM block"}
	}
	more, err := pemCertificates("chainPEM", chainPEM)
	if err != nil {
		return nil, err
	}
	leaf, chain := certs[0], append(certs[1:], more...)
	if len(chain) > MaxChainCerts {
		return nil, &Error{Field: "chainPEM", Reason: fmt.Sprintf("%d intermediates: at most %d", len(chain), MaxChainCerts)}
	}
	if leaf.IsCA {
		return nil, &Error{Field: "certificatePEM", Reason: "the first certificate is a CA certificate; give the server's certificate first"}
	}
	if now.Before(leaf.NotBefore) {
		return nil, &Error{Field: "certificatePEM", Reason: "the certificate is not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339)}
	}
	if now.After(leaf.NotAfter) {
		return nil, &Error{Field: "certificatePEM", Reason: "the certificate expired at " + leaf.NotAfter.UTC().Format(time.RFC3339)}
	}
	if err := leaf.VerifyHostname(domain); err != nil {
		return nil, &Error{Field: "certificatePEM", Reason: "the certificate does not cover " + domain + " (it names " + listOrNone(leaf.DNSNames) + ")"}
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: domain, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if verr != nil && !allowUntrusted {
		return nil, &Error{Field: "chainPEM", Reason: "the chain does not verify to a trusted root: " + verr.Error()}
	}
	var b bytes.Buffer
	for _, c := range append([]*x509.Certificate{leaf}, chain...) {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	out := &CertificateChain{Leaf: leaf, ChainPEM: b.String(), Trusted: verr == nil}
	if verr != nil {
		out.VerifyError = verr.Error()
	}
	return out, nil
}

// CheckInstalledCertificate validates a certificate bought elsewhere with
// its key: CheckCertificateChain, and one private key in keyPEM (PKCS#1,
// PKCS#8 or SEC 1, not encrypted, RSA of MinRSAKeyBits at least) that
// matches the leaf. Its errors name the check that failed and never quote
// the key.
func CheckInstalledCertificate(domain, certPEM, keyPEM, chainPEM string, allowUntrusted bool, roots *x509.CertPool, now time.Time) (*InstalledCertificate, error) {
	if len(certPEM) > MaxCertPEMBytes || len(chainPEM) > MaxCertPEMBytes {
		return nil, &Error{Field: "certificatePEM", Reason: fmt.Sprintf("more than %d KiB of PEM", MaxCertPEMBytes>>10)}
	}
	if len(keyPEM) > MaxKeyPEMBytes {
		return nil, &Error{Field: "privateKeyPEM", Reason: fmt.Sprintf("more than %d KiB of PEM", MaxKeyPEMBytes>>10)}
	}
	// The key first: a key that does not match says more than anything
	// the chain's checks would.
	certs, err := pemCertificates("certificatePEM", certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, &Error{Field: "certificatePEM", Reason: "no CERTIFICATE PEM block"}
	}
	if _, err := pemCertificates("chainPEM", chainPEM); err != nil {
		return nil, err
	}
	key, err := pemPrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, &Error{Field: "privateKeyPEM", Reason: "the private key does not match the certificate"}
	}
	ch, err := CheckCertificateChain(domain, certPEM, chainPEM, allowUntrusted, roots, now)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, &Error{Field: "privateKeyPEM", Reason: "unsupported key type"}
	}
	return &InstalledCertificate{CertificateChain: *ch, KeyPKCS8: der}, nil
}

// pemCertificates parses every PEM block of s, each of which must be a
// CERTIFICATE: a key pasted into the wrong field is refused without being
// quoted.
func pemCertificates(field, s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			reason := "a PEM block of type " + quote(b.Type) + "; want CERTIFICATE blocks only"
			if strings.Contains(strings.ToUpper(b.Type), "KEY") {
				reason = "a private key; give it in privateKeyPEM"
			}
			return nil, &Error{Field: field, Reason: reason}
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, &Error{Field: field, Reason: "a certificate does not parse: " + err.Error()}
		}
		out = append(out, c)
		if len(out) > MaxChainCerts+1 {
			return nil, &Error{Field: field, Reason: fmt.Sprintf("more than %d certificates", MaxChainCerts+1)}
		}
	}
	if strings.TrimSpace(string(rest)) != "" && len(out) == 0 && strings.TrimSpace(s) != "" {
		return nil, &Error{Field: field, Reason: "not PEM (-----BEGIN CERTIFICATE----- ...)"}
	}
	return out, nil
}

// pemPrivateKey parses the one private key of s. Parse errors are
// reported by kind only: the parser's messages may quote key bytes.
func pemPrivateKey(s string) (crypto.Signer, error) {
	bad := func(reason string) error { return &Error{Field: "privateKeyPEM", Reason: reason} }
	b, rest := pem.Decode([]byte(s))
	if b == nil {
		return nil, bad("not a PEM private key (a -----BEGIN ... KEY----- block)")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, bad("more than one PEM block; give the certificate's private key only")
	}
	// Legacy (RFC 1423) encryption shows in the headers, PKCS#8's in the type.
	if strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") || b.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, bad("the key is encrypted; give it decrypted")
	}
	var key any
	var err error
	var format string
	switch b.Type {
	case "RSA PRIVATE KEY":
		format = "PKCS#1"
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		format = "SEC 1"
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		format = "PKCS#8"
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	default:
		return nil, bad("an unsupported PEM block type; want a PKCS#8, PKCS#1 (RSA) or SEC 1 (EC) private key")
	}
	if err != nil {
		return nil, bad("the key does not parse as " + format)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < MinRSAKeyBits {
			return nil, bad(fmt.Sprintf("a %d-bit RSA key; at least %d bits", k.N.BitLen(), MinRSAKeyBits))
		}
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, bad("unsupported key type")
}

func listOrNone(vs []string) string {
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}
