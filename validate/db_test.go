package validate

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	for _, tc := range []struct {
		name, owner string
		ok          bool
	}{
		{"alice_shop", "alice", true},
		{"alice_a_b", "alice", true},
		{"alice_1", "alice", true},
		{"npt1_x", "npt1", true},
		{"alice_" + strings.Repeat("x", MaxDatabaseNameLen-6), "alice", true},
		{"alice_" + strings.Repeat("x", MaxDatabaseNameLen-5), "alice", false},
		{"alice_", "alice", false},
		{"alice__x", "alice", false},
		{"alice", "alice", false},
		{"bob_shop", "alice", false},
		{"alicex_shop", "alice", false},
		{"Alice_shop", "alice", false},
		{"alice_Shop", "alice", false},
		{"alice_sh-op", "alice", false},
		{"alice_sh%", "alice", false},
		{"alice_x`", "alice", false},
		{"alice_x'", "alice", false},
		{"alice_x\x00", "alice", false},
		{"alice_х", "alice", false},
		{"performance_schema", "performance", false},
		{"information_schema", "information", false},
		{"a_b", "", false},
		{"a_b_c", "a_b", false},
		{"1a_b", "1a", false},
	} {
		err := DatabaseName(tc.name, tc.owner)
		if (err == nil) != tc.ok {
			t.Errorf("DatabaseName(%q, %q) = %v, want ok=%v", tc.name, tc.owner, err, tc.ok)
		}
		if err != nil {
			var ve *Error
			if !errors.As(err, &ve) {
				t.Errorf("error %T is not *Error", err)
			}
		}
		if err := DatabaseUser(tc.name, tc.owner); (err == nil) != tc.ok {
			t.Errorf("DatabaseUser(%q, %q) = %v, want ok=%v", tc.name, tc.owner, err, tc.ok)
		}
	}
	if o := DatabaseOwner("alice_a_b"); o != "alice" {
		t.Errorf("owner %q", o)
	}
}

