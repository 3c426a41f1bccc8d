package nodeagent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// Files of the node identity in DataDir. identity.json is written last and
// is what marks the identity as complete: a crash in the middle of writing
// the others leaves no identity.json, and the agent enrols again.
const (
	keyFile  = "node.key"
	certFile = "node.crt"
	rootFile = "root.crt"
)

// IdentityFile, in the data dir, holds an enrolled node's identity: with
// it the agent needs no join token.
const IdentityFile = "identity.json"

// ErrCertificateExpired means the node's certificate expired before it could
// be renewed. Only a new join token can give the node an identity again.
var ErrCertificateExpired = errors.New("node certificate expired")

type identityFileContent struct {
	Node string `json:"node"`
}

// identity is the node's key, its current certificate chain and the root the
// chain verifies to.
type identity struct {
	node string
	key  crypto.Signer
	root *x509.Certificate
	cert atomic.Pointer[tls.Certificate] // replaced by renewal
	// obtained is when the current certificate was received, zero for one
	// loaded from disk. Only enrolment (before the renewal loop starts) and
	// the renewal loop touch it.
	obtained time.Time
}

// loadIdentity reads the identity in dir. It returns (nil, nil) when there is
// none yet.
func loadIdentity(dir string) (*identity, error) {
	raw, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	var content identityFileContent
	if err := json.Unmarshal(raw, &content); err != nil {
		return nil, fmt.Errorf("decode %s: %w", IdentityFile, err)
	}
	if content.Node == "" {
		return nil, fmt.Errorf("%s names no node", IdentityFile)
	}

	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", keyFile, err)
	}
	chainPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("read node certificate: %w", err)
	}
	chain, err := pki.ParseCertsPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", certFile, err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, rootFile))
	if err != nil {
		return nil, fmt.Errorf("read root certificate: %w", err)
	}
	roots, err := pki.ParseCertsPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", rootFile, err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates, want 1", rootFile, len(roots))
	}

	id := &identity{node: content.Node, key: key, root: roots[0]}
	// Expiry is checked by the caller, which can still re-enrol with a token.
	cert, err := id.checkChain(chain, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	id.cert.Store(cert)
	return id, nil
}

