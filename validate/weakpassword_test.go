package validate

import (
	"strings"
	"testing"
)

func TestWeakPasswordsRefused(t *testing.T) {
	for _, pw := range []string{
		"passwordpassword", "123456789012", "PasswordPassword", "qwertyuiopasdf"[:12],
		"abcdefghijkl", "098765432109", "abcabcabcabc", "password2024!", "1234qwerty1234",
		"iloveyou1234", "Dragon123456", "trustno1trustno1", "qwertyuiopasdfgh",
	} {
		if err := Password(pw); err == nil {
			t.Errorf("Password(%q) accepted, want refused as weak", pw)
		}
	}
	for _, pw := range []string{
		"correct horse battery", "test-admin-password-0123", "reseller-password", "Tr0ub4dor&3x!z",
		"vR7#kq2!mZp9", "monkeyconcert2024",
	} {
		if err := Password(pw); err != nil {
			t.Errorf("Password(%q) = %v, want accepted", pw, err)
		}
	}
}

// FuzzPassword: the password rules never panic, answer the same twice, and
// a password they accept is one a user can type back (no control
// characters, within the length bounds).
func FuzzPassword(f *testing.F) {
	for _, s := range []string{"passwordpassword", "123456789012", "Kx7-ferry-lamp-92", "qwertyuiop[]", "aaaaaaaaaaaa", "P@ssw0rd2024!", "zxcvbnm,./;'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		err := Password(pw)
		if again := Password(pw); (err == nil) != (again == nil) {
			t.Fatalf("Password(%q) answered %v then %v", pw, err, again)
		}
		if err != nil {
			return
		}
		if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen || strings.ContainsFunc(pw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("Password accepted %q", pw)
		}
		if isCommon(strings.ToLower(pw)) {
			t.Fatalf("Password accepted the common password %q", pw)
		}
	})
}
