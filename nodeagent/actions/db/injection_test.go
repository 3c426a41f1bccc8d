package db

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// hostileNames are database and user names for owner "alice" that must all
// be refused before anything reaches a server.
var hostileNames = []string{
	"alice_x'; DROP DATABASE mysql; --",
	"alice_x`; DROP USER root@localhost; --",
	"alice_x`",
	`alice_x"`,
	`alice_x"; DROP ROLE npanel; --`,
	"alice_x'",
	"alice_x/*",
	"alice_x*/",
	"alice_x--",
	"alice_x#",
	"alice_x;",
	"alice_x\x00",
	"alice_x\x00; DROP DATABASE mysql",
	"alice_x\n",
	"alice_x\r\nDROP DATABASE mysql",
	"alice_x y",
	"alice_x\t",
	"alice_х",       // Cyrillic х
	"аlice_x",       // Cyrillic а in the owner
	"alice_ｘ",       // fullwidth x
	"alice_x\u200b", // zero-width space
	"alice_x\u202e", // right-to-left override
	"alice_x\xff",   // invalid UTF-8
	"alice_%",
	"alice_x%",
	"alice_\\_",
	"alice_x\\",
	"alice__",
	"alice_",
	"alice",
	"ALICE_X",
	"Alice_x",
	"alice_x.y",
	"alice_x@localhost",
	"alice_x'@'%",
	"../alice_x",
	"alice_x/../../etc",
	"alice_$(id)",
	"alice_${IFS}",
	"alice_x'or'1'='1",
	"bob_x",
	"alicex_y",
	"_alice_x",
	"alice_" + strings.Repeat("x", 58), // 64 bytes
	"alice_" + strings.Repeat("x", 5000),
}

// hostilePasswords that must be refused (the error must not echo them).
var hostilePasswords = []string{
	"short1A!",
	"alllowercaseletters",
	"ALLUPPERCASELETTERS",
	"123456789012345",
	"Pass\x00word12345",
	"Pass\nword12345x",
	"Päss wörd 12345",
	"Passw0rd alice_app",
	"xXalice_appXx123",
	"Secret-alice-123",
	"aaaaaaaaaaaaaaaaaaaa",
	strings.Repeat("Ab1", 30),
}

// quotyPasswords are valid passwords full of SQL syntax: accepted, and
// harmless (the server only ever sees their hash).
var quotyPasswords = []string{
	"';DROP/**/DATABASE/**/mysql;--Aa1",
	"x');DROP/**/USER/**/root@localhost;#A1",
	"Pa`ss`w0rd;--x'\"",
	`Pass\'word123"\\`,
	"Zz9'/**/OR/**/'1'='1",
	"%_%_%_%_Aa1%_%_",
}

var hostilePrivileges = [][]string{
	{"SELECT ON *.* TO x;--"},
	{"GRANT OPTION"},
	{"GRANT"},
	{"FILE"},
	{"SUPER"},
	{"PROCESS"},
	{"ALL; DROP DATABASE mysql"},
	{"SELECT,INSERT"},
	{"SELECT\x00"},
	{"SЕLECT"}, // Cyrillic Е
	{"select "},
	{},
}

var hostileHosts = []string{"%", "localhost'; DROP USER x; --", "10.0.0.%", "example.com", "10.0.0.1/8", "::1%eth0", "_", "10.0.0.0/8'"}

func injectionTest(t *testing.T, env *actions.Env, engine string, state func() []string) {
	const owner = "alice"
	mustApply(t, env, ensureDB(engine, "alice_keep", owner))
	mustApply(t, env, ensureUser(engine, "alice_keeper", owner, pw1, map[string][]string{"alice_keep": {"ALL"}}))
	before := state()
	ctx := context.Background()
	count := 0
	refuse := func(what string, a actions.Action) {
		t.Helper()
		count++
		if err := a.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", what)
		}
		// Apply validates again: skipping Validate changes nothing.
		if _, err := a.Apply(ctx, env); err == nil {
			t.Errorf("%s: Apply accepted it", what)
		}
	}
	for _, n := range hostileNames {
		refuse("ensure database "+n, ensureDB(engine, n, owner))
		refuse("drop database "+n, dropDB(engine, n, owner))
		refuse("ensure user "+n, ensureUser(engine, n, owner, pw1, nil))
		refuse("drop user "+n, dropUser(engine, n, owner))
		refuse("grant on "+n, ensureUser(engine, "alice_u", owner, pw1, map[string][]string{n: {"SELECT"}}))
		if n != owner {
			refuse("list "+n, listDBs(engine, n))
		}
	}
	for _, pw := range hostilePasswords {
		a := ensureUser(engine, "alice_app", owner, pw, nil)
		refuse("password", a)
		if err := a.Validate(); err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("error echoes the password: %v", err)
		}
	}
	for _, p := range hostilePrivileges {
		refuse("privileges "+strings.Join(p, ","), ensureUser(engine, "alice_u", owner, pw1, map[string][]string{"alice_keep": p}))
	}
	for _, h := range hostileHosts {
		refuse("host "+h, ensureUser(engine, "alice_u", owner, pw1, nil, h))
	}
	if got := state(); !slices.Equal(got, before) {
		t.Fatalf("server state changed by refused input:\nbefore %v\nafter  %v", before, got)
	}

	// Passwords full of SQL: accepted, the user logs in with exactly that
	// password, and nothing else changes.
	priv := "SELECT"
	if engine == validate.EnginePostgreSQL {
		priv = "CONNECT"
	}
	for i, pw := range quotyPasswords {
		count++
		name := "alice_q" + string(rune('a'+i))
		mustApply(t, env, ensureUser(engine, name, owner, pw, map[string][]string{"alice_keep": {priv}}))
		if err := loginAs(t, env, engine, name, pw); err != nil {
			t.Errorf("password %d: login: %v", i, err)
		}
		if r := mustApply(t, env, ensureUser(engine, name, owner, pw, map[string][]string{"alice_keep": {priv}})).(*agentpb.DatabaseUserResult); r.PasswordChanged {
			t.Errorf("password %d: repeat changed it", i)
		}
		mustApply(t, env, dropUser(engine, name, owner))
	}
	if got := state(); !slices.Equal(got, before) {
		t.Fatalf("server state changed by quoted passwords:\nbefore %v\nafter  %v", before, got)
	}
	t.Logf("%d hostile inputs refused or harmless", count)
}

func TestMariaDBInjection(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	injectionTest(t, env, validate.EngineMariaDB, func() []string {
		dbs, users := mariaState(t, root)
		return append(dbs, users...)
	})
}