func TestDatabasePrivileges(t *testing.T) {
	got, err := DatabasePrivileges(EngineMariaDB, []string{"select", "INSERT", "create_temporary_tables", "SELECT"})
	if err != nil || !slices.Equal(got, []string{"CREATE TEMPORARY TABLES", "INSERT", "SELECT"}) {
		t.Fatalf("%v %v", got, err)
	}
	all, err := DatabasePrivileges(EngineMariaDB, []string{"ALL PRIVILEGES"})
	if err != nil || len(all) != len(mariadbPrivileges) || slices.Contains(all, "GRANT OPTION") {
		t.Fatalf("ALL: %v %v", all, err)
	}
	pg, err := DatabasePrivileges(EnginePostgreSQL, []string{"TEMP"})
	if err != nil || !slices.Equal(pg, []string{"CONNECT", "TEMPORARY"}) {
		t.Fatalf("pg: %v %v", pg, err)
	}
	for _, bad := range [][]string{nil, {""}, {"GRANT OPTION"}, {"FILE"}, {"SUPER"}, {"SELECT;"}, {"SELECT ON *.*"}, {" SELECT"}, {"SELECT "}, {"SEL  ECT"}, {"SЕLECT"}, {"ALL; DROP"}} {
		if _, err := DatabasePrivileges(EngineMariaDB, bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := DatabasePrivileges(EnginePostgreSQL, []string{"SELECT"}); err == nil {
		t.Error("pg accepted SELECT")
	}
	if _, err := DatabasePrivileges("oracle", []string{"SELECT"}); err == nil {
		t.Error("unknown engine accepted")
	}
}

func TestDatabaseHost(t *testing.T) {
	for in, want := range map[string]string{
		"localhost":      "localhost",
		"192.0.2.7":      "192.0.2.7",
		"10.1.2.0/24":    "10.1.2.0/255.255.255.0",
		"10.0.0.0/8":     "10.0.0.0/255.0.0.0",
		"0.0.0.0/0":      "0.0.0.0/0.0.0.0",
		"192.0.2.7/32":   "192.0.2.7",
		"2001:db8::1":    "2001:db8::1",
		"::ffff:1.2.3.4": "1.2.3.4",
	} {
		if got, err := DatabaseHost(in); err != nil || got != want {
			t.Errorf("DatabaseHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "%", "10.0.0.%", "example.com", "10.0.0.1/8", "2001:db8::/32", "fe80::1%eth0", "0.0.0.0", "224.0.0.1", "_", "localhost'"} {
		if _, err := DatabaseHost(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestDatabasePassword(t *testing.T) {
	for _, ok := range []string{"Str0ng-Passw0rd!", "correct-horse-battery-9", "';DROP/**/TABLE/**/x;--A1"} {
		if err := DatabasePassword(ok, "alice_app"); err != nil {
			t.Errorf("refused %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"short1A", "alllowercaseletters", "ALLUPPER1234567"[:0] + "ABCDEFGHIJKLMNOP", "12345678901234", "Pass word 1234", "Pässwörd12345", "Xalice_appX1234", "myALICEpassword1", "Pass\x00word12345"} {
		err := DatabasePassword(bad, "alice_app")
		if err == nil {
			t.Errorf("accepted %q", bad)
		} else if len(bad) > 3 && strings.Contains(err.Error(), bad) {
			t.Errorf("error echoes the password: %v", err)
		}
	}
}

func TestGenerateDatabasePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		pw := GenerateDatabasePassword("alice_app")
		if len(pw) != GeneratedPasswordLen || DatabasePassword(pw, "alice_app") != nil || seen[pw] {
			t.Fatalf("bad password %q", pw)
		}
		seen[pw] = true
	}
}

func FuzzDatabaseName(f *testing.F) {
	for _, s := range []string{"alice_shop", "alice_", "alice__x", "bob_x", "alice_x`", "alice_%", "performance_schema", "alice_х", "alice_x\x00"} {
		f.Add(s, "alice")
	}
	f.Fuzz(func(t *testing.T, name, owner string) {
		err := DatabaseName(name, owner)
		if err != nil {
			var ve *Error
			if !errors.As(err, &ve) {
				t.Fatalf("error %#v is not *Error", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("%d-byte error", len(err.Error()))
			}
			return
		}
		// Accepted names are inside the owner's namespace and need no quoting.
		if !strings.HasPrefix(name, owner+"_") || DatabaseOwner(name) != owner || len(name) > MaxDatabaseNameLen {
			t.Fatalf("accepted %q for %q", name, owner)
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				t.Fatalf("accepted %q with %q", name, c)
			}
		}
	})
}

func FuzzDatabasePassword(f *testing.F) {
	for _, s := range []string{"Str0ng-Passw0rd!", "short", "Pass word 1234", "'; DROP --A1xxxx", "Xalice_appX1234"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		err := DatabasePassword(pw, "alice_app")
		if err != nil {
			if len(pw) >= 20 && strings.Contains(err.Error(), pw) {
				t.Fatalf("error echoes the password: %v", err)
			}
			return
		}
		if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen || strings.Contains(strings.ToLower(pw), "alice") {
			t.Fatalf("accepted %q", pw)
		}
		for i := 0; i < len(pw); i++ {
			if pw[i] <= ' ' || pw[i] >= 0x7f {
				t.Fatalf("accepted %q", pw)
			}
		}
	})
}

func FuzzDatabasePrivileges(f *testing.F) {
	for _, s := range []string{"SELECT", "all privileges", "create_temporary_tables", "GRANT OPTION", "SELECT;", "SЕLECT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, e := range []string{EngineMariaDB, EnginePostgreSQL} {
			out, err := DatabasePrivileges(e, []string{p})
			if err != nil {
				continue
			}
			allowed := DatabasePrivilegeNames(e)
			for _, o := range out {
				if !slices.Contains(allowed, o) {
					t.Fatalf("%q gave %q on %s", p, o, e)
				}
			}
		}
	})
}

func FuzzDatabaseHost(f *testing.F) {
	for _, s := range []string{"localhost", "10.0.0.0/8", "%", "10.0.0.%", "::1", "fe80::1%eth0", "a'b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		out, err := DatabaseHost(h)
		if err != nil {
			return
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '.' || c == ':' || c == '/') {
				t.Fatalf("%q gave %q", h, out)
			}
		}
		if strings.ContainsAny(out, "%_") {
			t.Fatalf("%q gave wildcard %q", h, out)
		}
	})
}
