package mail_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// issueTestCert makes a CA and a leaf for names signed by it: chain
// (leaf, CA) and key PEM.
func issueTestCert(t testing.TB, names ...string) (chainPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "npanel test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	chainPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), leaf
}

// imapsLeaf is the leaf Dovecot's IMAPS serves for SNI name.
func (s *stack) imapsLeaf(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", s.p.IMAPSListen, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("IMAPS with SNI %s: %v", name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// submissionLeaf is the leaf Exim serves after STARTTLS on the submission
// port for SNI name.
func (s *stack) submissionLeaf(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.p.SubmissionListen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	expect := func(code string) {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("SMTP: %v", err)
			}
			if !strings.HasPrefix(l, code) {
				t.Fatalf("SMTP: %q, want %s", l, code)
			}
			if len(l) > 3 && l[3] == ' ' {
				return
			}
		}
	}
	expect("220")
	fmt.Fprintf(conn, "EHLO client.test\r\n")
	expect("250")
	fmt.Fprintf(conn, "STARTTLS\r\n")
	expect("220")
	tc := tls.Client(conn, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STARTTLS with SNI %s: %v", name, err)
	}
	return tc.ConnectionState().PeerCertificates[0]
}

func TestMailSNICertificate(t *testing.T) {
	s := startStackWith(t, false)
	ctx := testenv.Context(t)
	const host = "mail.npt-sni.example.com"
	node := s.imapsLeaf(t, "mail.node.test")

	chain, key, leaf := issueTestCert(t, host)
	reloaded, err := s.mod.InstallCertificate(ctx, s.env, host, chain, key)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if fmt.Sprint(reloaded) != "[dovecot exim]" {
		t.Errorf("reloaded %v", reloaded)
	}
	for _, name := range []string{host, strings.ToUpper(host)} {
		if got := s.imapsLeaf(t, name); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("IMAPS %s: served %v, want the installed leaf", name, got.Subject)
		}
		if got := s.submissionLeaf(t, name); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("submission %s: served %v, want the installed leaf", name, got.Subject)
		}
	}
	// Other names, and none, get the node's certificate. (Exim's GnuTLS
	// refuses a handshake whose SNI is not a host name outright.)
	if got := s.imapsLeaf(t, "../../etc/passwd"); got.SerialNumber.Cmp(node.SerialNumber) != 0 {
		t.Errorf("IMAPS with a path as SNI: served %v, want the node's", got.Subject)
	}
	for _, name := range []string{"mail.other.example.com", ""} {
		if got := s.imapsLeaf(t, name); got.SerialNumber.Cmp(node.SerialNumber) != 0 {
			t.Errorf("IMAPS %q: served %v, want the node's", name, got.Subject)
		}
		if got := s.submissionLeaf(t, name); got.SerialNumber.Cmp(node.SerialNumber) != 0 {
			t.Errorf("submission %q: served %v, want the node's", name, got.Subject)
		}
	}

	// A mismatched key is refused; the installed pair stays.
	chain2, _, _ := issueTestCert(t, host)
	if _, err := s.mod.InstallCertificate(ctx, s.env, host, chain2, key); err == nil {
		t.Fatal("mismatched key accepted")
	}
	if _, err := s.mod.InstallCertificate(ctx, s.env, "../x", chain, key); err == nil {
		t.Fatal("host ../x accepted")
	}
	if got := s.imapsLeaf(t, host); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after refusal: served %v", got.Subject)
	}

	if _, err := s.mod.RemoveCertificate(ctx, s.env, host); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if got := s.imapsLeaf(t, host); got.SerialNumber.Cmp(node.SerialNumber) != 0 {
		t.Errorf("IMAPS after remove: served %v, want the node's", got.Subject)
	}
	if got := s.submissionLeaf(t, host); got.SerialNumber.Cmp(node.SerialNumber) != 0 {
		t.Errorf("submission after remove: served %v, want the node's", got.Subject)
	}
}

// TestMailSNIBurst: certificates installed at once share reloads, and
// every host is served its own afterwards.
func TestMailSNIBurst(t *testing.T) {
	const n = 20
	s := startStackWith(t, false)
	ctx := testenv.Context(t)
	hosts := make([]string, n)
	pairs := make([][2][]byte, n)
	leaves := make([]*x509.Certificate, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("mail.npt-burst%d.example.com", i)
		c, k, l := issueTestCert(t, hosts[i])
		pairs[i], leaves[i] = [2][]byte{c, k}, l
	}
	before := s.m.Reloads("dovecot") + s.m.Reloads("exim")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.mod.InstallCertificate(ctx, s.env, hosts[i], pairs[i][0], pairs[i][1])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("install %s: %v", hosts[i], err)
		}
	}
	reloads := s.m.Reloads("dovecot") + s.m.Reloads("exim") - before
	t.Logf("%d installs: %d reloads (Dovecot and Exim together)", n, reloads)
	if reloads >= 2*n {
		t.Errorf("%d reloads for %d installs: not coalesced", reloads, n)
	}
	for _, i := range []int{0, n - 1} {
		if got := s.imapsLeaf(t, hosts[i]); got.SerialNumber.Cmp(leaves[i].SerialNumber) != 0 {
			t.Errorf("IMAPS %s: served %v", hosts[i], got.Subject)
		}
		if got := s.submissionLeaf(t, hosts[i]); got.SerialNumber.Cmp(leaves[i].SerialNumber) != 0 {
			t.Errorf("submission %s: served %v", hosts[i], got.Subject)
		}
	}
}
