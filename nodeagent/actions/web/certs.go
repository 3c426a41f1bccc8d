package web

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
)

// TLS of sites. Every vhost serves HTTPS from its site's files in
// WebPaths.CertDir: a self-signed certificate until one is issued or
// installed. The ACME challenge directory is served to every host under
// /.well-known/acme-challenge/, exempt from redirects and suspension.

// CertFiles returns the paths of the chain (leaf first) and key the site's
// vhost serves.
func CertFiles(w platform.WebPaths, site string) (chain, key string) {
	return filepath.Join(w.CertDir, site+".crt"), filepath.Join(w.CertDir, site+".key")
}

// ChallengeDir is the directory whose files every vhost serves under
// /.well-known/acme-challenge/ (HTTP-01 tokens).
func ChallengeDir(w platform.WebPaths) string { return w.ACMEChallengeDir }

// InstallCertificate replaces the site's chain and key (PEM) atomically and
// reloads nginx, coalesced with other changes. The caller has checked that
// the key matches the leaf and that the leaf covers the site.
func (m *Module) InstallCertificate(ctx context.Context, env *actions.Env, site string, chainPEM, keyPEM []byte) (reloaded []string, err error) {
	return nil, errors.New("web: InstallCertificate: not written yet")
}

// RemoveCertificate puts a self-signed certificate back in place of the
// site's and reloads nginx.
func (m *Module) RemoveCertificate(ctx context.Context, env *actions.Env, site string) (reloaded []string, err error) {
	return nil, errors.New("web: RemoveCertificate: not written yet")
}
