package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/npanel/npanel/pki"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, time.Hour)
	e := enroll(t, ca, "web-1")
	old := e.chain[0]

	// Certificate times have one-second resolution.
	waitUntil(t, 3*time.Second, "a new second", func() bool {
		return time.Now().Truncate(time.Second).After(old.NotAfter.Add(-time.Hour))
	})
	chain, err := ca.Renew(context.Background(), old, nil)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if len(chain) != 2 || !chain[1].Equal(ca.inter) {
		t.Fatalf("Renew chain has %d certificates, want leaf and intermediate", len(chain))
	}
	renewed := chain[0]
	if !renewed.NotAfter.After(old.NotAfter) {
		t.Errorf("renewed NotAfter %v is not after %v", renewed.NotAfter, old.NotAfter)
	}
	if !publicKeysEqual(renewed.PublicKey, old.PublicKey) {
		t.Error("renewal changed the public key")
	}
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("renewal reused the serial number")
	}
	if name, err := pki.NodeName(renewed); err != nil || name != "web-1" {
		t.Errorf("NodeName(renewed) = %q, %v", name, err)
	}
	if renewed.Subject.CommonName != old.Subject.CommonName || !slices.Equal(renewed.ExtKeyUsage, old.ExtKeyUsage) {
		t.Error("renewal changed the subject or key usages")
	}
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: ca.RootPool(), Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate does not verify: %v", err)
	}
	// A renewed certificate renews again.
	if _, err := ca.Renew(context.Background(), renewed, nil); err != nil {
		t.Errorf("second Renew: %v", err)
	}
}

func TestRenewUsesCurrentLifetime(t *testing.T) {
	t.Parallel()
	ca, m := newTestCA(t, time.Hour)
	e := enroll(t, ca, "web-1")
	// Another replica, configured for longer certificates since.
	replica := newTestCAFrom(t, m, 3*time.Hour)
	chain, err := replica.Renew(context.Background(), e.chain[0], nil)
	if err != nil {
		t.Fatalf("Renew on a replica: %v", err)
	}
	if d := time.Until(chain[0].NotAfter); d < 3*time.Hour-time.Minute || d > 3*time.Hour {
		t.Errorf("renewed certificate lives %v more, want about 3h", d)
	}
}

func TestRenewRefuses(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, time.Second)
	otherCA, _ := newTestCA(t, 0)

	foreign := enroll(t, otherCA, "web-1").chain[0]
	if _, err := ca.Renew(context.Background(), foreign, nil); !errors.Is(err, ErrInvalidCertificate) {
		t.Errorf("Renew of another CA's certificate: err = %v, want ErrInvalidCertificate", err)
	}
	if _, err := ca.Renew(context.Background(), ca.inter, nil); !errors.Is(err, ErrInvalidCertificate) {
		t.Errorf("Renew of the intermediate: err = %v, want ErrInvalidCertificate", err)
	}
	if _, err := ca.Renew(context.Background(), nil, nil); !errors.Is(err, ErrInvalidCertificate) {
		t.Errorf("Renew(nil): err = %v, want ErrInvalidCertificate", err)
	}

	short := enroll(t, ca, "web-2").chain[0]
	if d := short.NotAfter.Sub(short.NotBefore); d > certBackdate+2*time.Second {
		t.Fatalf("1s certificate spans %v", d)
	}
	waitUntil(t, 5*time.Second, "the certificate to expire", func() bool {
		return time.Now().After(short.NotAfter.Add(100 * time.Millisecond))
	})
	if _, err := ca.Renew(context.Background(), short, nil); !errors.Is(err, ErrInvalidCertificate) {
		t.Errorf("Renew of an expired certificate: err = %v, want ErrInvalidCertificate", err)
	}
}

func TestIssueServerCertificate(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 2*time.Hour)
	cert, err := ca.IssueServerCertificate("cp-1", []string{"localhost", "CP1.example.com", "127.0.0.1", "::1", "localhost"})
	if err != nil {
		t.Fatalf("IssueServerCertificate: %v", err)
	}
	if cert.Leaf == nil || len(cert.Certificate) != 3 {
		t.Fatalf("Leaf=%v, %d certificates; want leaf set and leaf, intermediate, root", cert.Leaf != nil, len(cert.Certificate))
	}
	leaf := cert.Leaf
	if string(cert.Certificate[1]) != string(ca.inter.Raw) || string(cert.Certificate[2]) != string(ca.root.Raw) {
		t.Error("chain is not leaf, intermediate, root")
	}
	if !publicKeysEqual(cert.PrivateKey.(crypto.Signer).Public(), leaf.PublicKey) {
		t.Error("private key does not match the leaf")
	}
	if id, err := pki.ServerID(leaf); err != nil || id != "cp-1" {
		t.Errorf("ServerID = %q, %v", id, err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost", "cp1.example.com"}) {
		t.Errorf("DNSNames = %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", leaf.IPAddresses)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ExtKeyUsage = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if d := time.Until(leaf.NotAfter); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("server certificate lives %v more, want about 2h", d)
	}
	inters := x509.NewCertPool()
	inters.AddCert(ca.inter)
	for _, host := range []string{"localhost", "cp1.example.com", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.RootPool(), Intermediates: inters}); err != nil {
			t.Errorf("not valid for %s: %v", host, err)
		}
	}
	if _, err := ca.Renew(context.Background(), leaf, nil); err != nil {
		t.Errorf("Renew of a server certificate: %v", err)
	}

	for _, bad := range []struct {
		id    string
		hosts []string
	}{
		{"", nil},
		{"CP 1", nil},
		{"cp-1", []string{"localhost:8443"}},
		{"cp-1", []string{""}},
		{"cp-1", []string{"https://cp1.example.com"}},
	} {
		if _, err := ca.IssueServerCertificate(bad.id, bad.hosts); err == nil {
			t.Errorf("IssueServerCertificate(%q, %q) succeeded", bad.id, bad.hosts)
		}
	}
}
