package tls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Install serves a certificate obtained elsewhere.
type Install struct {
	m              *Module
	req            *agentpb.InstallCertificateAction
	allowTestNames bool
	now            func() time.Time
}

// Revoke revokes a certificate at its CA and stops serving it.
type Revoke struct {
	m              *Module
	req            *agentpb.RevokeCertificateAction
	allowTestNames bool
}

// Remove stops serving a site's certificate.
type Remove struct {
	m              *Module
	req            *agentpb.RemoveCertificateAction
	allowTestNames bool
}

// NewInstall builds the action from its wire form.
func (m *Module) NewInstall(req *agentpb.InstallCertificateAction) *Install {
	return &Install{m: m, req: req, now: time.Now}
}

// NewRevoke builds the action from its wire form.
func (m *Module) NewRevoke(req *agentpb.RevokeCertificateAction) *Revoke {
	return &Revoke{m: m, req: req}
}

// NewRemove builds the action from its wire form.
func (m *Module) NewRemove(req *agentpb.RemoveCertificateAction) *Remove {
	return &Remove{m: m, req: req}
}

func (a *Install) Name() string        { return InstallName }
func (a *Revoke) Name() string         { return RevokeName }
func (a *Remove) Name() string         { return RemoveName }
func (a *Install) AllowTestUsernames() { a.allowTestNames = true }
func (a *Revoke) AllowTestUsernames()  { a.allowTestNames = true }
func (a *Remove) AllowTestUsernames()  { a.allowTestNames = true }

func invalid(format string, args ...any) error {
	return actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, format, args...)
}

// Apply implements actions.Action.
func (a *Install) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	chain, err := validChain(r.ChainPem)
	if err != nil {
		return nil, invalid("%w", err)
	}
	leaf := chain[0]
	if env.Unseal == nil {
		return nil, errors.New("agent cannot unseal secrets")
	}
	der, err := env.Unseal(r.SealedPrivateKey, agentpb.CertificateKeySealContext(r.Id))
	if err != nil {
		// Not the error's text: it says nothing a user can act on, and
		// nothing about a key must reach a result.
		return nil, invalid("private key: cannot unseal it for this node and certificate")
	}
	key, err := parsePKCS8(der)
	clear(der)
	if err != nil {
		return nil, invalid("private key: %w", err)
	}
	if err := checkCertificate(chain, key, r.Site, r.Mail, r.AllowUntrusted, a.now()); err != nil {
		return nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	unlock, err := a.m.sites.Lock(ctx, r.Site)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	defer unlock()
	reloaded, err := a.m.install(ctx, env, r.Site, r.Mail, r.ChainPem, kp, leaf)
	if err != nil {
		return nil, err
	}
	out := result(r.ChainPem, leaf)
	out.Reloaded = reloaded
	return out, nil
}

// checkCertificate refuses, with INVALID, a certificate that cannot serve
// site: a key that is not the leaf's, a name it does not cover, a leaf not
// yet or no longer valid, a chain that does not verify to the node's
// trust store (unless the admin accepted that).
func checkCertificate(chain []*x509.Certificate, key crypto.Signer, site string, mail, allowUntrusted bool, now time.Time) error {
	leaf := chain[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return invalid("the private key does not match the certificate")
	}
	if err := leaf.VerifyHostname(site); err != nil {
		return invalid("the certificate does not cover %s: %w", site, err)
	}
	if mail {
		if err := leaf.VerifyHostname(mailHost(site)); err != nil {
			return invalid("the certificate does not cover %s: %w", mailHost(site), err)
		}
	}
	if now.After(leaf.NotAfter) {
		return invalid("the certificate expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return invalid("the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if allowUntrusted {
		return nil
	}
	// The roots the API's installCertificate and the node's analysis of
	// cPanel archives verify to: the system's.
	roots, err := validate.CertificateRoots()
	if err != nil {
		return fmt.Errorf("system trust store: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       site,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return invalid("the chain does not verify to a trusted root: %w", err)
	}
	return nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch a.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		e, ok := a.(equaler)
		return ok && e.Equal(b)
	}
	return false
}

// install hands the chain and key to the web installer and, with mail, to
// the mail installer for mail.SITE when the leaf covers it.
func (m *Module) install(ctx context.Context, env *actions.Env, site string, mail bool, chainPEM, keyPEM []byte, leaf *x509.Certificate) ([]string, error) {
	if m.web == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve web sites")
	}
	reloaded, err := m.web.InstallCertificate(ctx, env, site, chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("serve certificate for %s: %w", site, err)
	}
	if mail && leaf.VerifyHostname(mailHost(site)) == nil {
		if m.mail == nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve mail")
		}
		more, err := m.mail.InstallCertificate(ctx, env, mailHost(site), chainPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("serve certificate for %s: %w", mailHost(site), err)
		}
		reloaded = appendNew(reloaded, more...)
	}
	// The webmail vhost serves its own name's files.
	if mail && leaf.VerifyHostname(webmailHost(site)) == nil {
		more, err := m.web.InstallCertificate(ctx, env, webmailHost(site), chainPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("serve certificate for %s: %w", webmailHost(site), err)
		}
		reloaded = appendNew(reloaded, more...)
	}
	return reloaded, nil
}

// uninstall puts self-signed certificates back.
func (m *Module) uninstall(ctx context.Context, env *actions.Env, site string, mail bool) error {
	if m.web == nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve web sites")
	}
	if _, err := m.web.RemoveCertificate(ctx, env, site); err != nil {
		return fmt.Errorf("remove certificate of %s: %w", site, err)
	}
	if mail {
		if m.mail == nil {
			return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve mail")
		}
		if _, err := m.mail.RemoveCertificate(ctx, env, mailHost(site)); err != nil {
			return fmt.Errorf("remove certificate of %s: %w", mailHost(site), err)
		}
		if _, err := m.web.RemoveCertificate(ctx, env, webmailHost(site)); err != nil {
			return fmt.Errorf("remove certificate of %s: %w", webmailHost(site), err)
		}
	}
	return nil
}

func appendNew(s []string, more ...string) []string {
	for _, x := range more {
		found := false
		for _, y := range s {
			found = found || x == y
		}
		if !found {
			s = append(s, x)
		}
	}
	return s
}

// Apply implements actions.Action. The CA is asked first: a certificate
// the CA would not revoke stays served.
func (a *Revoke) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	unlock, err := a.m.sites.Lock(ctx, r.Site)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	defer unlock()
	reason := uint(r.Reason)
	err = a.m.withAccount(ctx, env, r.Acme, func(s *session) error {
		return s.Certificate.RevokeWithReason(ctx, r.ChainPem, &reason)
	})
	if err != nil {
		// A repeated task: the CA has revoked it already.
		var pd *acme.ProblemDetails
		if !errors.As(err, &pd) || pd.Type != acme.AlreadyRevokedErrorType {
			return nil, classify(fmt.Errorf("revoke: %w", err))
		}
	}
	if err := a.m.uninstall(ctx, env, r.Site, r.Mail); err != nil {
		return nil, err
	}
	env.Logger.Info("certificate revoked", "site", r.Site, "reason", r.Reason)
	return nil, nil
}

// Apply implements actions.Action.
func (a *Remove) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	unlock, err := a.m.sites.Lock(ctx, r.Site)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	defer unlock()
	return nil, a.m.uninstall(ctx, env, r.Site, r.Mail)
}
