package tls

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/validate"
)

// CertificateKey returns the PKCS#8 DER private key site's vhost serves,
// for the credentials export that seals it to the node an account moves
// to. It returns the key only when the served leaf is the leaf of
// chainPEM (the control plane's record of what is served) and the key is
// that leaf's: a self-signed fallback or a newer certificate never leaves
// under an older record's name. The caller seals the key and clears it.
func (m *Module) CertificateKey(_ context.Context, env *actions.Env, site string, chainPEM []byte) ([]byte, error) {
	if err := validate.CanonicalDomain(site); err != nil {
		return nil, err
	}
	want, err := validChain(chainPEM)
	if err != nil {
		return nil, err
	}
	if env == nil || env.Profile == nil {
		return nil, errors.New("no platform profile")
	}
	chainPath, keyPath := web.CertFiles(env.Profile.Web(), site)
	// The files' names come from a validated domain; the root keeps
	// every read inside the certificate directory all the same.
	root, err := os.OpenRoot(env.Profile.Web().CertDir)
	if err != nil {
		return nil, fmt.Errorf("certificate directory: %w", err)
	}
	defer root.Close()
	servedPEM, err := root.ReadFile(filepath.Base(chainPath))
	if err != nil {
		return nil, fmt.Errorf("served certificate of %s: %w", site, err)
	}
	served, err := parseCerts(servedPEM)
	if err != nil {
		return nil, fmt.Errorf("served certificate of %s: %w", site, err)
	}
	if !bytes.Equal(served[0].Raw, want[0].Raw) {
		return nil, fmt.Errorf("%s serves another certificate (serial %s) than the one to export (serial %s)",
			site, served[0].SerialNumber.Text(16), want[0].SerialNumber.Text(16))
	}
	kp, err := root.ReadFile(filepath.Base(keyPath))
	if err != nil {
		return nil, fmt.Errorf("served key of %s: %w", site, err)
	}
	key, err := parseKeyPEM(kp)
	clear(kp)
	if err != nil {
		// Not the parser's words: nothing about a key reaches a result.
		return nil, fmt.Errorf("served key of %s: not a PKCS#8 PEM private key", site)
	}
	if !samePublicKey(want[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("the served key of %s does not match its certificate", site)
	}
	return x509.MarshalPKCS8PrivateKey(key)
}

// ServeKey serves chainPEM with its PKCS#8 DER key on site (and on
// mail.SITE and webmail.SITE with mail), as the install action does with
// a key a restore brought back from a backup: it checks that the key is
// the leaf's and the leaf still valid for site, not the chain's trust,
// which was checked when it was first installed.
func (m *Module) ServeKey(ctx context.Context, env *actions.Env, site string, mail bool, chainPEM, keyDER []byte) error {
	if err := validate.CanonicalDomain(site); err != nil {
		return err
	}
	chain, err := validChain(chainPEM)
	if err != nil {
		return err
	}
	key, err := parsePKCS8(keyDER)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	if err := checkCertificate(chain, key, site, mail, true, time.Now()); err != nil {
		return err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	defer clear(kp)
	unlock, err := m.sites.Lock(ctx, site)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = m.install(ctx, env, site, mail, chainPEM, kp, chain[0])
	return err
}
