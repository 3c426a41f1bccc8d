package cpaneltest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"time"
)

// The CA that signs the certificates of the archives (CertificatePEM): one
// per test process, so that a test can trust it (CertificateRoots) as
// the archive's certificate is imported.
var testCA = sync.OnceValues(func() (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cpaneltest CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c, key
})

// CertificateRoots is a pool holding the CA of CertificatePEM's
// certificates: with it as the trusted roots, they verify.
func CertificateRoots() *x509.CertPool {
	ca, _ := testCA()
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}