// checkChain verifies that chain (leaf first) belongs to this identity: the
// leaf carries our public key and our node name, and verifies to our root.
// A zero now skips the validity period check.
func (id *identity) checkChain(chain []*x509.Certificate, now time.Time) (*tls.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(id.key.Public()) {
		return nil, errors.New("certificate does not carry the node's public key")
	}
	name, err := pki.NodeName(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate node name: %w", err)
	}
	if name != id.node {
		return nil, fmt.Errorf("certificate is for node %q, want %q", name, id.node)
	}
	roots := x509.NewCertPool()
	roots.AddCert(id.root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime:   now,
	}
	if now.IsZero() {
		// Verify at a moment inside the leaf's validity; the caller judges
		// expiry itself.
		opts.CurrentTime = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("certificate does not verify to the pinned root: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: id.key, Leaf: leaf}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

func (id *identity) leaf() *x509.Certificate { return id.cert.Load().Leaf }

// persist writes the whole identity, identity.json last.
func (id *identity) persist(dir string) error {
	keyPEM, err := pki.EncodeKeyPEM(id.key)
	if err != nil {
		return fmt.Errorf("encode node key: %w", err)
	}
	// When an expired identity is replaced, its marker goes first: a crash
	// halfway must not leave the old marker over a mix of old and new files.
	if err := os.Remove(filepath.Join(dir, IdentityFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove old identity: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := writeFileAtomic(dir, keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := id.persistChain(dir); err != nil {
		return err
	}
	if err := writeFileAtomic(dir, rootFile, pki.EncodeCertsPEM([]*x509.Certificate{id.root}), 0o600); err != nil {
		return err
	}
	content, err := json.Marshal(identityFileContent{Node: id.node})
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	return writeFileAtomic(dir, IdentityFile, content, 0o600)
}

func (id *identity) persistChain(dir string) error {
	cert := id.cert.Load()
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("encode certificate chain: %w", err)
		}
		chain = append(chain, c)
	}
	return writeFileAtomic(dir, certFile, pki.EncodeCertsPEM(chain), 0o600)
}

func parseDERChain(ders [][]byte) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of chain: %w", i, err)
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// renewAt is when renewal starts: at two thirds of the lifetime, leaving a
// third of it (hours for a day-long certificate) to ride out a control plane
// outage with retries.
//
// The lifetime is counted from when the certificate was obtained if that is
// later than NotBefore: the CA backdates NotBefore (by a minute) for clock
// skew, and counting from there would put a freshly renewed short-lived
// certificate past its renewal time at once and renew it in a loop.
func renewAt(leaf *x509.Certificate, obtained time.Time) time.Time {
	start := leaf.NotBefore
	if obtained.After(start) && obtained.Before(leaf.NotAfter) {
		start = obtained
	}
	return start.Add(leaf.NotAfter.Sub(start) * 2 / 3)
}

// fatalError marks enrolment errors that retrying cannot fix.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// enrol exchanges the join token for the node's first certificate. Network
// failures are retried with backoff across Servers; refusals (a used,
// expired or wrong token) are returned, since the same token will not become
// valid by asking again.
func (a *Agent) enrol(ctx context.Context) (*identity, error) {
	claims := a.claims
	key, err := pki.NewKey()
	if err != nil {
		return nil, fmt.Errorf("enrol: generate key: %w", err)
	}
	csr, err := pki.NewNodeCSR(key, claims.Node, claims.Hosts)
	if err != nil {
		return nil, fmt.Errorf("enrol: build CSR: %w", err)
	}
	req := &agentpb.EnrollRequest{JoinToken: a.token, Csr: csr.Raw}

	bo := backoff{min: a.timing.backoffMin, max: a.timing.backoffMax}
	for attempt := 0; ; attempt++ {
		server := a.cfg.Servers[attempt%len(a.cfg.Servers)]
		id, err := a.enrolOnce(ctx, server, key, req)
		if err == nil {
			return id, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var fe fatalError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("enrol node %q via %s: %w", claims.Node, server, fe.err)
		}
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
			return nil, fmt.Errorf("enrol node %q via %s: server refused the join token: %w", claims.Node, server, err)
		}
		wait := bo.next()
		a.log.Warn("enrol failed; retrying", "server", server, "in", wait, "err", err)
		if !sleepCtx(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

func (a *Agent) enrolOnce(ctx context.Context, server string, key crypto.Signer, req *agentpb.EnrollRequest) (*identity, error) {
	var pinned atomic.Pointer[x509.Certificate]
	creds := credentials.NewTLS(pki.EnrollClientTLSConfig(serverHost(server), a.claims.RootFingerprint,
		func(root *x509.Certificate) { pinned.Store(root) }))
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fatalError{fmt.Errorf("dial %s: %w", server, err)}
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(ctx, a.timing.rpcTimeout)
	defer cancel()
	resp, err := agentpb.NewAgentGatewayClient(conn).Enroll(ctx, req)
	if err != nil {
		return nil, err
	}

	// From here on the token is spent: a bad answer is not retried with it.
	root, err := x509.ParseCertificate(resp.GetRoot())
	if err != nil {
		return nil, fatalError{fmt.Errorf("parse root in enrol response: %w", err)}
	}
	// The handshake checked the server's root against the fingerprint in the
	// token; the root handed back must be that very certificate, or the
	// server is not the one the token was issued by.
	if p := pinned.Load(); p == nil || !p.Equal(root) {
		return nil, fatalError{errors.New("enrol response root differs from the root pinned by the join token")}
	}
	chain, err := parseDERChain(resp.GetCertificateChain())
	if err != nil {
		return nil, fatalError{fmt.Errorf("enrol response: %w", err)}
	}
	id := &identity{node: a.claims.Node, key: key, root: root}
	now := time.Now()
	cert, err := id.checkChain(chain, now)
	if err != nil {
		return nil, fatalError{fmt.Errorf("enrol response: %w", err)}
	}
	id.cert.Store(cert)
	id.obtained = now
	if err := id.persist(a.cfg.DataDir); err != nil {
		return nil, fatalError{fmt.Errorf("persist identity: %w", err)}
	}
	return id, nil
}

// renewLoop renews the certificate at two thirds of its lifetime, retrying
// until it expires. It returns ErrCertificateExpired if it never succeeded
// in time, nil when ctx is done.
func (a *Agent) renewLoop(ctx context.Context) error {
	for {
		leaf := a.id.leaf()
		a.metrics.certExpiry.Set(float64(leaf.NotAfter.Unix()))
		if !sleepCtx(ctx, time.Until(renewAt(leaf, a.id.obtained))) {
			return nil
		}
		bo := backoff{min: a.timing.backoffMin, max: a.timing.renewBackoffMax}
		for attempt := 0; ; attempt++ {
			server := a.cfg.Servers[attempt%len(a.cfg.Servers)]
			err := a.renewOnce(ctx, server)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			left := time.Until(leaf.NotAfter)
			if left <= 0 {
				a.log.Error("certificate expired before it could be renewed; a new join token is needed", "expired", leaf.NotAfter, "err", err)
				return fmt.Errorf("%w at %s (last renewal error: %v)", ErrCertificateExpired, leaf.NotAfter.Format(time.RFC3339), err)
			}
			wait := min(bo.next(), left)
			a.log.Warn("renew certificate failed; retrying", "server", server, "expires_in", left.Round(time.Second), "in", wait, "err", err)
			if !sleepCtx(ctx, wait) {
				return nil
			}
		}
	}
}

func (a *Agent) renewOnce(ctx context.Context, server string) error {
	conn, err := a.dialAgent(server)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timing.rpcTimeout)
	defer cancel()
	resp, err := agentpb.NewAgentGatewayClient(conn).Renew(ctx, &agentpb.RenewRequest{})
	if err != nil {
		return fmt.Errorf("renew via %s: %w", server, err)
	}
	chain, err := parseDERChain(resp.GetCertificateChain())
	if err != nil {
		return fmt.Errorf("renew response: %w", err)
	}
	now := time.Now()
	cert, err := a.id.checkChain(chain, now)
	if err != nil {
		return fmt.Errorf("renew response: %w", err)
	}
	a.id.cert.Store(cert)
	a.id.obtained = now
	a.metrics.certExpiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	// The new certificate is valid whether or not it reaches the disk; if it
	// does not, a restart falls back to the old one, which is still valid for
	// a third of its lifetime.
	if err := a.id.persistChain(a.cfg.DataDir); err != nil {
		a.log.Error("persist renewed certificate", "err", err)
	}
	a.log.Info("certificate renewed", "server", server, "expires", cert.Leaf.NotAfter)
	return nil
}

// serverHost is the TLS server name for a gateway address.
func serverHost(server string) string {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return server
	}
	return host
}
