package tls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// An ACME account per (directory, email) lives in
// DataDir/acme/<first 16 hex digits of sha256(directory|email)>/:
// account.key (PKCS#8 PEM, 0600) and account.json (the server's account
// object, its URL included). It is registered once; later orders reuse it.
const (
	accountKeyFile = "account.key"
	accountRegFile = "account.json"
)

// account is a lego registration.User.
type account struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (a *account) GetEmail() string                       { return a.email }
func (a *account) GetRegistration() *acme.ExtendedAccount { return a.reg }
func (a *account) GetPrivateKey() crypto.Signer           { return a.key }

// accountDir is the directory of the account for srv.
func accountDir(dataDir string, srv *agentpb.AcmeServer) string {
	sum := sha256.Sum256([]byte(srv.DirectoryUrl + "|" + srv.Email))
	return filepath.Join(dataDir, "acme", hex.EncodeToString(sum[:])[:16])
}

// httpClient is the client for the ACME directory: the system's roots and
// those the control plane hands over for a private CA.
func httpClient(srv *agentpb.AcmeServer) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(srv.RootCasPem) > 0 && !pool.AppendCertsFromPEM(srv.RootCasPem) {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "ACME root CAs: no certificate in PEM")
	}
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}, nil
}

// session is a lego client for one ACME server with the node's account.
type session struct {
	*lego.Client
	acct *account
	hc   *http.Client
	srv  *agentpb.AcmeServer
}

// certifier returns lego's Certifier with sv validating the orders' names
// (lego.Client's own validates them one after another).
func (s *session) certifier(sv *solver) (*certificate.Certifier, error) {
	core, err := api.New(s.hc, userAgent, s.srv.DirectoryUrl, s.acct.reg.Location, s.acct.key)
	if err != nil {
		return nil, classify(fmt.Errorf("ACME directory %s: %w", s.srv.DirectoryUrl, err))
	}
	sv.core = core
	return certificate.NewCertifier(core, sv, certificate.CertifierOptions{Timeout: certTimeout}), nil
}

const (
	userAgent = "npanel-agent"
	// certTimeout bounds the wait for the CA to issue a finalized order.
	certTimeout = 90 * time.Second
)

// client returns a session for srv with the node's account, creating and
// registering the account on first use.
func (m *Module) client(ctx context.Context, env *actions.Env, srv *agentpb.AcmeServer) (*session, error) {
	if env.DataDir == "" {
		return nil, errors.New("agent has no data directory for the ACME account")
	}
	dir := accountDir(env.DataDir, srv)
	unlock, err := m.accounts.Lock(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	hc, err := httpClient(srv)
	if err != nil {
		return nil, err
	}
	acct, err := loadAccount(dir, srv.Email)
	if err != nil {
		return nil, err
	}
	cfg := lego.NewConfig(acct)
	cfg.CADirURL = srv.DirectoryUrl
	cfg.HTTPClient = hc
	cfg.UserAgent = userAgent
	cfg.Certificate.Timeout = certTimeout
	cl, err := lego.NewClient(cfg)
	if err != nil {
		return nil, classify(fmt.Errorf("ACME directory %s: %w", srv.DirectoryUrl, err))
	}
	if acct.reg != nil {
		return &session{Client: cl, acct: acct, hc: hc, srv: srv}, nil
	}
	var reg *acme.ExtendedAccount
	if srv.EabKid != "" {
		hmac, err := eabKey(env, srv)
		if err != nil {
			return nil, err
		}
		reg, err = cl.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{
			TermsOfServiceAgreed: true, Kid: srv.EabKid, HmacEncoded: hmac,
		})
		if err != nil {
			return nil, classify(fmt.Errorf("register ACME account (EAB): %w", err))
		}
	} else {
		reg, err = cl.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, classify(fmt.Errorf("register ACME account: %w", err))
		}
	}
	b, err := json.Marshal(reg)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, accountRegFile), b, 0o600, &atomicfile.Owner{UID: os.Getuid(), GID: os.Getgid()}); err != nil {
		return nil, fmt.Errorf("save ACME account: %w", err)
	}
	acct.reg = reg
	// The client was made before the account had a URL (kid): make the one
	// that signs with it.
	cl, err = lego.NewClient(cfg)
	if err != nil {
		return nil, classify(err)
	}
	return &session{Client: cl, acct: acct, hc: hc, srv: srv}, nil
}

