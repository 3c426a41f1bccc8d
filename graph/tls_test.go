package graph

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
)

// testCA is a root CA for tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  string
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// leaf issues a server certificate for names valid from..until with key
// (nil: a new P-256 key); it returns the certificate and key PEMs.
func (ca *testCA) leaf(t testing.TB, key crypto.Signer, from, until time.Time, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: from, NotAfter: until, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))
}

// TestCertInstallCheck walks installCertificate's validator through each
// refusal: every one is a validate.Error (INVALID_INPUT) naming the check,
// and none quotes the key.
func TestCertInstallCheck(t *testing.T) {
	ca, other := newTestCA(t, "Test Root"), newTestCA(t, "Other Root")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	now := time.Now()
	day := 24 * time.Hour
	good, goodKey := ca.leaf(t, nil, now.Add(-day), now.Add(30*day), "shop.example.com", "www.shop.example.com")
	_, strayKey := ca.leaf(t, nil, now.Add(-day), now.Add(30*day), "shop.example.com")
	expired, expiredKey := ca.leaf(t, nil, now.Add(-60*day), now.Add(-day), "shop.example.com")
	early, earlyKey := ca.leaf(t, nil, now.Add(day), now.Add(30*day), "shop.example.com")
	untrusted, untrustedKey := other.leaf(t, nil, now.Add(-day), now.Add(30*day), "shop.example.com")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, _ := ca.leaf(t, rsaKey, now.Add(-day), now.Add(30*day), "shop.example.com")
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecCert, _ := ca.leaf(t, ecKey, now.Add(-day), now.Add(30*day), "*.example.com")
	sec1DER, _ := x509.MarshalECPrivateKey(ecKey)
	sec1 := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER}))

	for _, c := range []struct {
		name                  string
		domain, cert, key, ch string
		untrusted             bool
		want                  string // "" : accepted
	}{
		{"good", "shop.example.com", good, goodKey, "", false, ""},
		{"www name", "www.shop.example.com", good, goodKey, "", false, ""},
		{"pkcs1 rsa", "shop.example.com", rsaCert, pkcs1, "", false, ""},
		{"sec1 ec wildcard", "shop.example.com", ecCert, sec1, "", false, ""},
		{"root as chain", "shop.example.com", good, goodKey, ca.pem, false, ""},
		{"mismatched key", "shop.example.com", good, strayKey, "", false, "does not match"},
		{"expired", "shop.example.com", expired, expiredKey, "", false, "expired"},
		{"not yet valid", "shop.example.com", early, earlyKey, "", false, "not valid before"},
		{"wrong name", "other.example.com", good, goodKey, "", false, "does not cover other.example.com"},
		{"untrusted", "shop.example.com", untrusted, untrustedKey, "", false, "does not verify to a trusted root"},
		{"untrusted allowed", "shop.example.com", untrusted, untrustedKey, "", true, ""},
		{"key as certificate", "shop.example.com", goodKey, goodKey, "", false, "give it in privateKeyPEM"},
		{"key in chain", "shop.example.com", good, goodKey, goodKey, false, "give it in privateKeyPEM"},
		{"certificate as key", "shop.example.com", good, good, "", false, "unsupported PEM block"},
		{"two keys", "shop.example.com", good, goodKey + strayKey, "", false, "more than one PEM block"},
		{"no certificate", "shop.example.com", "", goodKey, "", false, "no CERTIFICATE"},
		{"garbage", "shop.example.com", "hello", goodKey, "", false, "not PEM"},
		{"garbage key", "shop.example.com", good, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "", false, "does not parse"},
		{"encrypted key", "shop.example.com", good, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "", false, "encrypted"},
		{"huge", "shop.example.com", strings.Repeat("A", maxCertPEMBytes+1), goodKey, "", false, "KiB"},
		{"ca as leaf", "shop.example.com", ca.pem, goodKey, "", false, "does not match"},
	} {
		got, err := CheckInstalledCertificate(c.domain, c.cert, c.key, c.ch, c.untrusted, roots, now)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", c.name, err)
				continue
			}
			if strings.Contains(got.ChainPEM, "PRIVATE KEY") || len(got.KeyPKCS8) == 0 {
				t.Errorf("%s: chain %q, key %d bytes", c.name, got.ChainPEM, len(got.KeyPKCS8))
			}
			if got.Trusted == c.untrusted {
				t.Errorf("%s: trusted %v", c.name, got.Trusted)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted, want %q", c.name, c.want)
			continue
		}
		if code, _ := classify(err); code != CodeInvalidInput || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %s %v, want INVALID_INPUT with %q", c.name, code, err, c.want)
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "MI") {
			t.Errorf("%s: the error quotes key material: %v", c.name, err)
		}
	}
	// A small RSA key is refused, whatever else holds.
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallCert, _ := ca.leaf(t, small, now.Add(-day), now.Add(30*day), "shop.example.com")
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}))
	if _, err := CheckInstalledCertificate("shop.example.com", smallCert, smallPEM, "", false, roots, now); err == nil || !strings.Contains(err.Error(), "1024-bit") {
		t.Errorf("1024-bit key: %v", err)
	}
}

