package cpaneltest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestSHA512CryptMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl")
	}
	for _, c := range []struct{ pw, salt string }{
		{"secret", "saltsalt"},
		{strings.Repeat("long password ", 10), "0123456789abcdef"},
	} {
		out, err := exec.Command(openssl, "passwd", "-6", "-salt", c.salt, c.pw).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := SHA512Crypt(c.pw, c.salt), strings.TrimSpace(string(out)); got != want {
			t.Errorf("SHA512Crypt(%q, %q) = %s, openssl says %s", c.pw, c.salt, got, want)
		}
	}
}

func TestMySQLNativeHash(t *testing.T) {
	// The documented hash of "password".
	if got := MySQLNativeHash("password"); got != "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" {
		t.Errorf("got %s", got)
	}
}
