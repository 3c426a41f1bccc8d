package auth_test

import (
	"context"
	"errors"
	"golang.org/x/crypto/bcrypt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func newAuth(t *testing.T) (*auth.Authenticator, *store.Store) {
	t.Helper()
	st := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	hash, err := auth.HashPassword("correct horse", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{Name: "alice", Role: store.RoleAdmin, PasswordHash: hash, CreatedAt: time.Now()}
	if err := st.CreateUser(context.Background(), u, store.NewAuditEvent("test", "", "createUser", "alice", "ok")); err != nil {
		t.Fatal(err)
	}
	return auth.New(st, []byte("0123456789abcdef0123456789abcdef"), bcrypt.MinCost), st
}

func TestLoginAndVerify(t *testing.T) {
	a, _ := newAuth(t)
	ctx := context.Background()
	tok, exp, p, err := a.Login(ctx, "alice", "correct horse", "192.0.2.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "alice" || p.Role != store.RoleAdmin || time.Until(exp) < auth.TokenTTL-time.Minute {
		t.Fatalf("login = %+v, expires %s", p, exp)
	}
	got, err := a.Verify(ctx, tok)
	if err != nil || got != p {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "x", tok + "x", tok[:len(tok)-2]} {
		if _, err := a.Verify(ctx, bad); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("Verify(%.20q) = %v, want ErrInvalidToken", bad, err)
		}
	}
	// A token signed with another key is refused.
	other := auth.New(nil, []byte("another key, another cluster....."), 0)
	forged, _, err := other.Issue(auth.Principal{Name: "alice", Role: store.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(ctx, forged); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("forged token: %v", err)
	}
	// Expired, and a role the user does not have: refused.
	expired, _, _ := a.Issue(p, -time.Minute)
	if _, err := a.Verify(ctx, expired); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
	elevated, _, _ := a.Issue(auth.Principal{Name: "bob", Role: store.RoleAdmin}, time.Hour)
	if _, err := a.Verify(ctx, elevated); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("token for unknown user: %v", err)
	}
}

func TestLoginRefusals(t *testing.T) {
	a, _ := newAuth(t)
	ctx := context.Background()
	for _, tc := range []struct{ user, pw string }{{"alice", "wrong"}, {"nobody", "correct horse"}, {"alice", ""},
		{"alice" + strings.Repeat("x", 1<<20), "correct horse"}} {
		if _, _, _, err := a.Login(ctx, tc.user, tc.pw, "192.0.2.1:1"); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("Login(%.40q, %q) = %v, want ErrInvalidCredentials", tc.user, tc.pw, err)
		}
	}
	// A guesser from one address is slowed down after a burst, even with
	// the right password.
	var limited bool
	for range 20 {
		_, _, _, err := a.Login(ctx, "alice", "wrong", "198.51.100.7:1")
		if errors.Is(err, auth.ErrRateLimited) {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("20 rapid failures were never rate limited")
	}
	if _, _, _, err := a.Login(ctx, "alice", "correct horse", "198.51.100.7:1"); !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("login during the limit = %v, want ErrRateLimited", err)
	}
}

func TestMiddleware(t *testing.T) {
	a, _ := newAuth(t)
	tok, _, p, err := a.Login(context.Background(), "alice", "correct horse", "192.0.2.9:1")
	if err != nil {
		t.Fatal(err)
	}
	var seen *auth.Principal
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got, ok := auth.FromContext(r.Context()); ok {
			seen = &got
		}
	}))
	for _, tc := range []struct {
		header string
		code   int
		authed bool
	}{
		{"", 200, false},
		{"Bearer " + tok, 200, true},
		{"Bearer nope", 401, false},
		{"Basic abc", 401, false},
	} {
		seen = nil
		req := httptest.NewRequest(http.MethodPost, "/graphql", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || (seen != nil) != tc.authed || (seen != nil && *seen != p) {
			t.Errorf("header %.15q: code %d, principal %v", tc.header, rec.Code, seen)
		}
	}
}
