package db

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// The control plane sends a database user's password sealed to the node's
// key; the action opens it with the node's key and the user's context only.
func TestSealedPassword(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	env := &actions.Env{Unseal: func(sealed []byte, context string) ([]byte, error) { return pki.Unseal(key, sealed, context) }}
	const pw = "Correct-Horse-42"
	seal := func(pub *ecdsa.PublicKey, user, secret string) []byte {
		b, err := pki.Seal(pub, []byte(secret), agentpb.DatabasePasswordSealContext(user))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mk := func(sealed []byte, clear string) *EnsureDatabaseUser {
		return NewEnsureDatabaseUser(&agentpb.EnsureDatabaseUserAction{Name: "alice_app", Owner: "alice", SealedPassword: sealed, Password: clear})
	}

	a := mk(seal(&key.PublicKey, "alice_app", pw), "")
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := a.unseal(env)
	if err != nil || got != pw {
		t.Fatalf("unseal: %q, %v", got, err)
	}

	for name, c := range map[string]struct {
		a   *EnsureDatabaseUser
		env *actions.Env
	}{
		"sealed for another user": {mk(seal(&key.PublicKey, "alice_other", pw), ""), env},
		"sealed for another node": {mk(seal(&other.PublicKey, "alice_app", pw), ""), env},
		"weak password":           {mk(seal(&key.PublicKey, "alice_app", "alice_app1"), ""), env},
		"empty password":          {mk(seal(&key.PublicKey, "alice_app", ""), ""), env},
		"no key":                  {mk(seal(&key.PublicKey, "alice_app", pw), ""), &actions.Env{}},
		"tampered":                {mk(append(seal(&key.PublicKey, "alice_app", pw)[:40], 1, 2, 3), ""), env},
	} {
		_, err := c.a.unseal(c.env)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
		if name == "sealed for another node" && !errors.Is(err, pki.ErrUnseal) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := mk(seal(&key.PublicKey, "alice_app", pw), pw).Validate(); err == nil {
		t.Error("both password and sealed_password accepted")
	}
}
