package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The shape of a join token, shared by the CA that signs it (pki/ca) and
// the agent that reads it before it trusts anything.
const (
	// CADNSName is the CA's name for itself. The authority derives the
	// audiences it accepts from its DNS names (https://<name>/1.0/sign, ...);
	// the CA has no listener, so any fixed internal name works, as long as
	// tokens are minted for the same one.
	CADNSName = "npanel-ca"
	// JoinIssuer is the CA's JWK provisioner's name, and so the "iss" of
	// every token it signs.
	JoinIssuer = "npanel-join"
	// JoinAudience is the audience the authority expects on sign tokens,
	// derived from CADNSName exactly as smallstep's config.Config.GetAudiences
	// does.
	JoinAudience = "https://" + CADNSName + "/1.0/sign"

	// maxTokenLen bounds the work done on attacker-supplied tokens; ours are
	// about 700 bytes.
	maxTokenLen = 4096
	// maxTokenIDLen bounds the jti, which callers use as a storage key.
	maxTokenIDLen = 128
	sha256HexLen  = 64
)

// Sentinel errors. Callers branch on them with errors.Is; the wrapped message
// says what exactly was wrong.
var (
	// ErrInvalidToken: the join token is garbled, forged, for another audience
	// or provisioner, not yet valid, or not a join token at all.
	ErrInvalidToken = errors.New("invalid join token")
	// ErrTokenExpired: the join token was genuine but has expired.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsed is for the CA's Enroll markUsed callback to return
	// (possibly wrapped) when the token was already redeemed; Enroll passes
	// it through.
	ErrTokenUsed = errors.New("join token already used")
)

// JoinClaims are what a join token says.
type JoinClaims struct {
	Node            string
	ID              string // the token's jti: what "used" is recorded under
	ExpiresAt       time.Time
	RootFingerprint string
	// Hosts are the IP addresses and DNS names the node's certificate
	// names besides its URI (NodeHosts form): what TLS clients such as
	// Prometheus verify the node by.
	Hosts []string
}

// joinPayload is the token's JSON payload: the registered claims plus
// smallstep's "sha" (root fingerprint) and "sans".
type joinPayload struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience audience `json:"aud"`
	Expiry   *int64   `json:"exp"`
	ID       string   `json:"jti"`
	SHA      string   `json:"sha"`
	SANs     []string `json:"sans"`
}

// audience is JWT's "aud": one string or an array of them.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// joinKeys are the payload's names exactly as signed. encoding/json
// matches names without regard to case; a key that differs from one of
// these in case only is refused rather than read as it.
var joinKeys = []string{"iss", "sub", "aud", "exp", "jti", "sha", "sans"}

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

// parseJoinPayload reads a compact JWS (header.payload.signature, each
// base64url without padding) by hand: the agent checks no signature (the
// CA does, in Enroll), so it needs no JOSE library, and a JOSE library is
// a good part of what smallstep would otherwise add to the agent.
func parseJoinPayload(tok string) (JoinClaims, error) {
	if len(tok) > maxTokenLen {
		return JoinClaims{}, fmt.Errorf("token is %d bytes long, the maximum is %d", len(tok), maxTokenLen)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return JoinClaims{}, fmt.Errorf("token has %d dot-separated parts, a signed JWT has 3", len(parts))
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodePart(parts[0], &h); err != nil {
		return JoinClaims{}, fmt.Errorf("token header: %w", err)
	}
	if h.Alg != "ES256" || h.Kid == "" {
		return JoinClaims{}, fmt.Errorf("token header: want alg ES256 and a kid, got alg %q kid %q", h.Alg, h.Kid)
	}
	// An ES256 signature is r||s, 32 bytes each.
	if sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil || len(sig) != 64 {
		return JoinClaims{}, fmt.Errorf("token signature: not 64 bytes of base64url (%d bytes, %v)", len(sig), err)
	}
	var raw map[string]json.RawMessage
	if err := decodePart(parts[1], &raw); err != nil {
		return JoinClaims{}, fmt.Errorf("decode token claims: %w", err)
	}
	for k := range raw {
		for _, want := range joinKeys {
			if k != want && strings.EqualFold(k, want) {
				return JoinClaims{}, fmt.Errorf("token claims: key %.20q is %q in another case", k, want)
			}
		}
	}
	var p joinPayload
	if err := decodePart(parts[1], &p); err != nil {
		return JoinClaims{}, fmt.Errorf("decode token claims: %w", err)
	}
	switch {
	case p.Issuer != JoinIssuer:
		return JoinClaims{}, fmt.Errorf("token issuer %q is not %q", p.Issuer, JoinIssuer)
	case !slices.Equal([]string(p.Audience), []string{JoinAudience}):
		return JoinClaims{}, fmt.Errorf("token audience %q is not %q", []string(p.Audience), JoinAudience)
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
	if want := NodeURI(p.Subject).String(); len(p.SANs) == 0 || p.SANs[0] != want {
		return JoinClaims{}, fmt.Errorf("token SANs %.100q, want %q first", p.SANs, want)
	}
	// The hosts must be written exactly as NodeHosts writes them, so that
	// one list of names has one encoding.
	var hosts []string
	if rest := p.SANs[1:]; len(rest) > 0 {
		norm, err := NodeHosts(rest)
		if err != nil || !slices.Equal(norm, rest) {
			return JoinClaims{}, fmt.Errorf("token SANs %.100q: the hosts after the node URI are not sorted, unique, canonical IP addresses or DNS names (at most %d)", p.SANs, MaxNodeHosts)
		}
		hosts = norm
	}
	return JoinClaims{
		Node:            p.Subject,
		ID:              p.ID,
		ExpiresAt:       time.Unix(*p.Expiry, 0),
		RootFingerprint: p.SHA,
		Hosts:           hosts,
	}, nil
}

// decodePart decodes one base64url part of a JWS into v (JSON).
func decodePart(part string, v any) error {
	b, err := base64.RawURLEncoding.Strict().DecodeString(part)
	if err != nil {
		return fmt.Errorf("not base64url: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	return nil
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

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER, as
// printed by `step certificate fingerprint`: what a join token pins.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
