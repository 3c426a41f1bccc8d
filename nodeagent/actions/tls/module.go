// Package tls gets and serves the TLS certificates of sites and their mail
// hosts: it orders certificates over ACME (lego) with HTTP-01 or DNS-01
// challenges, installs certificates bought elsewhere, revokes and removes
// them.
//
// Every private key stays on the node: the ACME account key is generated
// here and kept under the agent's data directory (0600), and a
// certificate's key is generated per order and handed only to the
// installers that serve it (the web and mail modules, which write it 0600
// for root). Results carry the public chain and metadata only.
package tls

import (
	"context"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
)

// Action names.
const (
	IssueName   = "tls.issue_certificate"
	InstallName = "tls.install_certificate"
	RevokeName  = "tls.revoke_certificate"
	RemoveName  = "tls.remove_certificate"
)

// Installer serves a certificate for one host name from the daemons of one
// service area. The web module serves a site's certificate from its vhost;
// the mail module serves mail.DOMAIN's from Exim and Dovecot.
type Installer interface {
	// InstallCertificate replaces the host's chain (leaf first) and
	// PKCS#8 key, both PEM, and returns the daemons it reloaded. The caller
	// has checked the key matches the leaf and the leaf covers host.
	InstallCertificate(ctx context.Context, env *actions.Env, host string, chainPEM, keyPEM []byte) ([]string, error)
	// RemoveCertificate puts a self-signed certificate back for host.
	RemoveCertificate(ctx context.Context, env *actions.Env, host string) ([]string, error)
}

// Module holds what the TLS actions share on one agent: the installers,
// per-site locks (two orders for one site must never race: the later
// could install an older certificate over a newer one) and per-account
// locks (an account is registered once).
type Module struct {
	web  Installer
	mail Installer

	// ChallengeDir overrides web.ChallengeDir(env.Profile.Web()) as the
	// directory HTTP-01 tokens are written to; tests set it.
	ChallengeDir string

	sites    actions.KeyedLocks
	accounts actions.KeyedLocks
}

// NewModule returns the TLS module of one agent. web serves sites'
// certificates; mail, nil on an agent without it, serves mail hosts'.
func NewModule(web, mail Installer) *Module {
	return &Module{web: web, mail: mail}
}

func (m *Module) challengeDir(env *actions.Env) string {
	if m.ChallengeDir != "" {
		return m.ChallengeDir
	}
	if env.Profile == nil {
		return ""
	}
	return web.ChallengeDir(env.Profile.Web())
}

// mailHost is the host name the mail daemons serve for site.
func mailHost(site string) string { return "mail." + site }

// webmailHost is the name of the site's webmail vhost.
func webmailHost(site string) string { return "webmail." + site }
