// Package auth authenticates API callers: password hashes, signed bearer
// tokens and the principal carried in a request's context.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/validate"
)

// PasswordCost is the bcrypt cost for API users: ~75 ms per check on this
// class of machine, which bounds an online guesser without making logins slow.
const PasswordCost = 10

// TokenTTL is how long a login token is valid.
const TokenTTL = 12 * time.Hour

var (
	// ErrInvalidCredentials hides whether the user or the password was wrong.
	ErrInvalidCredentials = errors.New("invalid username or password")
	ErrInvalidToken       = errors.New("invalid or expired token")
	ErrRateLimited        = errors.New("too many login attempts; try again later")
)

// Principal is the authenticated caller.
type Principal struct {
	Name string
	Role store.Role
	// Account is the one account a user-role principal may act on.
	Account string
	// TokenID is set when the caller used an API token.
	TokenID string
	// Generation is the user's session generation a login token was
	// issued at (store.User.Generation).
	Generation int64
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the caller, if the request was authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// HashPassword returns a bcrypt hash at the authenticator's cost.
func (a *Authenticator) HashPassword(pw string) (string, error) { return HashPassword(pw, a.cost) }

// HashPassword returns a bcrypt hash at cost.
func HashPassword(pw string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// dummy returns the hash compared against when the user does not exist, so
// that the response time does not tell an attacker which user names are
// real. It is made on first use, at the authenticator's cost.
func (a *Authenticator) dummy() []byte {
	a.dummyOnce.Do(func() {
		a.dummyHash, _ = bcrypt.GenerateFromPassword([]byte("npanel-timing-equaliser"), a.cost)
	})
	return a.dummyHash
}

// Authenticator checks passwords and issues and verifies bearer tokens.
type Authenticator struct {
	store *store.Store
	key   []byte
	cost  int
	now   func() time.Time

	dummyOnce sync.Once
	dummyHash []byte

	throttle *throttle

	// OnRefused, when set, is told of each request refused for a bad
	// token (for the rate-limited audit of refusals).
	OnRefused func(r *http.Request, reason string)
}

// New returns an Authenticator signing tokens with key (HMAC-SHA256) and
// hashing new passwords at bcrypt cost (0: PasswordCost). Existing hashes
// verify at whatever cost they were made with.
func New(st *store.Store, key []byte, cost int) *Authenticator {
	if cost == 0 {
		cost = PasswordCost
	}
	return &Authenticator{store: st, key: key, cost: cost, now: time.Now, throttle: newThrottle()}
}

type claims struct {
	Role store.Role `json:"role"`
	// Gen is the user's session generation at login: bumping the user's
	// generation (logout, revokeSessions, a new password or role) voids
	// every login token issued before.
	Gen int64 `json:"gen,omitempty"`
	jwt.RegisteredClaims
}

const (
	issuer   = "npanel"
	audience = "npanel-api"
)

// Login checks the password and returns a token. source is the client's
// IP (a host:port is reduced to its host); attempts are throttled per IP,
// per user and IP, and per user (see throttle).
func (a *Authenticator) Login(ctx context.Context, user, password, source string) (string, time.Time, Principal, error) {
	u, err := a.CheckPassword(ctx, user, password, source)
	if err != nil {
		return "", time.Time{}, Principal{}, err
	}
	p := Principal{Name: u.Name, Role: u.Role, Account: u.Account, Generation: u.Generation}
	tok, exp, err := a.Issue(p, TokenTTL)
	return tok, exp, p, err
}

// CheckPassword returns the user when password is its password, under the
// login throttle.
func (a *Authenticator) CheckPassword(ctx context.Context, user, password, source string) (*store.User, error) {
	if host, _, err := net.SplitHostPort(source); err == nil {
		source = host
	}
	// No user has a longer name; cutting it keeps a megabyte-long name out
	// of the throttle's keys while the attempt still counts and fails.
	if len(user) > validate.UsernameMaxLen {
		user = user[:validate.UsernameMaxLen+1]
	}
	if !a.throttle.begin(user, source, a.now()) {
		return nil, ErrRateLimited
	}
	u, err := a.store.GetUser(ctx, user)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		a.throttle.refund(source) // not the client's fault
		return nil, err
	}
	hash := a.dummy()
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && u != nil
	a.throttle.end(user, source, ok, a.now())
	if !ok {
		return nil, ErrInvalidCredentials
	}
	return u, nil
}

// Issue signs a token for p valid for ttl.
func (a *Authenticator) Issue(p Principal, ttl time.Duration) (string, time.Time, error) {
	now := a.now()
	exp := now.Add(ttl)
	c := claims{
		Role: p.Role,
		Gen:  p.Generation,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   p.Name,
			Audience:  jwt.ClaimStrings{audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return tok, exp, nil
}

// APITokenPrefix marks API tokens ("npk_<id>_<secret>") apart from login
// tokens (JWTs), so that Verify knows which check applies and secret scanners
// can recognise a leaked one.
const APITokenPrefix = "npk_"

// NewAPIToken makes a token for user and the record that verifies it. The
// returned string is the only copy of the secret.
func NewAPIToken(user, name string, expires time.Time) (string, store.APIToken, error) {
	id, secret := make([]byte, 8), make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return "", store.APIToken{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", store.APIToken{}, err
	}
	t := store.APIToken{
		ID:        hex.EncodeToString(id),
		Name:      name,
		User:      user,
		ExpiresAt: expires,
		CreatedAt: time.Now().UTC(),
	}
	sec := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(sec))
	t.SecretHash = sum[:]
	return APITokenPrefix + t.ID + "_" + sec, t, nil
}

func (a *Authenticator) verifyAPIToken(ctx context.Context, token string) (Principal, error) {
	id, sec, ok := strings.Cut(strings.TrimPrefix(token, APITokenPrefix), "_")
	if !ok || len(id) != 16 {
		return Principal{}, ErrInvalidToken
	}
	t, err := a.store.GetAPIToken(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, ErrInvalidToken
		}
		return Principal{}, err
	}
	sum := sha256.Sum256([]byte(sec))
	if subtle.ConstantTimeCompare(sum[:], t.SecretHash) != 1 {
		return Principal{}, ErrInvalidToken
	}
	if !t.ExpiresAt.IsZero() && a.now().After(t.ExpiresAt) {
		return Principal{}, ErrInvalidToken
	}
	u, err := a.store.GetUser(ctx, t.User)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, ErrInvalidToken
		}
		return Principal{}, err
	}
	if !t.UserCreatedAt.IsZero() && !t.UserCreatedAt.Equal(u.CreatedAt) {
		return Principal{}, ErrInvalidToken // its user was deleted; this is another of the name
	}
	return Principal{Name: u.Name, Role: u.Role, Account: u.Account, TokenID: t.ID}, nil
}