// FuzzCheckInstalledCertificate: arbitrary PEM input never panics, an
// error never quotes a private key, and what is accepted carries no key.
func FuzzCheckInstalledCertificate(f *testing.F) {
	ca := newTestCA(f, "Fuzz Root")
	now := time.Now()
	cert, key := ca.leaf(f, nil, now.Add(-time.Hour), now.Add(time.Hour), "fuzz.example.com")
	f.Add(cert, key, "")
	f.Add(cert, key, ca.pem)
	f.Add(key, cert, "")
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n", "junk")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM, chainPEM string) {
		got, err := CheckInstalledCertificate("fuzz.example.com", certPEM, keyPEM, chainPEM, true, roots, now)
		if err != nil {
			if code, _ := classify(err); code != CodeInvalidInput {
				t.Fatalf("code %s: %v", code, err)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error quotes a key: %v", err)
			}
			return
		}
		if strings.Contains(got.ChainPEM, "PRIVATE KEY") {
			t.Fatalf("accepted chain carries a key: %q", got.ChainPEM)
		}
		if _, err := x509.ParsePKCS8PrivateKey(got.KeyPKCS8); err != nil {
			t.Fatalf("key not PKCS#8: %v", err)
		}
	})
}

// The events certificateEvents sends after the last one sent: those after
// it in the list, or, once the bounded list dropped it, the later ones.
func TestCertNewEvents(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0).UTC() }
	evs := []store.CertEvent{{At: at(1), Kind: "requested"}, {At: at(2), Kind: "ordering"}, {At: at(3), Kind: "issued"}}
	if got := newCertEvents(evs, store.CertEvent{}); len(got) != 3 {
		t.Fatalf("from nothing: %v", got)
	}
	if got := newCertEvents(evs, evs[1]); len(got) != 1 || got[0].Kind != "issued" {
		t.Fatalf("after ordering: %v", got)
	}
	if got := newCertEvents(evs, evs[2]); len(got) != 0 {
		t.Fatalf("after the last: %v", got)
	}
	if got := newCertEvents(evs[2:], store.CertEvent{At: at(2), Kind: "dropped"}); len(got) != 1 {
		t.Fatalf("after a dropped one: %v", got)
	}
}

