package validate

import (
	"strings"
	"testing"
)

func TestCpanelServerValidators(t *testing.T) {
	fp := "SHA256:" + strings.Repeat("A", 43)
	for _, c := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"host ip", ret(CpanelServerHost("127.0.0.1")), true},
		{"host v6", ret(CpanelServerHost("::1")), true},
		{"host name", ret(CpanelServerHost("Server1.Example.com")), true},
		{"host space", ret(CpanelServerHost("a b.example")), false},
		{"host empty", ret(CpanelServerHost("")), false},
		{"host option", ret(CpanelServerHost("-oProxyCommand=x")), false},
		{"host zone", ret(CpanelServerHost("fe80::1%eth0")), false},
		{"port", CpanelServerPort(22), true},
		{"port big", CpanelServerPort(65536), false},
		{"user root", CpanelServerUser("root"), true},
		{"user dots", CpanelServerUser("../x"), false},
		{"user slash", CpanelServerUser("a/b"), false},
		{"user dash first", CpanelServerUser("-l"), false},
		{"account", CpanelAccountName("bob2"), true},
		{"account upper", CpanelAccountName("Bob"), false},
		{"account long", CpanelAccountName("abcdefghijklmnopq"), false},
		{"account semicolon", CpanelAccountName("a;rm"), false},
		{"fp", HostKeyFingerprint(fp), true},
		{"fp md5", HostKeyFingerprint("MD5:aa:bb"), false},
		{"fp short", HostKeyFingerprint("SHA256:abc"), false},
		{"remote", CpanelRemotePath("/home/cpmove-bob.tar.gz"), true},
		{"remote tar", CpanelRemotePath("/backup/2026-12-01/accounts/bob.tar"), true},
		{"remote relative", CpanelRemotePath("home/cpmove-bob.tar.gz"), false},
		{"remote dotdot", CpanelRemotePath("/home/../etc/x.tar.gz"), false},
		{"remote space", CpanelRemotePath("/home/a b.tar.gz"), false},
		{"remote quote", CpanelRemotePath("/home/a'b.tar.gz"), false},
		{"remote ext", CpanelRemotePath("/etc/shadow"), false},
	} {
		if (c.err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, c.err, c.ok)
		}
	}
}

func ret(_ string, err error) error { return err }

// FuzzCpanelServer: whatever the validators accept is safe as a token of
// the node's remote command and as an SFTP path: no shell metacharacter,
// no whitespace, no traversal.
func FuzzCpanelServer(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "server.example.com", "root", "../x", "/home/cpmove-bob.tar.gz", "/a/../b.tar", "bob", "SHA256:" + strings.Repeat("A", 43), "a b", "-o", "/home/a;b.tgz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bad := func(v string) bool { return strings.ContainsAny(v, " \t\n\r'\"`$;&|<>(){}\\*?!#~%=,") }
		if h, err := CpanelServerHost(s); err == nil && (bad(h) || strings.HasPrefix(h, "-")) {
			t.Fatalf("host %q accepted as %q", s, h)
		}
		if CpanelServerUser(s) == nil && (bad(s) || strings.Contains(s, "/") || strings.HasPrefix(s, "-")) {
			t.Fatalf("user %q accepted", s)
		}
		if CpanelAccountName(s) == nil && (bad(s) || len(s) > 16) {
			t.Fatalf("account %q accepted", s)
		}
		if CpanelRemotePath(s) == nil && (bad(s) || !strings.HasPrefix(s, "/") || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..") || strings.Contains(s, "//")) {
			t.Fatalf("remote path %q accepted", s)
		}
		if HostKeyFingerprint(s) == nil && (bad(s) || len(s) != len("SHA256:")+43) {
			t.Fatalf("fingerprint %q accepted", s)
		}
	})
}
