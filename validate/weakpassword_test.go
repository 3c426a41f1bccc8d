package validate

import "testing"

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
