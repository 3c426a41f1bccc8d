package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode"
	"unicode/utf8"

	"go.step.sm/crypto/jose"

	"github.com/npanel/npanel/pki"
)

// Material is the CA's persistent key material. The control plane stores it in
// etcd (JSON), so all server replicas share one CA.
type Material struct {
	RootCert         []byte `json:"rootCert"`         // PEM
	RootKey          []byte `json:"rootKey"`          // PEM, PKCS#8
	IntermediateCert []byte `json:"intermediateCert"` // PEM
	IntermediateKey  []byte `json:"intermediateKey"`  // PEM, PKCS#8
	ProvisionerKey   []byte `json:"provisionerKey"`   // private JWK (JSON) that signs join tokens
}

const (
	rootLifetime         = 10 * 365 * 24 * time.Hour
	intermediateLifetime = 5 * 365 * 24 * time.Hour
	// caBackdate keeps a freshly generated CA usable on a replica whose clock
	// is a little behind the one that generated it.
	caBackdate = time.Hour
	// maxClusterNameLen keeps "<cluster> Intermediate CA" within the 64
	// characters RFC 5280 allows in a common name.
	maxClusterNameLen = 40
)

// GenerateMaterial creates a new root (10 years, path length 1), an
// intermediate signed by it (5 years, path length 0) and the JWK provisioner
// key, all ECDSA P-256. minica is not used because its CAs live 24 hours.
func GenerateMaterial(clusterName string) (*Material, error) {
	if err := validClusterName(clusterName); err != nil {
		return nil, fmt.Errorf("generate CA material: %w", err)
	}
	now := time.Now()

	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	rootTmpl, err := caTemplate(clusterName+" Root CA", clusterName, now, rootLifetime, 1)
	if err != nil {
		return nil, err
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}

	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate intermediate key: %w", err)
	}
	interTmpl, err := caTemplate(clusterName+" Intermediate CA", clusterName, now, intermediateLifetime, 0)
	if err != nil {
		return nil, err
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("create intermediate certificate: %w", err)
	}
	inter, err := x509.ParseCertificate(interDER)
	if err != nil {
		return nil, fmt.Errorf("parse intermediate certificate: %w", err)
	}

	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("generate provisioner key: %w", err)
	}
	provKey, err := json.Marshal(jwk)
	if err != nil {
		return nil, fmt.Errorf("encode provisioner key: %w", err)
	}

	m := &Material{
		RootCert:         pki.EncodeCertsPEM([]*x509.Certificate{root}),
		IntermediateCert: pki.EncodeCertsPEM([]*x509.Certificate{inter}),
		ProvisionerKey:   provKey,
	}
	if m.RootKey, err = pki.EncodeKeyPEM(rootKey); err != nil {
		return nil, err
	}
	if m.IntermediateKey, err = pki.EncodeKeyPEM(interKey); err != nil {
		return nil, err
	}
	return m, nil
}

func caTemplate(cn, cluster string, now time.Time, lifetime time.Duration, pathLen int) (*x509.Certificate, error) {
	sn, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"nPanel"}, OrganizationalUnit: []string{cluster}},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 bits: RFC 5280 allows up to 20 octets and CA/B asks for at least 64
	// bits of entropy.
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return sn.Add(sn, big.NewInt(1)), nil // never zero
}

func validClusterName(name string) error {
	switch {
	case name == "":
		return errors.New("cluster name is empty")
	case len(name) > maxClusterNameLen:
		return fmt.Errorf("cluster name %.20q... is %d bytes long, the maximum is %d", name, len(name), maxClusterNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("cluster name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("cluster name %q contains the non-printable character %U", name, r)
		}
	}
	return nil
}

// parsedMaterial is Material decoded and checked for consistency.
type parsedMaterial struct {
	root     *x509.Certificate
	inter    *x509.Certificate
	interKey crypto.Signer
	provKey  *jose.JSONWebKey // private
}

func (m *Material) parse() (*parsedMaterial, error) {
	if m == nil {
		return nil, errors.New("no CA material")
	}
	var p parsedMaterial
	root, err := parseOneCert(m.RootCert, "root")
	if err != nil {
		return nil, err
	}
	if !root.IsCA || !root.BasicConstraintsValid {
		return nil, errors.New("root certificate is not a CA")
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("root certificate is not self-signed: %w", err)
	}
	// The root key is not needed to run the CA, only to re-issue the
	// intermediate; when present it must at least belong to the root.
	if len(m.RootKey) != 0 {
		rk, err := pki.ParseKeyPEM(m.RootKey)
		if err != nil {
			return nil, fmt.Errorf("root key: %w", err)
		}
		if !publicKeysEqual(rk.Public(), root.PublicKey) {
			return nil, errors.New("root key does not match the root certificate")
		}
	}
	p.root = root

	if p.inter, err = parseOneCert(m.IntermediateCert, "intermediate"); err != nil {
		return nil, err
	}
	if !p.inter.IsCA || !p.inter.BasicConstraintsValid {
		return nil, errors.New("intermediate certificate is not a CA")
	}
	if err := p.inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("intermediate certificate is not signed by the root: %w", err)
	}
	if p.interKey, err = pki.ParseKeyPEM(m.IntermediateKey); err != nil {
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	if !publicKeysEqual(p.interKey.Public(), p.inter.PublicKey) {
		return nil, errors.New("intermediate key does not match the intermediate certificate")
	}

	var jwk jose.JSONWebKey
	if err := json.Unmarshal(m.ProvisionerKey, &jwk); err != nil {
		return nil, fmt.Errorf("provisioner key: %w", err)
	}
	// Tokens are signed ES256, so only a P-256 key will do.
	if k, ok := jwk.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("provisioner key: want a private ECDSA P-256 JWK, got %T", jwk.Key)
	}
	if jwk.KeyID == "" {
		if jwk.KeyID, err = jose.Thumbprint(&jwk); err != nil {
			return nil, fmt.Errorf("provisioner key: %w", err)
		}
	}
	jwk.Algorithm = jose.ES256
	p.provKey = &jwk
	return &p, nil
}

func parseOneCert(data []byte, what string) (*x509.Certificate, error) {
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s certificate: %w", what, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s certificate: want one certificate, got %d", what, len(certs))
	}
	return certs[0], nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
