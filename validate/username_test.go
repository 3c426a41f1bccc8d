package validate

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestUsernameAccepted(t *testing.T) {
	for _, in := range []string{
		"a", "z", "q", "ab", "x1", "m0", "k8s", "alice", "bob", "carol", "dave2", "eve99",
		"mallory", "trent", "peggy", "victor", "walter", "acmeinc", "acmecorp", "shop1",
		"blog2024", "johndoe", "janedoe", "x1y2z3", "customer42", "webshop", "myblog",
		"wordpress", "testuser", "user2", "bin2", "sys1", "rooftop", "roo", "npx", "np",
		"nginxfan", "mailer9", "adminless", "wwwsite",
		"abcdefghijklmnopqrstuvwxyz012345", // exactly UsernameMaxLen
		"a" + strings.Repeat("9", UsernameMaxLen-1),
	} {
		if err := Username(in); err != nil {
			t.Errorf("Username(%q) = %v, want nil", in, err)
		}
	}
}

func TestUsernameRefused(t *testing.T) {
	for _, tc := range []struct{ in, reason string }{
		{"", "must not be empty"},
		// Case and the first character.
		{"Root", "uppercase"},
		{"ALICE", "uppercase"},
		{"aLice", "uppercase"},
		{"1abc", "must start with a letter"},
		{"9", "must start with a letter"},
		{"12345", "must start with a letter"},
		// Separators: '_' would make database prefixes ambiguous, '-' needs SQL quoting.
		{"_abc", `contains "_"`},
		{"a_b", `contains "_"`},
		{"alice_shop", `contains "_"`},
		{"-abc", `'-'`},
		{"a-b", `'-'`},
		{"www-data", `'-'`},
		{"systemd-network", `'-'`},
		{"Debian-exim", "uppercase"},
		// Shell metacharacters, paths, whitespace and control bytes.
		{"a b", `' '`},
		{" alice", `' '`},
		{"alice ", `' '`},
		{"alice\n", `'\n'`},
		{"alice\t", `'\t'`},
		{"alice\x00", `'\x00'`},
		{"al\x00ice", `'\x00'`},
		{"../etc", `'.'`},
		{"..", `'.'`},
		{"alice/..", `'/'`},
		{"a;rm", `';'`},
		{"$(id)", `'$'`},
		{"a$(id)", `'$'`},
		{"a`id`", "'`'"},
		{"a|b", `'|'`},
		{"a&b", `'&'`},
		{"a'b", `'\''`},
		{`a"b`, `'"'`},
		{"alice$", `'$'`},
		{"a*", `'*'`},
		{"a?", `'?'`},
		{"a~", `'~'`},
		{"alice@host", `'@'`},
		{"a.b", `'.'`},
		// Unicode look-alikes and invisible characters.
		{"alİce", "U+0130"},
		{"\u0430lice", "U+0430"}, // Cyrillic а
		{"a\u0430", "U+0430"},
		{"\uff41lice", "U+FF41"}, // fullwidth a
		{"alice\u200b", "U+200B"},
		{"ali\u202ece", "U+202E"},
		{"é", "U+00E9"},
		{"\xff", "byte 0xff"},
		{"a\xc3", "byte 0xc3"},
		// Length.
		{strings.Repeat("a", UsernameMaxLen+1), "33 bytes long; at most 32"},
		{strings.Repeat("a", 100000), "100000 bytes long"},
		// Reserved names.
		{"root", "reserved for the system"},
		{"bin", "reserved for the system"},
		{"daemon", "reserved for the system"},
		{"nobody", "reserved for the system"},
		{"sshd", "reserved for the system"},
		{"mysql", "reserved for the system"},
		{"postgres", "reserved for the system"},
		{"nginx", "reserved for the system"},
		{"dovenull", "reserved for the system"},
		{"sudo", "reserved for the system"},
		{"wheel", "reserved for the system"},
		{"docker", "reserved for the system"},
		{"mail", "reserved for the system"},
		{"ftp", "reserved for the system"},
		{"backup", "reserved for the system"},
		{"admin", "reserved for a service"},
		{"administrator", "reserved for a service"},
		{"toor", "reserved for a service"},
		{"webmaster", "reserved for a service"},
		{"hostmaster", "reserved for a service"},
		{"postmaster", "reserved for a service"},
		{"abuse", "reserved for a service"},
		{"support", "reserved for a service"},
		{"test", "reserved for a service"},
		{"www", "reserved for a service"},
		{"ssh", "reserved for a service"},
		{"git", "reserved for a service"},
		{"localhost", "reserved for a service"},
		{"npanel", "reserved for nPanel"},
		{"cpanel", "reserved for nPanel"},
		{"whm", "reserved for nPanel"},
		{"plesk", "reserved for nPanel"},
		// Reserved prefixes.
		{TestUserPrefix, "integration tests"},
		{"npt1a2b3c", "integration tests"},
		{"nptel", "integration tests"},
		{"npanelagent", "nPanel's own service accounts"},
		{"systemdx", "systemd"},
		{"rootkit", "superuser"},
		{"root2", "superuser"},
	} {
		err := Username(tc.in)
		if err == nil {
			t.Errorf("Username(%q) = nil, want error containing %q", tc.in, tc.reason)
			continue
		}
		var ve *Error
		if !errors.As(err, &ve) || ve.Field != "username" {
			t.Errorf("Username(%q) error = %#v, want *Error for field username", tc.in, err)
			continue
		}
		if !strings.Contains(ve.Reason, tc.reason) {
			t.Errorf("Username(%q) reason = %q, want it to contain %q", tc.in, ve.Reason, tc.reason)
		}
		if len(err.Error()) > maxErrorLen {
			t.Errorf("Username(%q) error is %d bytes long", tc.in[:min(len(tc.in), 20)], len(err.Error()))
		}
	}
}

