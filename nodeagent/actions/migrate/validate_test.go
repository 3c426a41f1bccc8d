package migrate

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/protos/agentpb"
)

func authorizedKey(t testing.TB, k any) string {
	t.Helper()
	pk, err := ssh.NewPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

func TestValidateAuthorize(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edKey, rsaKey := authorizedKey(t, pub), authorizedKey(t, &rk.PublicKey)
	now := time.Now()
	good := func() *agentpb.AuthorizeMigrationAction {
		return &agentpb.AuthorizeMigrationAction{MigrationId: "m-1", Username: "alice", PublicKey: edKey,
			FromAddresses: []string{"192.0.2.10", "2001:db8::/48"}, ExpiresUnix: now.Add(time.Hour).Unix(),
			Databases: []*agentpb.BackupDatabase{{Engine: "mariadb", Name: "alice_shop"}},
			SourceUid: 1001, SourceGid: 1001}
	}
	if err := (&Module{}).NewAuthorizeMigration(good()).Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(a *agentpb.AuthorizeMigrationAction){
		"empty id":         func(a *agentpb.AuthorizeMigrationAction) { a.MigrationId = "" },
		"id with slash":    func(a *agentpb.AuthorizeMigrationAction) { a.MigrationId = "../x" },
		"id with dot":      func(a *agentpb.AuthorizeMigrationAction) { a.MigrationId = "a.b" },
		"bad username":     func(a *agentpb.AuthorizeMigrationAction) { a.Username = "Root;" },
		"test username":    func(a *agentpb.AuthorizeMigrationAction) { a.Username = "nptabc" },
		"rsa key":          func(a *agentpb.AuthorizeMigrationAction) { a.PublicKey = rsaKey },
		"garbage key":      func(a *agentpb.AuthorizeMigrationAction) { a.PublicKey = "ssh-ed25519 AAAA" },
		"key with options": func(a *agentpb.AuthorizeMigrationAction) { a.PublicKey = `command="sh" ` + edKey },
		"two keys":         func(a *agentpb.AuthorizeMigrationAction) { a.PublicKey = edKey + "\n" + edKey },
		"no from":          func(a *agentpb.AuthorizeMigrationAction) { a.FromAddresses = nil },
		"bad from":         func(a *agentpb.AuthorizeMigrationAction) { a.FromAddresses = []string{"example.com"} },
		"wide from":        func(a *agentpb.AuthorizeMigrationAction) { a.FromAddresses = []string{"0.0.0.0/0"} },
		"unspecified from": func(a *agentpb.AuthorizeMigrationAction) { a.FromAddresses = []string{"::"} },
		"expired":          func(a *agentpb.AuthorizeMigrationAction) { a.ExpiresUnix = now.Add(-time.Second).Unix() },
		"too long":         func(a *agentpb.AuthorizeMigrationAction) { a.ExpiresUnix = now.Add(8 * 24 * time.Hour).Unix() },
		"other's database": func(a *agentpb.AuthorizeMigrationAction) { a.Databases[0].Name = "bob_shop" },
		"bad engine":       func(a *agentpb.AuthorizeMigrationAction) { a.Databases[0].Engine = "mysql" },
		"database twice":   func(a *agentpb.AuthorizeMigrationAction) { a.Databases = append(a.Databases, a.Databases[0]) },
		"root source uid":  func(a *agentpb.AuthorizeMigrationAction) { a.SourceUid = 0 },
		"root source gid":  func(a *agentpb.AuthorizeMigrationAction) { a.SourceGid = 0 },
	} {
		a := good()
		mod(a)
		if err := (&Module{}).NewAuthorizeMigration(a).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestValidateSync(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	hk := authorizedKey(t, pub)
	good := func() *agentpb.SyncMigrationAction {
		return &agentpb.SyncMigrationAction{MigrationId: "m-1", Username: "alice", TargetEndpoint: "192.0.2.1:2222",
			TargetHostKey: hk, Files: true}
	}
	if err := (&Module{}).NewSyncMigration(good()).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{"web2.example.com:2222", "[2001:db8::1]:2222"} {
		a := good()
		a.TargetEndpoint = ep
		if err := (&Module{}).NewSyncMigration(a).Validate(); err != nil {
			t.Errorf("%s: %v", ep, err)
		}
	}
	for name, mod := range map[string]func(a *agentpb.SyncMigrationAction){
		"no port":       func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = "192.0.2.1" },
		"wildcard host": func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = ":2222" },
		"any host":      func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = "0.0.0.0:2222" },
		"port 0":        func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = "192.0.2.1:0" },
		"option host":   func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = "-oProxyCommand=sh:22" },
		"space host":    func(a *agentpb.SyncMigrationAction) { a.TargetEndpoint = "a b:22" },
		"no host key":   func(a *agentpb.SyncMigrationAction) { a.TargetHostKey = "" },
		"nothing":       func(a *agentpb.SyncMigrationAction) { a.Files = false },
		"bad database": func(a *agentpb.SyncMigrationAction) {
			a.Databases = []*agentpb.BackupDatabase{{Engine: "mariadb", Name: "x;drop"}}
		},
		"bad user": func(a *agentpb.SyncMigrationAction) { a.Username = "-oProxyCommand" },
	} {
		a := good()
		mod(a)
		if err := (&Module{}).NewSyncMigration(a).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (&Module{}).NewRevokeMigration(&agentpb.RevokeMigrationAction{MigrationId: "../../x"}).Validate(); err == nil {
		t.Error("revoke: bad id accepted")
	}
	if err := (&Module{}).NewMigrationKey(&agentpb.MigrationKeyAction{MigrationId: "m", Username: ""}).Validate(); err == nil {
		t.Error("key: empty user accepted")
	}
}

func TestAllows(t *testing.T) {
	a := &authorization{From: []string{"192.0.2.10", "10.1.0.0/16", "2001:db8::/48"}}
	for addr, want := range map[string]bool{
		"192.0.2.10": true, "192.0.2.11": false, "10.1.200.3": true, "10.2.0.1": false,
		"2001:db8:0:1::5": true, "2001:db9::1": false, "::ffff:192.0.2.10": true,
	} {
		if got := a.allows(mustAddr(t, addr)); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