// withAccount runs fn with a client for srv. When the CA no longer knows
// the stored account (its database was reset: staging, or a Pebble
// restarted under npanel dev), the record is dropped and fn runs once more
// with the account registered again, same key.
func (m *Module) withAccount(ctx context.Context, env *actions.Env, srv *agentpb.AcmeServer, fn func(*session) error) error {
	for try := 0; ; try++ {
		s, err := m.client(ctx, env, srv)
		if err != nil {
			return err
		}
		err = fn(s)
		var pd *acme.ProblemDetails
		if try > 0 || !errors.As(err, &pd) || pd.Type != acme.AccountDoesNotExistErrorType {
			return err
		}
		env.Logger.Warn("the ACME server does not know this node's account any more; registering again", "directory", srv.DirectoryUrl)
		if err := m.forgetRegistration(ctx, env, srv); err != nil {
			return err
		}
	}
}

func (m *Module) forgetRegistration(ctx context.Context, env *actions.Env, srv *agentpb.AcmeServer) error {
	dir := accountDir(env.DataDir, srv)
	unlock, err := m.accounts.Lock(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Remove(filepath.Join(dir, accountRegFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ACME account: %w", err)
	}
	return nil
}

// loadAccount reads the account in dir, generating its key when there is
// none yet. The key is written before the account is registered, so a
// crash between the two leaves a key that registers (or finds its account
// again: newAccount with a known key returns it) next time.
func loadAccount(dir, email string) (*account, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ACME account: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ACME account: %w", err)
	}
	acct := &account{email: email}
	keyPath := filepath.Join(dir, accountKeyFile)
	b, err := os.ReadFile(keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pemKey, err := keyPEM(key)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(keyPath, pemKey, 0o600, &atomicfile.Owner{UID: os.Getuid(), GID: os.Getgid()}); err != nil {
			return nil, fmt.Errorf("save ACME account key: %w", err)
		}
		acct.key = key
		return acct, nil
	case err != nil:
		return nil, fmt.Errorf("ACME account key: %w", err)
	}
	key, err := parseKeyPEM(b)
	if err != nil {
		// Never the content: it is a private key.
		return nil, fmt.Errorf("ACME account key %s: %w", keyPath, err)
	}
	acct.key = key
	rb, err := os.ReadFile(filepath.Join(dir, accountRegFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return acct, nil
	case err != nil:
		return nil, fmt.Errorf("ACME account: %w", err)
	}
	var reg acme.ExtendedAccount
	if err := json.Unmarshal(rb, &reg); err != nil || reg.Location == "" {
		// A damaged record: register again (the server returns the
		// account it knows for this key).
		return acct, nil
	}
	acct.reg = &reg
	return acct, nil
}

// eabKey unseals the EAB HMAC key and returns it base64url-encoded, as
// lego sends it. The control plane may seal either the raw key or the
// base64url text CAs hand out; both are accepted.
func eabKey(env *actions.Env, srv *agentpb.AcmeServer) (string, error) {
	if env.Unseal == nil {
		return "", errors.New("agent cannot unseal secrets")
	}
	raw, err := env.Unseal(srv.SealedEabHmac, agentpb.AcmeEABSealContext(srv.EabKid))
	if err != nil {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "ACME EAB HMAC key: cannot unseal it for this node")
	}
	s := strings.TrimSpace(string(raw))
	if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")); err == nil && s != "" {
		return strings.TrimRight(s, "="), nil
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// keyPEM encodes key as PKCS#8 PEM.
func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PKCS#8 PEM private key")
	}
	return parsePKCS8(blk.Bytes)
}

func parsePKCS8(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not a PKCS#8 private key")
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	return s, nil
}
