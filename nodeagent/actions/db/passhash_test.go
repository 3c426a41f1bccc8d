package db

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/credentials"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const (
	testNative = "*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9" // "123456"
	testScram  = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$Jnr2sQVzH2B8PNyaD7c3bB6yY1d2m5LhJbQpTKtYI8A=:s8XoQ3pGn4gXUjGQ0y4iHEgx9bU5rSL1g3hmKxBzYDk="
	testMD5    = "md5e10adc3949ba59abbe56e057f20f883e"
)

func TestNormalizeDatabasePasswordHash(t *testing.T) {
	const m, p = validate.EngineMariaDB, validate.EnginePostgreSQL
	for _, c := range []struct{ engine, in, want string }{
		{m, testNative, testNative},
		{m, strings.ToLower(testNative), testNative},
		{p, testScram, testScram},
		{p, testMD5, testMD5},
		{p, "md5E10ADC3949BA59ABBE56E057F20F883E", testMD5},
	} {
		got, err := NormalizePasswordHash(c.engine, c.in)
		if err != nil || got != c.want {
			t.Errorf("%s %q: %q, %v", c.engine, c.in, got, err)
		}
	}
	for _, c := range []struct{ engine, in string }{
		{m, ""}, {m, "123456"}, {m, testNative[:40]}, {m, testNative + "0"}, {m, "*6BB4837EB74329105EE4568DDA7DC67ED2CA2AZ9"},
		{m, "*6BB4837EB74329105EE4568DDA7DC67ED2CA2A'9"}, {m, testScram}, {m, testMD5},
		{p, testNative}, {p, "md5e10adc"}, {p, "md5e10adc3949ba59abbe56e057f20f883g"},
		{p, "SCRAM-SHA-256$4096:c2FsdA==$short:short"},
		{p, "SCRAM-SHA-256$x:c2FsdA==$" + testScram[len(testScram)-89:]},
		{p, strings.Replace(testScram, "$4096:", "$04096:", 1)},
		{p, strings.Replace(testScram, "=:", "=':", 1)},
		{p, testScram + "'; DROP ROLE x; --"},
		{p, "SCRAM-SHA-1$4096:c2FsdA==$" + testScram[len(testScram)-89:]},
		{"sqlite", testNative},
	} {
		if _, err := NormalizePasswordHash(c.engine, c.in); err == nil {
			t.Errorf("%s %q accepted", c.engine, c.in)
		} else if c.in != "" && strings.Contains(err.Error(), c.in) {
			t.Errorf("error quotes the hash: %v", err)
		}
	}
}

// Whatever NormalizePasswordHash accepts is stable and has only the
// characters that may go into a quoted literal.
func FuzzNormalizeDatabasePasswordHash(f *testing.F) {
	for _, s := range []string{testNative, testScram, testMD5, "*'", "SCRAM-SHA-256$1:$:"} {
		f.Add(true, s)
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, maria bool, s string) {
		engine := validate.EnginePostgreSQL
		if maria {
			engine = validate.EngineMariaDB
		}
		h, err := NormalizePasswordHash(engine, s)
		if err != nil {
			return
		}
		if again, err := NormalizePasswordHash(engine, h); err != nil || again != h {
			t.Fatalf("%q: not stable: %q, %v", h, again, err)
		}
		if _, err := pgVerifierLiteral(strings.TrimPrefix(h, "*")); err != nil {
			t.Fatalf("%q: %v", h, err)
		}
	})
}

