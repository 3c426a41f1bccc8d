package tls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf returns a chain (leaf, CA) for names valid from nb to na, and the
// leaf's PKCS#8 DER key.
func (ca *testCA) leaf(t testing.TB, names []string, nb, na time.Time) (chain, keyDER []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...), kd
}

func installEnv(t testing.TB) (*Module, *recorder, *recorder, *actions.Env) {
	web, mail := &recorder{}, &recorder{}
	env := &actions.Env{Logger: testLogger(), DataDir: t.TempDir(),
		Unseal: func(sealed []byte, context string) ([]byte, error) {
			c, p, ok := strings.Cut(string(sealed), "\x00")
			if !ok || c != context {
				return nil, errWrongContext
			}
			return []byte(p), nil
		}}
	return NewModule(web, mail), web, mail, env
}

var errWrongContext = &actions.Error{Reason: agentpb.ErrorReason_ERROR_REASON_INVALID, Err: context.Canceled}

func TestInstall(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	good, goodKey := ca.leaf(t, []string{"example.com", "www.example.com", "mail.example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	_, otherKey := ca.leaf(t, []string{"example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	expired, expiredKey := ca.leaf(t, []string{"example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	future, futureKey := ca.leaf(t, []string{"example.com"}, now.Add(time.Hour), now.Add(24*time.Hour))
	wrong, wrongKey := ca.leaf(t, []string{"example.net"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	nomail, nomailKey := ca.leaf(t, []string{"example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))

	cases := []struct {
		name      string
		chain     []byte
		key       []byte
		context   string
		mail      bool
		untrusted bool
		want      string // "" success, else a part of the INVALID error
	}{
		{name: "ok", chain: good, key: goodKey, untrusted: true, mail: true},
		{name: "untrusted root", chain: good, key: goodKey, want: "does not verify to a trusted root"},
		{name: "mismatched key", chain: good, key: otherKey, untrusted: true, want: "does not match"},
		{name: "expired", chain: expired, key: expiredKey, untrusted: true, want: "expired"},
		{name: "not yet valid", chain: future, key: futureKey, untrusted: true, want: "not valid before"},
		{name: "wrong name", chain: wrong, key: wrongKey, untrusted: true, want: "does not cover example.com"},
		{name: "mail not covered", chain: nomail, key: nomailKey, untrusted: true, mail: true, want: "does not cover mail.example.com"},
		{name: "sealed for another certificate", chain: good, key: goodKey, untrusted: true, context: agentpb.CertificateKeySealContext("other"), want: "cannot unseal"},
		{name: "not a key", chain: good, key: []byte("garbage"), untrusted: true, want: "PKCS#8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, web, mail, env := installEnv(t)
			ctxt := c.context
			if ctxt == "" {
				ctxt = agentpb.CertificateKeySealContext("cert-1")
			}
			a := m.NewInstall(&agentpb.InstallCertificateAction{
				Id: "cert-1", Username: "alice", Site: "example.com", ChainPem: c.chain,
				SealedPrivateKey: []byte(ctxt + "\x00" + string(c.key)), Mail: c.mail, AllowUntrusted: c.untrusted,
			})
			if err := a.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			out, err := a.Apply(context.Background(), env)
			if c.want != "" {
				if err == nil || actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_INVALID || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v (%s), want INVALID with %q", err, actions.ReasonOf(err), c.want)
				}
				if len(web.installs)+len(mail.installs) != 0 {
					t.Fatal("installed anyway")
				}
				// Nothing of the key in the error.
				if strings.Contains(err.Error(), "PRIVATE KEY") {
					t.Fatal("key material in the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res := out.(*agentpb.CertificateResult)
			if !slices.Equal(res.Domains, []string{"example.com", "www.example.com", "mail.example.com"}) || res.Issuer != "test root" {
				t.Errorf("result %+v", res)
			}
			w, ml := web.last(t), mail.last(t)
			if w.host != "example.com" || ml.host != "mail.example.com" {
				t.Errorf("installed for %q and %q", w.host, ml.host)
			}
			k, err := parseKeyPEM(w.key)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := x509.ParsePKCS8PrivateKey(c.key)
			if !samePublicKey(want.(crypto.Signer).Public(), k.Public()) {
				t.Error("installed another key")
			}
		})
	}
}

func TestRemove(t *testing.T) {
	m, web, mail, env := installEnv(t)
	a := m.NewRemove(&agentpb.RemoveCertificateAction{Id: "cert-1", Username: "alice", Site: "example.com", Mail: true})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(web.removes, []string{"example.com", "webmail.example.com"}) || !slices.Equal(mail.removes, []string{"mail.example.com"}) {
		t.Errorf("removed %v %v", web.removes, mail.removes)
	}
}

// overlapRecorder notices two installs for one host at once.
type overlapRecorder struct {
	recorder
	mu      sync.Mutex
	active  map[string]int
	overlap bool
}

func (o *overlapRecorder) InstallCertificate(ctx context.Context, env *actions.Env, host string, chainPEM, keyPEM []byte) ([]string, error) {
	o.mu.Lock()
	o.active[host]++
	if o.active[host] > 1 {
		o.overlap = true
	}
	o.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	o.mu.Lock()
	o.active[host]--
	o.mu.Unlock()
	return o.recorder.InstallCertificate(ctx, env, host, chainPEM, keyPEM)
}

// Actions on one site are serialised: the later cannot install under the
// earlier.
func TestSiteLock(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	chain, key := ca.leaf(t, []string{"example.com"}, now.Add(-time.Hour), now.Add(time.Hour))
	_, _, _, env := installEnv(t)
	web := &overlapRecorder{active: map[string]int{}}
	m := NewModule(web, nil)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := m.NewInstall(&agentpb.InstallCertificateAction{Id: "cert-1", Username: "alice", Site: "example.com",
				ChainPem: chain, SealedPrivateKey: []byte(agentpb.CertificateKeySealContext("cert-1") + "\x00" + string(key)), AllowUntrusted: true})
			if _, err := a.Apply(context.Background(), env); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if web.overlap || len(web.installs) != 5 {
		t.Fatalf("overlap %v, %d installs", web.overlap, len(web.installs))
	}
}
