// Package ca is the cluster's embedded certificate authority: it mints join
// tokens, enrols nodes, issues server certificates and renews both. It runs
// on the control plane only; the node side (identities, CSRs, PEM, TLS
// configs, reading a join token) is package pki, which the agent links
// without smallstep's authority and its storage backends.
//
// The CA is smallstep's authority running in-process (authority.NewEmbedded):
// no files, no listener of its own. Every control-plane replica builds one from
// the same Material, kept in etcd, so they are interchangeable: a join token
// minted by one replica is accepted by any other.
//
// Enrolment of a node:
//
//  1. An operator asks a replica for a join token (NewJoinToken): a smallstep
//     one-time token signed by the cluster's JWK provisioner, bound to the node
//     name, valid at most an hour, carrying the root's SHA-256 fingerprint.
//  2. The agent decodes it without trust (pki.ParseJoinToken), generates its key
//     locally (pki.NewKey, pki.NewNodeCSR) and dials the gateway with
//     pki.EnrollClientTLSConfig, which accepts the server only if the root it
//     presents has the fingerprint from the token: the token, obtained out of
//     band, is what makes trusting the server on first contact safe.
//  3. The gateway calls Enroll, which verifies the token through the
//     authority, checks the CSR and, before signing, asks the caller to record
//     the token as used. That record (a put-if-absent in etcd) is what makes the
//     token single-use across replicas; smallstep's own used-token memory is
//     per process and does not survive restarts.
//  4. From then on the agent talks mTLS (pki.AgentTLSConfig / pki.GatewayTLSConfig)
//     and renews its certificate (Renew) before it expires.
package ca

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"

	"github.com/npanel/npanel/pki"
)

const (
	// DefaultCertLifetime is the lifetime of node and server certificates when
	// Options.CertLifetime is zero.
	DefaultCertLifetime = 24 * time.Hour
	// MinCertLifetime is the shortest certificate lifetime New accepts; tests
	// use it to watch certificates expire.
	MinCertLifetime = time.Second

	// certBackdate is subtracted from NotBefore so that a peer whose clock is
	// a little behind accepts a certificate issued just now. smallstep's
	// default, set explicitly because Renew depends on it.
	certBackdate = time.Minute
)

// Options configure a CA.
type Options struct {
	// CertLifetime is the lifetime of node and server certificates; zero means
	// DefaultCertLifetime. Values down to MinCertLifetime are accepted.
	CertLifetime time.Duration
	// Logger receives the CA's own records and, see routeStdLog, possibly the
	// standard logger's. Nil discards.
	Logger *slog.Logger
}

// CA is the cluster's certificate authority. Its methods are safe for
// concurrent use; it holds no state that outlives the process beyond what is
// in Material.
type CA struct {
	auth        *authority.Authority
	root        *x509.Certificate
	inter       *x509.Certificate
	rootPool    *x509.CertPool
	interPool   *x509.CertPool
	fingerprint string
	provKey     *jose.JSONWebKey
	lifetime    time.Duration
	log         *slog.Logger
}

// New starts a CA from its material.
func New(m *Material, opts Options) (*CA, error) {
	lifetime := opts.CertLifetime
	if lifetime == 0 {
		lifetime = DefaultCertLifetime
	}
	if lifetime < MinCertLifetime {
		return nil, fmt.Errorf("new CA: certificate lifetime %v is shorter than the minimum %v", lifetime, MinCertLifetime)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	routeStdLog(opts.Logger)

	pm, err := m.parse()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	now := time.Now()
	if now.After(pm.root.NotAfter) {
		return nil, fmt.Errorf("new CA: root certificate expired at %s", pm.root.NotAfter.UTC().Format(time.RFC3339))
	}
	// softcas does not clip a leaf's validity to its issuer's; a leaf that
	// outlives the intermediate would fail verification halfway through its life.
	if pm.inter.NotAfter.Before(now.Add(lifetime)) {
		return nil, fmt.Errorf("new CA: intermediate certificate expires at %s, before certificates issued now would", pm.inter.NotAfter.UTC().Format(time.RFC3339))
	}

	pub := pm.provKey.Public()
	disableRenewal, allowRenewalAfterExpiry := false, false
	prov := &provisioner.JWK{
		Type: provisioner.TypeJWK.String(),
		Name: pki.JoinIssuer,
		Key:  &pub,
		Claims: &provisioner.Claims{
			MinTLSDur:               &provisioner.Duration{Duration: MinCertLifetime},
			MaxTLSDur:               &provisioner.Duration{Duration: lifetime},
			DefaultTLSDur:           &provisioner.Duration{Duration: lifetime},
			DisableRenewal:          &disableRenewal,
			AllowRenewalAfterExpiry: &allowRenewalAfterExpiry,
		},
	}
	cfg := &config.Config{
		DNSNames: []string{pki.CADNSName},
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{prov},
			Backdate:     &provisioner.Duration{Duration: certBackdate},
			// smallstep refuses tokens issued before the authority started,
			// a stand-in for persistence it does not have. Here a token minted
			// by one replica is redeemed on another, possibly restarted since,
			// and single use is enforced by the caller's record instead.
			DisableIssuedAtCheck: true,
		},
	}
	auth, err := authority.NewEmbedded(
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(pm.root),
		authority.WithX509Signer(pm.inter, pm.interKey),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("new CA: start authority: %w", err)
	}
	// A provisioner that fails to initialise is only logged by smallstep and
	// then refuses every token; fail here instead.
	p, err := auth.LoadProvisionerByName(pki.JoinIssuer)
	if err != nil {
		return nil, fmt.Errorf("new CA: load provisioner: %w", err)
	}
	if u, ok := p.(provisioner.Uninitialized); ok {
		return nil, fmt.Errorf("new CA: provisioner %q failed to initialise: %w", pki.JoinIssuer, u.Reason)
	}

	c := &CA{
		auth:        auth,
		root:        pm.root,
		inter:       pm.inter,
		rootPool:    x509.NewCertPool(),
		interPool:   x509.NewCertPool(),
		fingerprint: pki.Fingerprint(pm.root),
		provKey:     pm.provKey,
		lifetime:    lifetime,
		log:         logger,
	}
	c.rootPool.AddCert(pm.root)
	c.interPool.AddCert(pm.inter)
	logger.Info("CA ready", "root_fingerprint", c.fingerprint,
		"intermediate_not_after", pm.inter.NotAfter.UTC(), "cert_lifetime", lifetime)
	return c, nil
}

// Root is the cluster's root certificate. Callers must not modify it.
func (c *CA) Root() *x509.Certificate { return c.root }

// RootPool is a pool holding only the root. Each call returns a new pool, so
// callers may add to it.
func (c *CA) RootPool() *x509.CertPool { return c.rootPool.Clone() }

// RootFingerprint is the lowercase hex SHA-256 of the root's DER, as printed by
// `step certificate fingerprint`.
func (c *CA) RootFingerprint() string { return c.fingerprint }

// CertLifetime is the lifetime of the certificates this CA issues.
func (c *CA) CertLifetime() time.Duration { return c.lifetime }
