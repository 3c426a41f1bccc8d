package ca

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"

	"github.com/npanel/npanel/pki"
)

const (
	// MaxJoinTokenTTL is the longest a join token can be valid.
	MaxJoinTokenTTL = time.Hour
	// MinJoinTokenTTL is the shortest: smallstep's token package refuses
	// validities below it.
	MinJoinTokenTTL = token.MinValidity
)

// NewJoinToken mints a one-time token that lets node enrol. ttl <= 0 means
// MaxJoinTokenTTL; a ttl above MaxJoinTokenTTL or below MinJoinTokenTTL is an
// error. The token is bound to the node name twice, as the subject and as
// the certificate's URI SAN, and lists hosts (the node's address from its
// record, IP addresses or DNS names) as the certificate's other SANs, so
// that clients dialling the node's address can verify its certificate.
func (c *CA) NewJoinToken(node string, hosts []string, ttl time.Duration) (string, pki.JoinClaims, error) {
	return c.newJoinToken(node, hosts, ttl, time.Now())
}

// newJoinToken takes the time the token is minted at, so that tests can mint
// tokens that expired long ago.
func (c *CA) newJoinToken(node string, hosts []string, ttl time.Duration, now time.Time) (string, pki.JoinClaims, error) {
	if err := pki.ValidNodeName(node); err != nil {
		return "", pki.JoinClaims{}, fmt.Errorf("new join token: %w", err)
	}
	hosts, err := pki.NodeHosts(hosts)
	if err != nil {
		return "", pki.JoinClaims{}, fmt.Errorf("new join token for %q: %w", node, err)
	}
	switch {
	case ttl <= 0:
		ttl = MaxJoinTokenTTL
	case ttl > MaxJoinTokenTTL:
		return "", pki.JoinClaims{}, fmt.Errorf("new join token for %q: ttl %v exceeds the maximum %v", node, ttl, MaxJoinTokenTTL)
	case ttl < MinJoinTokenTTL:
		return "", pki.JoinClaims{}, fmt.Errorf("new join token for %q: ttl %v is below the minimum %v", node, ttl, MinJoinTokenTTL)
	}
	tok, claims, err := c.signToken(node, append([]string{pki.NodeURI(node).String()}, hosts...), now, ttl)
	if err != nil {
		return "", pki.JoinClaims{}, fmt.Errorf("new join token for %q: %w", node, err)
	}
	if len(hosts) > 0 {
		claims.Hosts = hosts
	}
	return tok, claims, nil
}

// signToken signs a smallstep one-time token with the cluster's provisioner.
// The audience is the one the authority derives from pki.CADNSName, the kid and
// issuer select our provisioner, and "sha" carries the root fingerprint for
// the agent to pin.
func (c *CA) signToken(subject string, sans []string, now time.Time, ttl time.Duration) (string, pki.JoinClaims, error) {
	id, err := randomTokenID()
	if err != nil {
		return "", pki.JoinClaims{}, err
	}
	// JWT dates are whole seconds; truncating here makes the claims we return
	// equal to what pki.ParseJoinToken reads back.
	now = now.Truncate(time.Second)
	exp := now.Add(ttl)
	t, err := provision.New(subject,
		token.WithJWTID(id),
		token.WithKid(c.provKey.KeyID),
		token.WithIssuer(pki.JoinIssuer),
		token.WithAudience(pki.JoinAudience),
		token.WithIssuedAt(now),
		token.WithValidity(now, exp),
		token.WithSANS(sans),
		token.WithSHA(c.fingerprint),
	)
	if err != nil {
		return "", pki.JoinClaims{}, fmt.Errorf("build token: %w", err)
	}
	s, err := t.SignedString(c.provKey.Algorithm, c.provKey.Key)
	if err != nil {
		return "", pki.JoinClaims{}, fmt.Errorf("sign token: %w", err)
	}
	return s, pki.JoinClaims{Node: subject, ID: id, ExpiresAt: exp, RootFingerprint: c.fingerprint}, nil
}

func randomTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
