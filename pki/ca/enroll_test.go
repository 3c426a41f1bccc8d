package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"go.step.sm/crypto/jose"

	"github.com/npanel/npanel/pki"
)

// craftToken signs a token like signToken does, with opts applied last so a
// test can change any claim or header.
func craftToken(t testing.TB, ca *CA, key *jose.JSONWebKey, node string, opts ...token.Options) string {
	t.Helper()
	now := time.Now()
	id, err := randomTokenID()
	if err != nil {
		t.Fatal(err)
	}
	base := []token.Options{
		token.WithJWTID(id),
		token.WithKid(ca.provKey.KeyID),
		token.WithIssuer(pki.JoinIssuer),
		token.WithAudience(pki.JoinAudience),
		token.WithValidity(now, now.Add(10*time.Minute)),
		token.WithSANS([]string{pki.NodeURI(node).String()}),
		token.WithSHA(ca.RootFingerprint()),
	}
	tok, err := provision.New(node, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tok.SignedString(jose.ES256, key.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestEnroll(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	const node = "web-1"

	tok, claims, err := ca.NewJoinToken(node, nil, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Node != node || claims.ID == "" || claims.RootFingerprint != ca.RootFingerprint() {
		t.Errorf("NewJoinToken claims = %+v", claims)
	}
	if d := time.Until(claims.ExpiresAt); d <= 9*time.Minute || d > 10*time.Minute {
		t.Errorf("token expires in %v, want about 10m", d)
	}

	// Agent side: no trust yet, only the token.
	parsed, err := pki.ParseJoinToken(tok)
	if err != nil {
		t.Fatalf("ParseJoinToken: %v", err)
	}
	if parsed.Node != claims.Node || parsed.ID != claims.ID || !parsed.ExpiresAt.Equal(claims.ExpiresAt) || parsed.RootFingerprint != claims.RootFingerprint {
		t.Errorf("ParseJoinToken = %+v, want %+v", parsed, claims)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewNodeCSR(key, parsed.Node, nil)
	if err != nil {
		t.Fatal(err)
	}

	used := newUsedTokens()
	var marked pki.JoinClaims
	chain, got, err := ca.Enroll(context.Background(), tok, csr, func(c pki.JoinClaims) error {
		marked = c
		return used.mark(c)
	})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if got.ID != claims.ID || got.Node != node || marked.ID != claims.ID {
		t.Errorf("Enroll claims = %+v, markUsed got %+v, want ID %s", got, marked, claims.ID)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want 2", len(chain))
	}
	leaf := chain[0]
	if !chain[1].Equal(ca.inter) {
		t.Error("chain[1] is not the intermediate")
	}
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         ca.RootPool(),
		Intermediates: inters,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatalf("leaf does not verify against the root: %v", err)
	}
	if name, err := pki.NodeName(leaf); err != nil || name != node {
		t.Errorf("NodeName(leaf) = %q, %v", name, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://npanel/node/web-1" {
		t.Errorf("leaf URIs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.Subject.CommonName != node {
		t.Errorf("leaf CN = %q", leaf.Subject.CommonName)
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		t.Error("leaf does not certify the agent's key")
	}
	if d := time.Until(leaf.NotAfter); d < DefaultCertLifetime-time.Minute || d > DefaultCertLifetime {
		t.Errorf("leaf lives %v more, want about %v", d, DefaultCertLifetime)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
}

func TestEnrollTokenSingleUse(t *testing.T) {
	t.Parallel()
	ca, m := newTestCA(t, 0)
	// A second replica sharing the material and the used-token record.
	replica := newTestCAFrom(t, m, 0)
	used := newUsedTokens()

	tok, _, err := ca.NewJoinToken("web-1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	csr, err := pki.NewNodeCSR(key, "web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := replica.Enroll(context.Background(), tok, csr, used.mark); err != nil {
		t.Fatalf("first Enroll on a replica: %v", err)
	}
	for name, c := range map[string]*CA{"same replica": replica, "other replica": ca} {
		chain, _, err := c.Enroll(context.Background(), tok, csr, used.mark)
		if !errors.Is(err, pki.ErrTokenUsed) {
			t.Errorf("%s: reused token: err = %v, want ErrTokenUsed", name, err)
		}
		if chain != nil {
			t.Errorf("%s: reused token got a certificate", name)
		}
	}
	if _, _, err := ca.Enroll(context.Background(), tok, csr, nil); err == nil {
		t.Error("Enroll with nil markUsed succeeded")
	}
}

func TestEnrollConcurrentRedemption(t *testing.T) {
	t.Parallel()
	ca, m := newTestCA(t, 0)
	replicas := []*CA{ca, newTestCAFrom(t, m, 0)}
	used := newUsedTokens()
	tok, _, err := ca.NewJoinToken("web-1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	csr, err := pki.NewNodeCSR(key, "web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		successes int
	)
	for i := range n {
		wg.Go(func() {
			_, _, err := replicas[i%2].Enroll(context.Background(), tok, csr, used.mark)
			if err == nil {
				mu.Lock()
				successes++
				mu.Unlock()
			} else if !errors.Is(err, pki.ErrTokenUsed) {
				t.Errorf("Enroll: %v", err)
			}
		})
	}
	wg.Wait()
	if successes != 1 {
		t.Errorf("%d concurrent redemptions succeeded, want 1", successes)
	}
}

func TestEnrollManyNodesConcurrently(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			node := "node-" + string(rune('a'+i))
			e := enroll(t, ca, node)
			if got, err := pki.NodeName(e.chain[0]); err != nil || got != node {
				t.Errorf("NodeName = %q, %v, want %q", got, err, node)
			}
		})
	}
	wg.Wait()
}

func TestEnrollExpiredToken(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	key, _ := pki.NewKey()
	csr, err := pki.NewNodeCSR(key, "web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc     string
		mintedAt time.Time
		ttl      time.Duration
	}{
		// smallstep refuses this one itself.
		{"expired an hour ago", time.Now().Add(-2 * time.Hour), time.Hour},
		// Within smallstep's one-minute leeway: refused by Enroll's own check.
		{"expired seconds ago", time.Now().Add(-15 * time.Second), MinJoinTokenTTL},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tok, _, err := ca.newJoinToken("web-1", nil, tt.ttl, tt.mintedAt)
			if err != nil {
				t.Fatal(err)
			}
			// The agent can still read it, and see that it expired.
			claims, err := pki.ParseJoinToken(tok)
			if err != nil || !claims.ExpiresAt.Before(time.Now()) {
				t.Fatalf("ParseJoinToken = %+v, %v", claims, err)
			}
			used := newUsedTokens()
			_, _, err = ca.Enroll(context.Background(), tok, csr, used.mark)
			if !errors.Is(err, pki.ErrTokenExpired) {
				t.Fatalf("Enroll: err = %v, want ErrTokenExpired", err)
			}
			if errors.Is(err, pki.ErrInvalidToken) {
				t.Errorf("expired token also reported as invalid: %v", err)
			}
			if used.callCount() != 0 {
				t.Error("markUsed called for an expired token")
			}
		})
	}
}

func TestEnrollInvalidToken(t *testing.T) {
	t.Parallel()
	ca, m := newTestCA(t, 0)
	otherCA, _ := newTestCA(t, 0)
	const node = "web-1"

	// Same name and kid as our provisioner, different key: only the
	// signature gives it away.
	impostorKey, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", ca.provKey.KeyID, 0)
	if err != nil {
		t.Fatal(err)
	}
	impostorJSON, err := json.Marshal(impostorKey)
	if err != nil {
		t.Fatal(err)
	}
	mImpostor := *m
	mImpostor.ProvisionerKey = impostorJSON
	impostorCA := newTestCAFrom(t, &mImpostor, 0)

	good, _, err := ca.NewJoinToken(node, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	otherNodeTok, _, err := ca.NewJoinToken("web-2", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	otherParts := strings.Split(otherNodeTok, ".")
	fromOtherCA, _, err := otherCA.NewJoinToken(node, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	fromImpostor, _, err := impostorCA.NewJoinToken(node, nil, 0)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		desc string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "not a token"},
		{"three garbage parts", "a.b.c"},
		{"huge", strings.Repeat("a", 10000)},
		{"truncated signature", good[:len(good)-10]},
		{"payload swapped for another node's", parts[0] + "." + otherParts[1] + "." + parts[2]},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"other CA", fromOtherCA},
		{"same kid, other key", fromImpostor},
		{"wrong audience", craftToken(t, ca, ca.provKey, node, token.WithAudience("https://npanel-ca/1.0/revoke"))},
		{"audience of another CA", craftToken(t, ca, ca.provKey, node, token.WithAudience("https://ca.example.com/1.0/sign"))},
		{"wrong issuer", craftToken(t, ca, ca.provKey, node, token.WithIssuer("someone-else"))},
		{"unknown kid", craftToken(t, ca, ca.provKey, node, token.WithKid("nope"))},
		{"not yet valid", craftToken(t, ca, ca.provKey, node, token.WithValidity(time.Now().Add(20*time.Minute), time.Now().Add(30*time.Minute)))},
		{"wrong root pinned", craftToken(t, ca, ca.provKey, node, token.WithSHA(otherCA.RootFingerprint()))},
		{"SANs not the node", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{"web-1.example.com"}))},
		// Hosts after the URI are allowed only as NodeHosts writes them.
		{"host with a port", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{pki.NodeURI(node).String(), "10.0.0.1:9469"}))},
		{"host in capitals", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{pki.NodeURI(node).String(), "WEB-1.example.com"}))},
		{"hosts unsorted", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{pki.NodeURI(node).String(), "10.0.0.2", "10.0.0.1"}))},
		{"host before the URI", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{"10.0.0.1", pki.NodeURI(node).String()}))},
		{"server identity", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{pki.ServerURI(node).String()}))},
		{"invalid node name", craftToken(t, ca, ca.provKey, "Web_1", token.WithSANS([]string{pki.NodeURI("Web_1").String()}))},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			key, _ := pki.NewKey()
			csr, err := pki.NewNodeCSR(key, node, nil)
			if err != nil {
				t.Fatal(err)
			}
			used := newUsedTokens()
			chain, _, err := ca.Enroll(context.Background(), tt.tok, csr, used.mark)
			if !errors.Is(err, pki.ErrInvalidToken) {
				t.Fatalf("Enroll: err = %v, want ErrInvalidToken", err)
			}
			if chain != nil || used.callCount() != 0 {
				t.Error("a refused token got a certificate or was recorded")
			}
		})
	}
}

