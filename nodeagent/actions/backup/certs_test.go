package backup

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// fakeCerts stands for the tls module (tested with nginx in its own
// package): the chain and key each site serves.
type fakeCerts struct {
	mu     sync.Mutex
	served map[string][2][]byte
}

func (f *fakeCerts) CertificateKey(_ context.Context, _ *actions.Env, site string, chainPEM []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.served[site]
	if !ok || !bytes.Equal(s[0], chainPEM) {
		return nil, errors.New(site + " serves another certificate")
	}
	return bytes.Clone(s[1]), nil
}

func (f *fakeCerts) ServeKey(_ context.Context, _ *actions.Env, site string, _ bool, chainPEM, keyDER []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.served[site] = [2][]byte{bytes.Clone(chainPEM), bytes.Clone(keyDER)}
	return nil
}

// boughtCert is a self-signed certificate for site and its PKCS#8 key.
func boughtCert(t *testing.T, site string) (chainPEM, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: site}, DNSNames: []string{site},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if keyDER, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyDER
}

// An installed certificate's key goes into the backup (never to disk in
// clear, nor to a log) and comes back served on the sites a whole-account
// restore names; a certificate whose served chain is not the one named is
// a failed item; the state read says which keys the backup holds.
func TestBackupKeepsInstalledCertificateKeys(t *testing.T) {
	n := newNode(t, nodeOpts{})
	const shop, other = "shop.example.com", "other.example.com"
	chain, key := boughtCert(t, shop)
	otherChain, _ := boughtCert(t, other)
	certs := &fakeCerts{served: map[string][2][]byte{shop: {chain, key}}}
	n.m.certs = certs
	res := mustApply(t, n.env, n.m.NewBackupAccount(&agentpb.BackupAccountAction{
		BackupId: "b1", Repository: n.repo(), StateJson: []byte(`{"sites":["shop.example.com"]}`),
		Certificates: []*agentpb.BackupCertificate{{Site: shop, ChainPem: chain}, {Site: other, ChainPem: otherChain}},
	})).(*agentpb.BackupResult)
	if len(res.Failed) != 1 || res.Failed[0].Item != "certificate:"+other {
		t.Fatalf("backup failed items %v, want only certificate:%s", res.Failed, other)
	}
	// The state is JSON: the key would be there in base64.
	b64 := []byte(base64.StdEncoding.EncodeToString(key))
	prefix := filepath.Dir(n.env.DataDir)
	_ = filepath.WalkDir(prefix, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, key) || bytes.Contains(b, b64) {
				t.Errorf("%s holds the certificate's key in clear", p)
			}
		}
		return nil
	})

	// Another node: nothing served yet.
	certs.served = map[string][2][]byte{}
	state, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ZONE})
	if err != nil || !slices.Equal(state.CertificateKeys, []string{shop}) {
		t.Fatalf("state read: keys %v, %v", state.GetCertificateKeys(), err)
	}
	if len(certs.served) != 0 {
		t.Fatal("reading the state served a certificate")
	}
	// A restore that names no site serves nothing.
	all, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, InPlace: true})
	if err != nil || len(certs.served) != 0 || slices.Contains(all.Restored, "certificate:"+shop) {
		t.Fatalf("restore naming no site: served %d, restored %v, %v", len(certs.served), all.GetRestored(), err)
	}
	all, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, InPlace: true,
		CertificateSites: []string{shop, "gone.example.com"}})
	if err != nil || !slices.Contains(all.Restored, "certificate:"+shop) {
		t.Fatalf("restore: restored %v, failed %v, %v", all.GetRestored(), all.GetFailed(), err)
	}
	if got := certs.served[shop]; !bytes.Equal(got[0], chain) || !bytes.Equal(got[1], key) {
		t.Fatal("the restore served another chain or key")
	}
	if log := []byte(n.log.String()); bytes.Contains(log, key) || bytes.Contains(log, b64) {
		t.Fatal("the key is in the agent's log")
	}
	// Certificates come back with the whole account only.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, CertificateSites: []string{shop}}); err == nil {
		t.Fatal("a files restore naming certificates accepted")
	}
}