// Verify checks a bearer token. For a login token: signature, issuer,
// audience, expiry; for an API token: the stored hash and expiry. Either way
// the user must still exist with the same role: deleting a user, changing
// its role or revoking the token takes effect on the next request.
func (a *Authenticator) Verify(ctx context.Context, token string) (Principal, error) {
	if strings.HasPrefix(token, APITokenPrefix) {
		return a.verifyAPIToken(ctx, token)
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) { return a.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer), jwt.WithAudience(audience), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.now))
	if err != nil {
		return Principal{}, ErrInvalidToken
	}
	// The replica's mirror of users answers for users that exist with the
	// token's role; before a token is refused, etcd is asked (the user may
	// be milliseconds old). Were users ever deleted or given another role,
	// the old one would keep working for as long as the mirror lags:
	// milliseconds.
	// The session generation is checked the same way: a revoked token is
	// refused without an etcd read once the mirror has the new generation,
	// and a token newer than the mirror is checked against etcd.
	u, err := a.store.CachedUser(ctx, c.Subject)
	if err == nil && u.Generation > c.Gen {
		// Generations only rise: the mirror has seen this token revoked.
		return Principal{}, ErrInvalidToken
	}
	if err == nil && (subtle.ConstantTimeCompare([]byte(u.Role), []byte(c.Role)) != 1 || u.Generation != c.Gen) {
		u, err = a.store.GetUser(ctx, c.Subject)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, ErrInvalidToken
		}
		return Principal{}, err
	}
	if subtle.ConstantTimeCompare([]byte(u.Role), []byte(c.Role)) != 1 || u.Generation != c.Gen {
		return Principal{}, ErrInvalidToken
	}
	return Principal{Name: u.Name, Role: u.Role, Account: u.Account, Generation: u.Generation}, nil
}

// SessionValid reports whether p, verified earlier (a websocket's sign-in),
// still holds: the user exists with its role and, for a login token, its
// session generation was not raised since. It reads the replica's mirror.
func (a *Authenticator) SessionValid(ctx context.Context, p Principal) bool {
	holds := func(u *store.User) bool {
		return u.Role == p.Role && (p.TokenID != "" || u.Generation == p.Generation)
	}
	u, err := a.store.CachedUser(ctx, p.Name)
	if err == nil && !holds(u) {
		u, err = a.store.GetUser(ctx, p.Name) // the mirror may lag the login
	}
	if err != nil {
		// Deleted: refused. The store unreachable: the sign-in stands.
		return !errors.Is(err, store.ErrNotFound)
	}
	return holds(u)
}

// Middleware authenticates requests that carry "Authorization: Bearer". A
// request without one passes through unauthenticated (login must work); a
// request with a bad one is refused here with 401, before any resolver runs.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if h == "" {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			a.refused(r, "malformed authorization header")
			writeUnauthenticated(w, "authorization header must be \"Bearer <token>\"")
			return
		}
		p, err := a.Verify(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			if errors.Is(err, ErrInvalidToken) {
				a.refused(r, "invalid token")
				writeUnauthenticated(w, err.Error())
				return
			}
			http.Error(w, "authentication backend unavailable", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

func (a *Authenticator) refused(r *http.Request, reason string) {
	if a.OnRefused != nil {
		a.OnRefused(r, reason)
	}
}

func writeUnauthenticated(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{
		"message": msg, "extensions": map[string]string{"code": "UNAUTHENTICATED"},
	}}})
}