func TestEnrollInvalidCSR(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	const node = "web-a"
	p256, _ := pki.NewKey()
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	nodeURI := []*url.URL{pki.NodeURI(node)}
	badSig := mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI})
	badSig.Signature[len(badSig.Signature)-1] ^= 0xff

	tests := []struct {
		desc string
		csr  *x509.CertificateRequest
	}{
		{"nil", nil},
		{"CSR for another node", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web-b"}, URIs: []*url.URL{pki.NodeURI("web-b")}})},
		{"URI for another node", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: []*url.URL{pki.NodeURI("web-b")}})},
		{"extra DNS SAN", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI, DNSNames: []string{"web-a.example.com"}})},
		{"extra IP SAN", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}})},
		{"extra email SAN", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI, EmailAddresses: []string{"a@b.c"}})},
		{"server URI", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: []*url.URL{pki.ServerURI(node)}})},
		{"two URIs", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: append(nodeURI, pki.ServerURI("x"))})},
		{"no URI", mustCSR(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}})},
		{"no common name", mustCSR(t, p256, &x509.CertificateRequest{URIs: nodeURI})},
		{"P-224 key", mustCSR(t, p224, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI})},
		{"RSA-1024 key", mustCSR(t, rsa1024, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}, URIs: nodeURI})},
		{"bad signature", badSig},
	}
	used := newUsedTokens()
	tok, _, err := ca.NewJoinToken(node, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			chain, _, err := ca.Enroll(context.Background(), tok, tt.csr, used.mark)
			if !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("Enroll: err = %v, want ErrInvalidCSR", err)
			}
			if chain != nil {
				t.Error("got a certificate")
			}
		})
	}
	// A refused CSR does not consume the token: the agent can retry.
	if used.callCount() != 0 {
		t.Fatalf("markUsed called %d times for refused CSRs", used.callCount())
	}
	good, err := pki.NewNodeCSR(p256, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Enroll(context.Background(), tok, good, used.mark); err != nil {
		t.Fatalf("Enroll after refused CSRs: %v", err)
	}
}

