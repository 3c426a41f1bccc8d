package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
)

// NewKey generates a node's private key (ECDSA P-256). The key never leaves
// the node: only a CSR does.
func NewKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewNodeCSR makes the certificate request Enroll expects for node: common
// name node, one URI SAN NodeURI(node), and the IP and DNS SANs of hosts
// (the join token's JoinClaims.Hosts), nothing else.
func NewNodeCSR(key crypto.Signer, node string, hosts []string) (*x509.CertificateRequest, error) {
	if err := ValidNodeName(node); err != nil {
		return nil, fmt.Errorf("new node CSR: %w", err)
	}
	if key == nil {
		return nil, fmt.Errorf("new node CSR for %q: no key", node)
	}
	hosts, err := NodeHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("new node CSR for %q: %w", node, err)
	}
	ips, names := SplitHosts(hosts)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: node},
		URIs:        []*url.URL{NodeURI(node)},
		IPAddresses: ips,
		DNSNames:    names,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("new node CSR for %q: %w", node, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("new node CSR for %q: parse: %w", node, err)
	}
	return csr, nil
}