// certName takes a domain or *.domain, canonical; a star anywhere else
// is refused.
func TestCertNames(t *testing.T) {
	for in, want := range map[string]string{"WWW.Shop.Example.com": "www.shop.example.com", "*.shop.example.com": "*.shop.example.com"} {
		if got, err := certName(in); err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"*.*.example.com", "a.*.example.com", "*example.com", "", "exa mple.com", "*."} {
		if got, err := certName(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
	if !withinAny("mail.shop.example.com", []string{"shop.example.com"}) || withinAny("evilshop.example.com", []string{"shop.example.com"}) {
		t.Error("withinAny")
	}
}

// Orders are limited per certificate (a couple at once) and per user (a
// burst, then one every certOrderEvery), each refusal RATE_LIMITED.
func TestCertOrderGate(t *testing.T) {
	var g certOrderGate
	for i := range 2 {
		if err := g.allow("u", "a.example"); err != nil {
			t.Fatalf("order %d of a certificate refused: %v", i+1, err)
		}
	}
	if err := g.allow("u", "a.example"); err == nil {
		t.Fatal("a third order of the same certificate at once admitted")
	} else if code, _ := classify(err); code != CodeRateLimited {
		t.Fatalf("code %s", code)
	}
	// The per-certificate refusal did not spend the user's burst; the
	// user's burst is certOrderBurst orders in all.
	spent := 2
	for i := 0; spent < certOrderBurst; i++ {
		if err := g.allow("u", "c"+strconv.Itoa(i)+".example"); err != nil {
			t.Fatalf("order %d refused: %v", spent+1, err)
		}
		spent++
	}
	for range 3 {
		if err := g.allow("u", "z.example"); err == nil {
			t.Fatal("an order past the user's burst admitted")
		}
	}
	// The user's refusals did not spend z's own burst.
	for i := range 2 {
		if err := g.allow("other", "z.example"); err != nil {
			t.Fatalf("order %d of z by another user refused: %v", i+1, err)
		}
	}
	if err := g.allow("other", "y.example"); err != nil {
		t.Fatalf("another user refused: %v", err)
	}
}

// countCertOrder: a user's orders of one certificate are counted over a
// sliding week (older ones dropped from the record), the fourth refused;
// a renewal of a certificate served for less than a day is refused; an
// admin is refused neither, and its orders are counted, the list bounded.
func TestCertOrderCount(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	user := auth.Principal{Name: "u", Role: store.RoleUser, Account: "a"}
	admin := auth.Principal{Name: "root", Role: store.RoleAdmin}
	days := func(d ...float64) []time.Time {
		var out []time.Time
		for _, x := range d {
			out = append(out, now.Add(-time.Duration(x*24*float64(time.Hour))))
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		who       auth.Principal
		orders    []time.Time
		notBefore time.Time
		renew     bool
		refused   string
		kept      int
	}{
		{name: "first", who: user, kept: 1},
		{name: "third", who: user, orders: days(6, 1), kept: 3},
		{name: "fourth", who: user, orders: days(6, 3, 1), refused: "3 times in the last 7 days"},
		{name: "old ones drop out", who: user, orders: days(9, 8, 7, 1), kept: 2},
		{name: "admin over the limit", who: admin, orders: days(3, 2, 1), kept: 4},
		{name: "admin list bounded", who: admin, orders: days(6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5), kept: maxOrderRequests},
		{name: "renew a fresh one", who: user, notBefore: now.Add(-23 * time.Hour), renew: true, refused: "less than 24 hours ago"},
		{name: "request over a fresh one", who: user, notBefore: now.Add(-time.Hour), kept: 1},
		{name: "renew a day-old one", who: user, notBefore: now.Add(-25 * time.Hour), renew: true, kept: 1},
		{name: "admin renews a fresh one", who: admin, notBefore: now.Add(-time.Hour), renew: true, kept: 1},
	} {
		c := &store.Certificate{ID: "a.example", OrderRequests: slices.Clone(tc.orders)}
		c.Status.NotBefore = tc.notBefore
		err := countCertOrder(tc.who, c, now, tc.renew)
		if tc.refused != "" {
			if code, _ := classify(err); code != CodeRateLimited || !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("%s: %v, want RATE_LIMITED (%s)", tc.name, err, tc.refused)
			}
			if !slices.Equal(c.OrderRequests, tc.orders) {
				t.Errorf("%s: a refusal changed the orders: %v", tc.name, c.OrderRequests)
			}
			continue
		}
		if err != nil || len(c.OrderRequests) != tc.kept || !c.OrderRequests[len(c.OrderRequests)-1].Equal(now) {
			t.Errorf("%s: %v, orders %v; want %d ending now", tc.name, err, c.OrderRequests, tc.kept)
		}
	}
}
