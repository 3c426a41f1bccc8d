package web

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// TLS of sites. Every vhost serves HTTPS from its site's files in
// WebPaths.CertDir: a self-signed certificate until one is issued or
// installed. The ACME challenge directory is served to every host under
// /.well-known/acme-challenge/, exempt from redirects and suspension.
//
// Every write of a site's certificate files goes through the committer
// (commit.go), like a vhost: the pair is written atomically (key first),
// tested with nginx -t together with the rest of its batch, put back as it
// was when the test fails, and reloaded once per batch. So a burst of a
// thousand installations costs a handful of reloads, and no nginx -t or
// reload ever reads a key beside the chain of another pair.
//
// Ensure makes a self-signed pair for a site that has none (so HTTPS
// answers at once and nginx -t passes), and remakes it when the site's
// names change or it nears expiry; the committer writes it only over a
// missing certificate or one we self-signed, checked when it writes, so
// an installed certificate is never replaced by a self-signed one.

// selfSignedOrg marks the certificates we self-sign; nothing a CA issues
// for a site is self-signed with this subject organization.
const selfSignedOrg = "nPanel self-signed"

const (
	selfSignedLifetime = 90 * 24 * time.Hour
	// selfSignedRenew: a self-signed certificate with less left than
	// this is remade at the next Ensure.
	selfSignedRenew = 30 * 24 * time.Hour
)

// CertFiles returns the paths of the chain (leaf first) and key the site's
// vhost serves.
func CertFiles(w platform.WebPaths, site string) (chain, key string) {
	return filepath.Join(w.CertDir, site+".crt"), filepath.Join(w.CertDir, site+".key")
}

// ChallengeDir is the directory whose files every vhost serves under
// /.well-known/acme-challenge/ (HTTP-01 tokens).
func ChallengeDir(w platform.WebPaths) string { return w.ACMEChallengeDir }

// certWrite is a site's certificate pair for the committer to write.
type certWrite struct {
	site       string
	chain, key []byte
	// ifOurs writes the pair only over a missing or unreadable
	// certificate or one we self-signed (a self-signed replacement).
	ifOurs bool
}

// InstallCertificate replaces the site's chain and key (PEM) atomically and
// reloads nginx, coalesced with other changes. The caller has checked that
// the key matches the leaf and that the leaf covers the site; the match is
// checked again here, and a pair nginx refuses is rolled back.
func (m *Module) InstallCertificate(ctx context.Context, env *actions.Env, site string, chainPEM, keyPEM []byte) (reloaded []string, err error) {
	if err := canonicalDomain("certificate site", site); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%v", err)
	}
	chain, key, err := pki.NormalizeKeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "web: certificate of %s: %v", site, err)
	}
	return m.writeCert(ctx, env, certWrite{site: site, chain: chain, key: key})
}

// RemoveCertificate puts a self-signed certificate back in place of the
// site's and reloads nginx.
func (m *Module) RemoveCertificate(ctx context.Context, env *actions.Env, site string) (reloaded []string, err error) {
	if err := canonicalDomain("certificate site", site); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%v", err)
	}
	chain, key, err := selfSigned(siteNames(env.Profile.Web(), site), time.Now())
	if err != nil {
		return nil, err
	}
	return m.writeCert(ctx, env, certWrite{site: site, chain: chain, key: key})
}

func (m *Module) writeCert(ctx context.Context, env *actions.Env, cw certWrite) ([]string, error) {
	w := env.Profile.Web()
	if _, err := os.Stat(w.Nginx); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "web: nginx is not installed on this node (%s)", w.Nginx)
	}
	if err := ensureCertDir(w); err != nil {
		return nil, err
	}
	c := &change{ctx: ctx, env: env, user: certOwner(cw.site), certs: []certWrite{cw}}
	if err := m.hostFor(env.Profile).submit(c); err != nil {
		return nil, err
	}
	return c.reloaded, nil
}

// certOwner is the committer owner of a certificate-only change: a name
// no account or service can have, so that two changes of one site's
// certificate never share a batch.
func certOwner(site string) string { return "#cert/" + site }

