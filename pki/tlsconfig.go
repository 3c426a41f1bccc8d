package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// The checks below run in VerifyConnection rather than VerifyPeerCertificate:
// VerifyPeerCertificate is skipped on resumed TLS sessions, VerifyConnection
// runs on every handshake, so the identity rule cannot be bypassed by
// resuming a session.

// EnrollClientTLSConfig is the agent's config for the enrolment dial only,
// when all it has is the root fingerprint from its join token. It presents no
// client certificate. Go's verification is replaced (InsecureSkipVerify) by
// this one: among the certificates the server presents, the one whose SHA-256
// fingerprint is rootFingerprint and which is a self-signed CA becomes the
// root; the leaf must chain to it (the other presented certificates serving
// as intermediates), be valid for serverName and carry a ServerURI. Then
// onRoot (if not nil) receives the root so the agent can persist it.
func EnrollClientTLSConfig(serverName, rootFingerprint string, onRoot func(*x509.Certificate)) *tls.Config {
	want := strings.ToLower(strings.TrimSpace(rootFingerprint))
	return &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
		// Verification is not skipped: VerifyConnection does it, against the
		// pinned root instead of the system pool.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			root, err := verifyPinned(cs.PeerCertificates, serverName, want)
			if err != nil {
				return fmt.Errorf("enrolment server %q: %w", serverName, err)
			}
			if onRoot != nil {
				onRoot(root)
			}
			return nil
		},
	}
}

func verifyPinned(certs []*x509.Certificate, serverName, fingerprint string) (*x509.Certificate, error) {
	root, err := VerifyPinnedChain(certs, serverName, fingerprint)
	if err != nil {
		return nil, err
	}
	if _, err := ServerID(certs[0]); err != nil {
		return nil, fmt.Errorf("not a control-plane server: %w", err)
	}
	return root, nil
}

// PinnedTLSConfig is a client config that trusts one root, known only by
// its fingerprint: what `npanel ctl` uses for an API whose root it pinned
// at login. Go's verification is replaced (InsecureSkipVerify) by
// VerifyPinnedChain in VerifyConnection, so a chain that does not verify
// to a root presented by the server with exactly that fingerprint fails the
// handshake with ErrPinMismatch (wrapped); there is no fallback to the
// system roots.
func PinnedTLSConfig(serverName, rootFingerprint string) *tls.Config {
	want := NormalizeFingerprint(rootFingerprint)
	return &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
		// Verification is not skipped: VerifyConnection does it, against
		// the pinned root instead of the system pool.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := VerifyPinnedChain(cs.PeerCertificates, serverName, want); err != nil {
				return fmt.Errorf("server %q: %w", serverName, err)
			}
			return nil
		},
	}
}

// ErrPinMismatch is wrapped by the errors of VerifyPinnedChain: the server's
// certificate does not chain to the pinned root.
var ErrPinMismatch = errors.New("certificate does not match the pinned CA")

// NormalizeFingerprint lowercases a hex fingerprint and drops the colons and
// spaces some tools print between the bytes.
func NormalizeFingerprint(fp string) string {
	fp = strings.ToLower(strings.TrimSpace(fp))
	return strings.NewReplacer(":", "", " ", "").Replace(fp)
}

// ValidFingerprint reports whether fp is a SHA-256 fingerprint as
// Fingerprint returns it (64 lowercase hex digits).
func ValidFingerprint(fp string) bool { return validFingerprint(fp) }

// VerifyPinnedChain checks a presented chain against a pinned root: among
// certs[1:] the one whose SHA-256 fingerprint is fingerprint, and which is a
// self-signed CA, becomes the root; certs[0] must chain to it (the other
// certificates serving as intermediates) and be valid for serverName and
// server authentication. It returns the root.
func VerifyPinnedChain(certs []*x509.Certificate, serverName, fingerprint string) (*x509.Certificate, error) {
	if !validFingerprint(fingerprint) {
		return nil, fmt.Errorf("pinned root fingerprint %q is not 64 hex digits", fingerprint)
	}
	if len(certs) == 0 {
		return nil, errors.New("presented no certificate")
	}
	var root *x509.Certificate
	inters := x509.NewCertPool()
	for _, c := range certs[1:] {
		if root == nil && Fingerprint(c) == fingerprint {
			root = c
			continue
		}
		inters.AddCert(c)
	}
	if root == nil {
		return nil, fmt.Errorf("%w: presented no certificate with the pinned fingerprint %s", ErrPinMismatch, fingerprint)
	}
	// A fingerprint match alone could be a leaf; only a self-signed CA can
	// anchor the chain.
	if !root.IsCA || !root.BasicConstraintsValid || !bytes.Equal(root.RawIssuer, root.RawSubject) {
		return nil, fmt.Errorf("%w: the certificate with the pinned fingerprint is not a self-signed CA", ErrPinMismatch)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%w: the certificate with the pinned fingerprint is not self-signed: %w", ErrPinMismatch, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inters,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: verify against the pinned root: %w", ErrPinMismatch, err)
	}
	return root, nil
}

// AgentTLSConfig is the agent's mTLS config once it is enrolled: the server
// must chain to root, be valid for serverName and carry a ServerURI. The
// client certificate comes from getCert at each handshake, so a renewed
// certificate is used on the next connection without rebuilding the config.
func AgentTLSConfig(serverName string, root *x509.Certificate, getCert func() (*tls.Certificate, error)) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &tls.Config{
		ServerName: serverName,
		RootCAs:    pool,
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := getCert()
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			if cert == nil {
				// crypto/tls requires a non-nil result; an empty one sends
				// no certificate and the server decides.
				return &tls.Certificate{}, nil
			}
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("server %q presented no certificate", serverName)
			}
			if _, err := ServerID(cs.PeerCertificates[0]); err != nil {
				return fmt.Errorf("server %q is not a control-plane server: %w", serverName, err)
			}
			return nil
		},
	}
}

// GatewayTLSConfig is the server config of the agent gateway. A client
// certificate is optional, because Enroll is reached without one and is
// authorized by its join token instead; but a certificate that is presented
// must chain to root (VerifyClientCertIfGiven) and identify a node, or the
// handshake fails. The gateway's handlers must therefore check for a node
// identity on every call except Enroll. The server certificate comes from
// getCert at each handshake, so rotation needs no restart.
func GatewayTLSConfig(root *x509.Certificate, getCert func() (*tls.Certificate, error)) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := getCert()
			if err != nil {
				return nil, fmt.Errorf("server certificate: %w", err)
			}
			if cert == nil {
				return nil, errors.New("server certificate: none available")
			}
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			// crypto/tls has verified the chain against ClientCAs by now.
			if len(cs.VerifiedChains) == 0 {
				return errors.New("client certificate was not verified")
			}
			if _, err := NodeName(cs.VerifiedChains[0][0]); err != nil {
				return fmt.Errorf("client certificate is not a node's: %w", err)
			}
			return nil
		},
	}
}
