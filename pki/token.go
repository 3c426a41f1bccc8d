package pki

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/smallstep/cli-utils/token"
	"github.com/smallstep/cli-utils/token/provision"
	"go.step.sm/crypto/jose"
)

const (
	// MaxJoinTokenTTL is the longest a join token can be valid.
	MaxJoinTokenTTL = time.Hour
	// MinJoinTokenTTL is the shortest: smallstep's token package refuses
	// validities below it.
	MinJoinTokenTTL = token.MinValidity

	// maxTokenLen bounds the work done on attacker-supplied tokens; ours are
	// about 700 bytes.
	maxTokenLen = 4096
	// maxTokenIDLen bounds the jti, which callers use as a storage key.
	maxTokenIDLen = 128
)

// Sentinel errors. Callers branch on them with errors.Is; the wrapped message
// says what exactly was wrong.
var (
	// ErrInvalidToken: the join token is garbled, forged, for another audience
	// or provisioner, not yet valid, or not a join token at all.
	ErrInvalidToken = errors.New("invalid join token")
	// ErrTokenExpired: the join token was genuine but has expired.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsed is for Enroll's markUsed callback to return (possibly
	// wrapped) when the token was already redeemed; Enroll passes it through.
	ErrTokenUsed = errors.New("join token already used")
)

// JoinClaims are what a join token says.
type JoinClaims struct {
	Node            string
	ID              string // the token's jti: what "used" is recorded under
	ExpiresAt       time.Time
	RootFingerprint string
}

// joinPayload is the token's JSON payload: the registered claims plus
// smallstep's "sha" (root fingerprint) and "sans".
type joinPayload struct {
	jose.Claims
	SHA  string   `json:"sha"`
	SANs []string `json:"sans"`
}

// NewJoinToken mints a one-time token that lets node enrol. ttl <= 0 means
// MaxJoinTokenTTL; a ttl above MaxJoinTokenTTL or below MinJoinTokenTTL is an
// error. The token is bound to the node name twice: as the subject and as the
// only SAN the certificate may carry.
func (c *CA) NewJoinToken(node string, ttl time.Duration) (string, JoinClaims, error) {
	return c.newJoinToken(node, ttl, time.Now())
}

// newJoinToken takes the time the token is minted at, so that tests can mint
// tokens that expired long ago.
func (c *CA) newJoinToken(node string, ttl time.Duration, now time.Time) (string, JoinClaims, error) {
	if err := ValidNodeName(node); err != nil {
		return "", JoinClaims{}, fmt.Errorf("new join token: %w", err)
	}
	switch {
	case ttl <= 0:
		ttl = MaxJoinTokenTTL
	case ttl > MaxJoinTokenTTL:
		return "", JoinClaims{}, fmt.Errorf("new join token for %q: ttl %v exceeds the maximum %v", node, ttl, MaxJoinTokenTTL)
	case ttl < MinJoinTokenTTL:
		return "", JoinClaims{}, fmt.Errorf("new join token for %q: ttl %v is below the minimum %v", node, ttl, MinJoinTokenTTL)
	}
	tok, claims, err := c.signToken(node, []string{NodeURI(node).String()}, now, ttl)
	if err != nil {
		return "", JoinClaims{}, fmt.Errorf("new join token for %q: %w", node, err)
	}
	return tok, claims, nil
}