// selfSigned makes a P-256 certificate for names (the first is the
// subject), marked as ours, valid for selfSignedLifetime.
func selfSigned(names []string, now time.Time) (chain, key []byte, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("web: self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("web: self-signed serial: %w", err)
	}
	subject := pkix.Name{Organization: []string{selfSignedOrg}, CommonName: names[0]}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		Issuer:                subject,
		DNSNames:              names,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, fmt.Errorf("web: self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("web: self-signed key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// leafOf parses the first certificate of a PEM chain; nil if there is none
// or it does not parse.
func leafOf(chain []byte) *x509.Certificate {
	for len(chain) > 0 {
		var b *pem.Block
		b, chain = pem.Decode(chain)
		if b == nil {
			return nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil
		}
		return c
	}
	return nil
}

// isOurs reports whether leaf is a certificate we self-signed.
func isOurs(leaf *x509.Certificate) bool {
	return leaf != nil && slices.Equal(leaf.Subject.Organization, []string{selfSignedOrg}) &&
		bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
		// CheckSignatureFrom would refuse a parent that is not a CA.
		leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil
}

// replaceable reports whether a self-signed pair may be written over the
// chain now on disk: none, one that does not parse (nginx could not serve
// it anyway), or one of ours.
func replaceable(chain []byte) bool {
	leaf := leafOf(chain)
	return leaf == nil || isOurs(leaf)
}

// needSelfSigned reports whether the site needs a (new) self-signed pair:
// it has none, or ours covers other names or nears its end.
func needSelfSigned(w platform.WebPaths, site string, names []string, now time.Time) (bool, error) {
	chainPath, keyPath := CertFiles(w, site)
	chain, err := readPath(chainPath)
	if err != nil {
		return false, fmt.Errorf("web: read %s: %w", chainPath, err)
	}
	leaf := leafOf(chain)
	if leaf == nil {
		return true, nil
	}
	if !isOurs(leaf) {
		return false, nil // issued or installed: never replaced here
	}
	if _, err := os.Lstat(keyPath); errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	have := slices.Clone(leaf.DNSNames)
	want := slices.Clone(names)
	slices.Sort(have)
	slices.Sort(want)
	return !slices.Equal(have, want) || leaf.NotAfter.Sub(now) < selfSignedRenew, nil
}

// selfSignedFor returns the self-signed pair to write for a site with
// server names names, or nil when its certificate is fine as it is.
func selfSignedFor(w platform.WebPaths, site string, names []string) ([]certWrite, error) {
	now := time.Now()
	need, err := needSelfSigned(w, site, names, now)
	if err != nil || !need {
		return nil, err
	}
	chain, key, err := selfSigned(names, now)
	if err != nil {
		return nil, err
	}
	return []certWrite{{site: site, chain: chain, key: key, ifOurs: true}}, nil
}

// siteNames returns the server names of the vhost that serves site (an
// account's or a service's), or just site when none does.
func siteNames(w platform.WebPaths, site string) []string {
	ents, err := os.ReadDir(w.VhostDir)
	if err != nil {
		return []string{site}
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), "_"+site+".conf") {
			continue
		}
		data, err := readPath(filepath.Join(w.VhostDir, e.Name()))
		if err != nil {
			continue
		}
		if n := serverNames(data); len(n) > 0 && n[0] == site {
			return n
		}
	}
	return []string{site}
}

// ensureCertDir creates CertDir, root's and 0700: nginx's master reads the
// keys as root before it starts its workers.
func ensureCertDir(w platform.WebPaths) error {
	if err := safePath(w.CertDir); err != nil {
		return fmt.Errorf("web: %w", err)
	}
	if err := os.MkdirAll(w.CertDir, 0o700); err != nil {
		return fmt.Errorf("web: %w", err)
	}
	if err := os.Chmod(w.CertDir, 0o700); err != nil {
		return fmt.Errorf("web: %w", err)
	}
	return nil
}

// certOps turns c's certificate writes into ops (key first), against the
// files on disk now. A self-signed replacement of a certificate that is no
// longer ours is dropped.
func (h *host) certOps(c *change) ([]op, error) {
	var ops []op
	for _, cw := range c.certs {
		chainPath, keyPath := CertFiles(h.w, cw.site)
		oldChain, err := readPath(chainPath)
		if err != nil {
			return nil, fmt.Errorf("web: read %s: %w", chainPath, err)
		}
		if cw.ifOurs && !replaceable(oldChain) {
			continue
		}
		oldKey, err := readPath(keyPath)
		if err != nil {
			return nil, fmt.Errorf("web: read %s: %w", keyPath, err)
		}
		if bytes.Equal(oldChain, cw.chain) && bytes.Equal(oldKey, cw.key) {
			continue
		}
		ops = append(ops, op{path: keyPath, old: oldKey, new: cw.key, perm: 0o600},
			op{path: chainPath, old: oldChain, new: cw.chain, perm: 0o644})
	}
	return ops, nil
}

// removedSites returns the domains whose vhost (a site's or a service's)
// ops remove: their certificates go with them, so that whoever serves the
// name next never gets the previous owner's certificate and key.
func removedSites(ops []op) []string {
	var out []string
	for _, o := range ops {
		if o.new != nil {
			continue
		}
		name := filepath.Base(o.path)
		if _, d, ok := parseVhostName(name); ok {
			out = append(out, d)
			continue
		}
		if s, ok := strings.CutPrefix(name, "npanel@"); ok {
			if _, d, ok := strings.Cut(strings.TrimSuffix(s, ".conf"), "_"); ok && d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}

// certRemovals are the ops removing the certificates of sites.
func (h *host) certRemovals(sites []string) ([]op, error) {
	var ops []op
	for _, site := range sites {
		if canonicalDomain("certificate site", site) != nil {
			continue
		}
		chainPath, keyPath := CertFiles(h.w, site)
		for _, f := range []struct {
			path string
			perm os.FileMode
		}{{chainPath, 0o644}, {keyPath, 0o600}} {
			old, err := readPath(f.path)
			if err != nil {
				return nil, fmt.Errorf("web: read %s: %w", f.path, err)
			}
			if old != nil {
				ops = append(ops, op{path: f.path, old: old, perm: f.perm})
			}
		}
	}
	return ops, nil
}
