package controlplane

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/tlsalpn01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/pki"
)

// apiACME orders the API's certificate for Config.APIDomain from the ACME
// server of Config.ACME, answering the TLS-ALPN-01 challenge on the API
// listener itself: a ClientHello offering ALPN "acme-tls/1" for the domain
// gets the challenge certificate (GetCertificate), every other one the
// API's certificate. So nothing but the API's own port has to be reachable.
//
// The account key and the certificate's key are made here and kept in
// DataDir/api-acme (0700) in files of mode 0600 — never in etcd, where they
// would be in clear in every backup: each replica orders its own
// certificate. The certificate is renewed when a third of its lifetime is
// left; a failed order keeps the certificate in service and is retried
// with a growing delay.
type apiACME struct {
	s      *Server
	dir    string
	domain string

	mu         sync.Mutex
	challenges map[string]*tls.Certificate // by domain, while an order runs
}

// acmeTLSALPNProto is the ALPN protocol of TLS-ALPN-01 (RFC 8737).
const acmeTLSALPNProto = tlsalpn01.ACMETLS1Protocol

// apiACMERetry bounds the delay between failed orders.
var apiACMERetry = struct{ first, max time.Duration }{30 * time.Second, time.Hour}

// setupAPIACME loads the certificate of an earlier order, if any; the
// order itself runs once the listener serves (run), since the ACME server
// validates through it.
func (s *Server) setupAPIACME() error {
	a := &apiACME{s: s, dir: filepath.Join(s.cfg.DataDir, "api-acme"), domain: s.cfg.APIDomain,
		challenges: map[string]*tls.Certificate{}}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("api acme dir: %w", err)
	}
	s.apiTLS.acme = a
	// lego logs through a logger of its own, to standard output unless
	// told otherwise; it is process-wide, so the last one set wins.
	legolog.SetDefault(s.log.With("component", "acme"))
	cert, err := tls.LoadX509KeyPair(a.path("crt"), a.path("key"))
	switch {
	case err == nil && cert.Leaf != nil && slices.Contains(cert.Leaf.DNSNames, a.domain):
		s.apiTLS.cert.Store(&cert)
		s.log.Info("the API serves HTTPS with its ACME certificate", "domain", a.domain, "not_after", cert.Leaf.NotAfter.UTC())
	case err == nil:
		s.log.Info("the API's stored ACME certificate is for another name; ordering one", "domain", a.domain)
	case !errors.Is(err, os.ErrNotExist):
		s.log.Warn("the API's stored ACME certificate does not load; ordering a new one", "err", err)
	default:
		s.log.Info("ordering the API's certificate from ACME once the listener serves", "domain", a.domain, "directory", s.cfg.ACME.DirectoryURL)
	}
	return nil
}

func (a *apiACME) path(ext string) string {
	return filepath.Join(a.dir, a.domain+"."+ext)
}

// challengeCert answers a TLS-ALPN-01 validation: ok is false for every
// other handshake.
func (a *apiACME) challengeCert(hello *tls.ClientHelloInfo) (*tls.Certificate, bool) {
	if !slices.Contains(hello.SupportedProtos, acmeTLSALPNProto) {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cert, ok := a.challenges[strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))]
	return cert, ok
}

// Present and CleanUp make apiACME lego's TLS-ALPN-01 provider.
func (a *apiACME) Present(_ context.Context, domain, _, keyAuth string) error {
	cert, err := tlsalpn01.ChallengeCert(domain, keyAuth)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.challenges[domain] = cert
	a.mu.Unlock()
	return nil
}

func (a *apiACME) CleanUp(_ context.Context, domain, _, _ string) error {
	a.mu.Lock()
	delete(a.challenges, domain)
	a.mu.Unlock()
	return nil
}

// run orders the certificate when there is none or a third of its
// lifetime is left, until ctx ends.
func (a *apiACME) run(ctx context.Context) {
	retry := apiACMERetry.first
	for {
		wait := time.Duration(0)
		if cur := a.s.apiTLS.cert.Load(); cur != nil {
			leaf := cur.Leaf
			wait = time.Until(leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3))
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		err := a.order(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			retry = apiACMERetry.first
			continue
		}
		a.s.log.Error("order the API's certificate from ACME; retrying", "domain", a.domain, "in", retry, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(retry*2, apiACMERetry.max)
	}
}

// acmeUser is lego's view of the ACME account.
type acmeUser struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *acmeUser) GetEmail() string                       { return u.email }
func (u *acmeUser) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *acmeUser) GetPrivateKey() crypto.Signer           { return u.key }
func (a *apiACME) loadOrCreateKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		return pki.ParseKeyPEM(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	pemKey, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return key, atomicfile.WriteFile(path, pemKey, 0o600, nil)
}

// order runs one ACME order and installs its certificate.
func (a *apiACME) order(ctx context.Context) error {
	cfg := a.s.cfg.ACME
	accountKey, err := a.loadOrCreateKey(filepath.Join(a.dir, "account.key"))
	if err != nil {
		return fmt.Errorf("account key: %w", err)
	}
	user := &acmeUser{email: cfg.Email, key: accountKey}
	lc := lego.NewConfig(user)
	lc.CADirURL = cfg.DirectoryURL
	if lc.CADirURL == "" {
		lc.CADirURL = LetsEncryptDirectory
	}
	lc.UserAgent = "npanel/" + a.s.cfg.Version
	if cfg.RootCAFile != "" {
		b, err := os.ReadFile(cfg.RootCAFile)
		if err != nil {
			return fmt.Errorf("--acme-root-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("--acme-root-ca %s: no PEM certificate in it", cfg.RootCAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		lc.HTTPClient = &http.Client{Timeout: 2 * time.Minute, Transport: tr}
	}
	client, err := lego.NewClient(lc)
	if err != nil {
		return fmt.Errorf("acme client: %w", err)
	}
	if err := client.Challenge.SetTLSALPN01Provider(a); err != nil {
		return err
	}
	// The account is the key's: an existing one is found again, else made.
	if user.reg, err = client.Registration.ResolveAccountByKey(ctx); err != nil {
		if cfg.EABKID != "" {
			hmac, rerr := os.ReadFile(cfg.EABHMACFile)
			if rerr != nil {
				return fmt.Errorf("--acme-eab-hmac-file: %w", rerr)
			}
			user.reg, err = client.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{
				TermsOfServiceAgreed: true, Kid: cfg.EABKID, HmacEncoded: strings.TrimSpace(string(hmac))})
		} else {
			user.reg, err = client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		}
		if err != nil {
			return fmt.Errorf("acme account: %w", err)
		}
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{a.domain}, PrivateKey: key, Bundle: true})
	if err != nil {
		return fmt.Errorf("acme order for %s: %w", a.domain, err)
	}
	pemKey, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(res.Certificate, pemKey)
	if err != nil {
		return fmt.Errorf("acme certificate for %s: %w", a.domain, err)
	}
	// Key first: a crash between the two writes leaves a pair that does
	// not load, and the next start orders again.
	if err := atomicfile.WriteFile(a.path("key"), pemKey, 0o600, nil); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.path("crt"), res.Certificate, 0o644, nil); err != nil {
		return err
	}
	a.s.apiTLS.cert.Store(&cert)
	a.s.log.Info("the API serves HTTPS with a new ACME certificate", "domain", a.domain,
		"issuer", cert.Leaf.Issuer.String(), "not_after", cert.Leaf.NotAfter.UTC())
	return nil
}