// maxErrorLen bounds any validation message: a quoted echo of at most maxEcho
// input bytes (each at most 4 bytes once escaped), twice, plus the prose.
const maxErrorLen = 2*(4*maxEcho+8) + 300

// Every reserved entry must be refused, whether by the list or earlier by the
// alphabet: a typo in the list must not go unnoticed.
func TestUsernameReservedListRefused(t *testing.T) {
	if len(reservedUsernames) < 150 {
		t.Fatalf("only %d reserved names; was the list cut?", len(reservedUsernames))
	}
	for n := range reservedUsernames {
		if Username(n) == nil {
			t.Errorf("reserved %q accepted", n)
		}
	}
	for _, p := range reservedUsernamePrefixes {
		if Username(p.prefix+"x") == nil {
			t.Errorf("reserved prefix %q accepted", p.prefix)
		}
	}
}

var usernameShape = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

func FuzzUsername(f *testing.F) {
	for _, s := range []string{"alice", "root", "a_b", "npt1", "ROOT", "", "a\x00", "../x", "\u0430"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Username(s)
		if err != nil {
			var ve *Error
			if !errors.As(err, &ve) || ve.Field != "username" {
				t.Fatalf("error %#v is not a username *Error", err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("%d-byte error message", len(err.Error()))
			}
			return
		}
		// The accepted alphabet is what useradd argv, paths and SQL
		// identifiers all take unquoted.
		if !usernameShape.MatchString(s) || len(s) > UsernameMaxLen {
			t.Fatalf("accepted %q", s)
		}
		if _, ok := reservedUsernames[s]; ok || strings.HasPrefix(s, TestUserPrefix) {
			t.Fatalf("accepted reserved %q", s)
		}
	})
}

func BenchmarkUsername(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"accepted", "customer42"},
		{"reserved", "postmaster"},
		{"refused", "Alice_Shop"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Username(bc.in)
			}
		})
	}
}