func TestEnrollKeyTypes(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"p384": p384, "ed25519": ed, "rsa2048": rsa2048} {
		tok, _, err := ca.NewJoinToken(name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewNodeCSR(key, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		chain, _, err := ca.Enroll(context.Background(), tok, csr, newUsedTokens().mark)
		if err != nil {
			t.Errorf("%s: Enroll: %v", name, err)
			continue
		}
		if !publicKeysEqual(key.Public(), chain[0].PublicKey) {
			t.Errorf("%s: wrong key certified", name)
		}
	}
}

func TestEnrollMarkUsedError(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	tok, _, _ := ca.NewJoinToken("web-1", nil, 0)
	key, _ := pki.NewKey()
	csr, _ := pki.NewNodeCSR(key, "web-1", nil)
	storeDown := errors.New("etcd unavailable")
	chain, _, err := ca.Enroll(context.Background(), tok, csr, func(pki.JoinClaims) error { return storeDown })
	if !errors.Is(err, storeDown) || chain != nil {
		t.Fatalf("Enroll = %v, %v; want no chain and the markUsed error", chain, err)
	}
	// Nothing was recorded, so the token is still good.
	if _, _, err := ca.Enroll(context.Background(), tok, csr, newUsedTokens().mark); err != nil {
		t.Fatalf("Enroll after a failed markUsed: %v", err)
	}
}

func TestNewJoinToken(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	_, c, err := ca.NewJoinToken("web-1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.ExpiresAt); d <= MaxJoinTokenTTL-2*time.Second || d > MaxJoinTokenTTL {
		t.Errorf("default ttl: expires in %v, want %v", d, MaxJoinTokenTTL)
	}
	_, c2, err := ca.NewJoinToken("web-1", nil, -time.Second)
	if err != nil || c2.ID == c.ID {
		t.Errorf("negative ttl: %v (ids %s %s, must differ)", err, c.ID, c2.ID)
	}
	for _, tt := range []struct {
		node string
		ttl  time.Duration
	}{
		{"web-1", MaxJoinTokenTTL + time.Second},
		{"web-1", time.Second},
		{"Web-1", 0},
		{"", 0},
	} {
		if _, _, err := ca.NewJoinToken(tt.node, nil, tt.ttl); err == nil {
			t.Errorf("NewJoinToken(%q, nil, %v) succeeded", tt.node, tt.ttl)
		}
	}
}

func TestParseJoinTokenRejects(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	const node = "web-1"
	tests := []struct {
		desc string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "garbage"},
		{"no jti", craftToken(t, ca, ca.provKey, node, func(c *token.Claims) error { c.ID = ""; return nil })},
		{"no sha", craftToken(t, ca, ca.provKey, node, func(c *token.Claims) error { delete(c.ExtraClaims, token.RootSHAClaim); return nil })},
		{"short sha", craftToken(t, ca, ca.provKey, node, token.WithSHA("abcd"))},
		{"uppercase sha", craftToken(t, ca, ca.provKey, node, token.WithSHA(strings.ToUpper(ca.RootFingerprint())))},
		{"no sans", craftToken(t, ca, ca.provKey, node, func(c *token.Claims) error { delete(c.ExtraClaims, token.SANSClaim); return nil })},
		{"no exp", craftToken(t, ca, ca.provKey, node, token.WithValidity(time.Time{}, time.Time{}))},
		{"wrong issuer", craftToken(t, ca, ca.provKey, node, token.WithIssuer("step-cli"))},
		{"wrong audience", craftToken(t, ca, ca.provKey, node, token.WithAudience("https://ca/sign"))},
		{"bad jti", craftToken(t, ca, ca.provKey, node, token.WithJWTID("a/b"))},
		{"sans for another node", craftToken(t, ca, ca.provKey, node, token.WithSANS([]string{pki.NodeURI("web-2").String()}))},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c, err := pki.ParseJoinToken(tt.tok)
			if !errors.Is(err, pki.ErrInvalidToken) {
				t.Fatalf("ParseJoinToken = %+v, %v; want ErrInvalidToken", c, err)
			}
		})
	}
}

func TestEnrollCancelledContext(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t, 0)
	tok, _, _ := ca.NewJoinToken("web-1", nil, 0)
	key, _ := pki.NewKey()
	csr, _ := pki.NewNodeCSR(key, "web-1", nil)
	used := newUsedTokens()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := ca.Enroll(ctx, tok, csr, used.mark); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enroll with a cancelled context: err = %v, want context.Canceled", err)
	}
	if used.callCount() != 0 {
		t.Error("token recorded as used for a cancelled request")
	}
}