// signToken signs a smallstep one-time token with the cluster's provisioner.
// The audience is the one the authority derives from caDNSName, the kid and
// issuer select our provisioner, and "sha" carries the root fingerprint for
// the agent to pin.
func (c *CA) signToken(subject string, sans []string, now time.Time, ttl time.Duration) (string, JoinClaims, error) {
	id, err := randomTokenID()
	if err != nil {
		return "", JoinClaims{}, err
	}
	// JWT dates are whole seconds; truncating here makes the claims we return
	// equal to what ParseJoinToken reads back.
	now = now.Truncate(time.Second)
	exp := now.Add(ttl)
	t, err := provision.New(subject,
		token.WithJWTID(id),
		token.WithKid(c.provKey.KeyID),
		token.WithIssuer(provisionerName),
		token.WithAudience(signAudience),
		token.WithIssuedAt(now),
		token.WithValidity(now, exp),
		token.WithSANS(sans),
		token.WithSHA(c.fingerprint),
	)
	if err != nil {
		return "", JoinClaims{}, fmt.Errorf("build token: %w", err)
	}
	s, err := t.SignedString(c.provKey.Algorithm, c.provKey.Key)
	if err != nil {
		return "", JoinClaims{}, fmt.Errorf("sign token: %w", err)
	}
	return s, JoinClaims{Node: subject, ID: id, ExpiresAt: exp, RootFingerprint: c.fingerprint}, nil
}

func randomTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ParseJoinToken decodes a join token WITHOUT verifying its signature. The
// agent, which has no trust anchor yet, uses it to learn its node name, the
// expiry and the root fingerprint it must pin; the CA verifies the token for
// real in Enroll. Malformed tokens and tokens missing any claim a join token
// carries are rejected with errors wrapping ErrInvalidToken. An expired token
// is not an error here: ExpiresAt lets the caller say so clearly.
func ParseJoinToken(tok string) (JoinClaims, error) {
	p, err := parseJoinPayload(tok)
	if err != nil {
		return JoinClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return p, nil
}

func parseJoinPayload(tok string) (JoinClaims, error) {
	if len(tok) > maxTokenLen {
		return JoinClaims{}, fmt.Errorf("token is %d bytes long, the maximum is %d", len(tok), maxTokenLen)
	}
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return JoinClaims{}, fmt.Errorf("parse token: %w", err)
	}
	if len(jwt.Headers) != 1 {
		return JoinClaims{}, fmt.Errorf("token has %d signatures, want 1", len(jwt.Headers))
	}
	if h := jwt.Headers[0]; h.Algorithm != jose.ES256 || h.KeyID == "" {
		return JoinClaims{}, fmt.Errorf("token header: want alg %s and a kid, got alg %q kid %q", jose.ES256, h.Algorithm, h.KeyID)
	}
	var p joinPayload
	if err := jwt.UnsafeClaimsWithoutVerification(&p); err != nil {
		return JoinClaims{}, fmt.Errorf("decode token claims: %w", err)
	}
	switch {
	case p.Issuer != provisionerName:
		return JoinClaims{}, fmt.Errorf("token issuer %q is not %q", p.Issuer, provisionerName)
	case !slices.Equal([]string(p.Audience), []string{signAudience}):
		return JoinClaims{}, fmt.Errorf("token audience %q is not %q", []string(p.Audience), signAudience)
	case p.Expiry == nil:
		return JoinClaims{}, errors.New("token has no expiry (exp)")
	case !validTokenID(p.ID):
		return JoinClaims{}, fmt.Errorf("token id (jti) %.20q is missing or malformed", p.ID)
	case !validFingerprint(p.SHA):
		return JoinClaims{}, fmt.Errorf("token root fingerprint (sha) %.20q is missing or not 64 lowercase hex digits", p.SHA)
	}
	if err := ValidNodeName(p.Subject); err != nil {
		return JoinClaims{}, fmt.Errorf("token subject: %w", err)
	}
	if want := NodeURI(p.Subject).String(); !slices.Equal(p.SANs, []string{want}) {
		return JoinClaims{}, fmt.Errorf("token SANs %q, want exactly [%q]", p.SANs, want)
	}
	return JoinClaims{
		Node:            p.Subject,
		ID:              p.ID,
		ExpiresAt:       p.Expiry.Time(),
		RootFingerprint: p.SHA,
	}, nil
}

func validTokenID(id string) bool {
	if id == "" || len(id) > maxTokenIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

func validFingerprint(fp string) bool {
	if len(fp) != sha256HexLen {
		return false
	}
	for i := 0; i < len(fp); i++ {
		b := fp[i]
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f') {
			return false
		}
	}
	return true
}

const sha256HexLen = 64
