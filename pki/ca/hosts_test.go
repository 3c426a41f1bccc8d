package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"

	"github.com/npanel/npanel/pki"
)

// verifyFor checks leaf as a TLS client that dialled host would: chained to
// the root, for server auth, naming host.
func verifyFor(t *testing.T, ca *CA, leaf *x509.Certificate, host string) error {
	t.Helper()
	inters := x509.NewCertPool()
	inters.AddCert(ca.inter)
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.RootPool(), Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// A join token names the node's address; the certificate enrolled with it
// carries it as an IP SAN beside the URI, so Prometheus can verify the
// node by the address it scrapes.
func TestEnrollNamesNodeHosts(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	const node = "web-1"
	tok, claims, err := ca.NewJoinToken(node, []string{"WEB-1.Example.NET", "10.0.0.5", "2001:db8::5", "10.0.0.5"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.5", "2001:db8::5", "web-1.example.net"}
	if !slices.Equal(claims.Hosts, want) {
		t.Errorf("NewJoinToken hosts %q, want %q", claims.Hosts, want)
	}
	parsed, err := pki.ParseJoinToken(tok)
	if err != nil {
		t.Fatalf("ParseJoinToken: %v", err)
	}
	if !slices.Equal(parsed.Hosts, want) {
		t.Errorf("ParseJoinToken hosts %q, want %q", parsed.Hosts, want)
	}
	key, _ := pki.NewKey()
	csr, err := pki.NewNodeCSR(key, node, parsed.Hosts)
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := ca.Enroll(context.Background(), tok, csr, newUsedTokens().mark)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	leaf := chain[0]
	if n, err := pki.NodeName(leaf); err != nil || n != node {
		t.Errorf("NodeName = %q, %v", n, err)
	}
	if got := pki.HostsOf(leaf.IPAddresses, leaf.DNSNames); !slices.Equal(got, want) {
		t.Errorf("leaf hosts %q, want %q", got, want)
	}
	for _, h := range want {
		if err := verifyFor(t, ca, leaf, h); err != nil {
			t.Errorf("not valid for %s: %v", h, err)
		}
	}
	if err := verifyFor(t, ca, leaf, "10.0.0.6"); err == nil {
		t.Error("valid for an address it was not issued for")
	}
}

// The request must name exactly the token's hosts: fewer, more, other or
// repeated names are refused and the token stays unused.
func TestEnrollRefusesOtherHosts(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	const node = "web-1"
	tok, _, err := ca.NewJoinToken(node, []string{"10.0.0.5"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	uri := []*url.URL{pki.NodeURI(node)}
	for _, tt := range []struct {
		desc string
		ips  []net.IP
		dns  []string
	}{
		{"no hosts", nil, nil},
		{"another address", []net.IP{net.ParseIP("10.0.0.6")}, nil},
		{"an extra address", []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("10.0.0.6")}, nil},
		{"an extra name", []net.IP{net.ParseIP("10.0.0.5")}, []string{"web-1.example.net"}},
		{"the address twice", []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("10.0.0.5")}, nil},
		{"the address as a name", nil, []string{"10.0.0.5"}},
	} {
		csr := mustCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: uri, IPAddresses: tt.ips, DNSNames: tt.dns})
		used := newUsedTokens()
		if _, _, err := ca.Enroll(context.Background(), tok, csr, used.mark); !errors.Is(err, ErrInvalidCSR) {
			t.Errorf("%s: err = %v, want ErrInvalidCSR", tt.desc, err)
		}
		if used.callCount() != 0 {
			t.Errorf("%s: the refused request consumed the token", tt.desc)
		}
	}
	for _, bad := range [][]string{{"10.0.0.5:9469"}, {""}, {"https://web-1"}, {"a", "b", "c", "d", "e", "f", "g", "h", "i"}} {
		if _, _, err := ca.NewJoinToken(node, bad, 0); err == nil {
			t.Errorf("NewJoinToken(hosts %q) succeeded", bad)
		}
	}
}

// Renewal names the hosts the caller passes (the node record's address):
// a certificate issued without an address gains it, a changed address
// replaces the old one, and the identity URI stays.
func TestRenewFollowsHosts(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	e := enroll(t, ca, "web-1")
	if n := len(e.chain[0].IPAddresses); n != 0 {
		t.Fatalf("enrolled without hosts but the certificate has %d IP SANs", n)
	}
	cert := e.chain[0]
	for _, hosts := range [][]string{{"10.0.0.5"}, {"10.0.0.5"}, {"10.0.0.7", "web-1.example.net"}, nil} {
		chain, err := ca.Renew(context.Background(), cert, hosts)
		if err != nil {
			t.Fatalf("Renew(%q): %v", hosts, err)
		}
		cert = chain[0]
		if n, err := pki.NodeName(cert); err != nil || n != "web-1" {
			t.Errorf("Renew(%q): NodeName = %q, %v", hosts, n, err)
		}
		if got := pki.HostsOf(cert.IPAddresses, cert.DNSNames); !slices.Equal(got, hosts) && len(got)+len(hosts) != 0 {
			t.Errorf("Renew(%q): certificate names %q", hosts, got)
		}
		sans := 0
		for _, ext := range cert.Extensions {
			if ext.Id.Equal(oidSubjectAltName) {
				sans++
			}
		}
		if sans != 1 {
			t.Errorf("Renew(%q): %d subjectAltName extensions, want 1", hosts, sans)
		}
		for _, h := range hosts {
			if err := verifyFor(t, ca, cert, h); err != nil {
				t.Errorf("Renew(%q): not valid for %s: %v", hosts, h, err)
			}
		}
		if !publicKeysEqual(cert.PublicKey, e.chain[0].PublicKey) {
			t.Errorf("Renew(%q) changed the key", hosts)
		}
	}
	if _, err := ca.Renew(context.Background(), cert, []string{"10.0.0.5:9469"}); err == nil {
		t.Error("Renew with a host:port succeeded")
	}
}