// sealedHashEnv is env with a node key; seal seals a hash to it for user.
func sealedHashEnv(t *testing.T, env *actions.Env) func(user, hash string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env.Unseal = func(sealed []byte, context string) ([]byte, error) { return pki.Unseal(key, sealed, context) }
	return func(user, hash string) []byte {
		b, err := pki.Seal(&key.PublicKey, []byte(hash), agentpb.DatabasePasswordHashSealContext(user))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func ensureUserFromHash(engine, name, owner string, sealed []byte, hosts ...string) *EnsureDatabaseUser {
	return testModule.NewEnsureDatabaseUser(&agentpb.EnsureDatabaseUserAction{Name: name, Owner: owner, Engine: engineEnum(engine), SealedPasswordHash: sealed, Hosts: hosts})
}

// A user made from a hash of a known password (read from a user made
// with that password, as the export on another node does) logs in with
// the password; a repeated ensure changes nothing; a bad hash is refused
// without showing it.
func testUserFromHash(t *testing.T, env *actions.Env, engine string, hosts ...string) {
	seal := sealedHashEnv(t, env)
	const pw = "Granite-Orbit-7714"
	mustApply(t, env, ensureUser(engine, "alice_src", "alice", pw, nil))
	hash, ok, err := testModule.UserPasswordHash(ctxT(t), env, engine, "alice", "alice_src")
	if err != nil || !ok {
		t.Fatalf("export: %v, %v", ok, err)
	}
	if _, ok, err := testModule.UserPasswordHash(ctxT(t), env, engine, "alice", "alice_none"); ok || err != nil {
		t.Fatalf("export of a missing user: %v, %v", ok, err)
	}
	if _, _, err := testModule.UserPasswordHash(ctxT(t), env, engine, "bob", "alice_src"); err == nil {
		t.Fatal("export of another account's user")
	}
	sealed := seal("alice_dst", hash)
	r := mustApply(t, env, ensureUserFromHash(engine, "alice_dst", "alice", sealed, hosts...)).(*agentpb.DatabaseUserResult)
	if r.Existed {
		t.Fatalf("first ensure: %+v", r)
	}
	if err := loginAs(t, env, engine, "alice_dst", pw); err != nil {
		t.Fatalf("login with the hashed password: %v", err)
	}
	if err := loginAs(t, env, engine, "alice_dst", pw+"x"); err == nil {
		t.Fatal("a wrong password logs in")
	}
	if got, _, err := testModule.UserPasswordHash(ctxT(t), env, engine, "alice", "alice_dst"); err != nil || got != hash {
		t.Fatalf("installed hash %q, %v; want %q", got, err, hash)
	}
	if r := mustApply(t, env, ensureUserFromHash(engine, "alice_dst", "alice", sealed, hosts...)).(*agentpb.DatabaseUserResult); !r.Existed || r.PasswordChanged {
		t.Fatalf("repeated ensure: %+v", r)
	}
	// A user whose password is changed elsewhere gets the new hash.
	mustApply(t, env, ensureUser(engine, "alice_src", "alice", pw+"-2", nil))
	hash2, _, err := testModule.UserPasswordHash(ctxT(t), env, engine, "alice", "alice_src")
	if err != nil {
		t.Fatal(err)
	}
	if r := mustApply(t, env, ensureUserFromHash(engine, "alice_dst", "alice", seal("alice_dst", hash2), hosts...)).(*agentpb.DatabaseUserResult); !r.PasswordChanged {
		t.Fatalf("new hash: %+v", r)
	}
	if err := loginAs(t, env, engine, "alice_dst", pw+"-2"); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}

	for name, sealed := range map[string][]byte{
		"plain password":      seal("alice_bad", pw),
		"sealed for another":  seal("alice_dst", hash),
		"injection":           seal("alice_bad", hash+"'; DROP USER alice_src; --"),
		"other engine's hash": seal("alice_bad", map[bool]string{true: testScram, false: testNative}[engine == validate.EngineMariaDB]),
	} {
		_, err := apply(t, env, ensureUserFromHash(engine, "alice_bad", "alice", sealed))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), hash) {
			t.Errorf("%s: error shows the secret: %v", name, err)
		}
	}
	if _, ok, _ := testModule.UserPasswordHash(ctxT(t), env, engine, "alice", "alice_bad"); ok {
		t.Fatal("a refused hash made a user")
	}
	if err := loginAs(t, env, engine, "alice_src", pw+"-2"); err != nil {
		t.Fatalf("source user: %v", err)
	}
	if err := testModule.NewEnsureDatabaseUser(&agentpb.EnsureDatabaseUserAction{Name: "alice_dst", Owner: "alice", Engine: engineEnum(engine),
		Password: pw, SealedPasswordHash: sealed}).Validate(); err == nil {
		t.Fatal("password and hash accepted together")
	}
}

func TestMariaDBUserFromPasswordHash(t *testing.T) {
	env, _ := mariaEnv(t)
	testUserFromHash(t, env, validate.EngineMariaDB, "10.0.0.0/8")
}

func TestPostgresUserFromPasswordHash(t *testing.T) {
	env, _ := pgEnv(t)
	testUserFromHash(t, env, validate.EnginePostgreSQL)
	// An md5 hash (cPanel's PostgreSQL users) is stored as it is: md5
	// over password and user name.
	seal := sealedHashEnv(t, env)
	sum := md5.Sum([]byte("Granite-Orbit-7714" + "alice_md5"))
	h := "md5" + hex.EncodeToString(sum[:])
	mustApply(t, env, ensureUserFromHash(validate.EnginePostgreSQL, "alice_md5", "alice", seal("alice_md5", h)))
	if got, _, err := testModule.UserPasswordHash(ctxT(t), env, validate.EnginePostgreSQL, "alice", "alice_md5"); err != nil || got != h {
		t.Fatalf("md5 hash stored as %q, %v", got, err)
	}
}

// A migration's credentials step: export_credentials on the node the
// user leaves, sealed to the new node's key; the new node creates the
// user from it and the password logs in. (One server plays both nodes:
// the user is dropped in between.)
func TestExportCredentialsRoundTrip(t *testing.T) {
	for _, engine := range []string{validate.EngineMariaDB, validate.EnginePostgreSQL} {
		t.Run(engine, func(t *testing.T) {
			var env *actions.Env
			if engine == validate.EngineMariaDB {
				env, _ = mariaEnv(t)
			} else {
				env, _ = pgEnv(t)
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			env.Unseal = func(sealed []byte, context string) ([]byte, error) { return pki.Unseal(key, sealed, context) }
			der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			const pw = "Harbor-Lichen-6620"
			mustApply(t, env, ensureUser(engine, "alice_app", "alice", pw, nil))
			out := mustApply(t, env, credentials.NewModule(nil, testModule, nil).NewExport(&agentpb.ExportCredentialsAction{
				Username:      "alice",
				DatabaseUsers: []*agentpb.ExportDatabaseUser{{Name: "alice_app", Engine: engineEnum(engine)}, {Name: "alice_gone", Engine: engineEnum(engine)}},
				SealTo:        der,
			})).(*agentpb.ExportCredentialsResult)
			if len(out.DatabaseUsers) != 1 || len(out.Failed) != 1 || out.Failed[0].Item != "database_user:alice_gone" {
				t.Fatalf("export: %v", out)
			}
			mustApply(t, env, dropUser(engine, "alice_app", "alice"))
			mustApply(t, env, ensureUserFromHash(engine, "alice_app", "alice", out.DatabaseUsers[0].SealedHash))
			if err := loginAs(t, env, engine, "alice_app", pw); err != nil {
				t.Fatalf("login after the move: %v", err)
			}
		})
	}
}
