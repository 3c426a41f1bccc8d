package mail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderRoundcube(t *testing.T) {
	in := roundcubeInput{DB: "/var/lib/npanel/mail/webmail/db/roundcube.db", IMAP: "127.0.0.1:143", SMTP: "127.0.0.1:587",
		DesKey: "abcdefghijklmnopqrstuvwx", TempDir: "/t", LogDir: "/l"}
	conf, err := renderRoundcube(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"$config['db_dsnw'] = 'sqlite:////var/lib/npanel/mail/webmail/db/roundcube.db?mode=0600';",
		"$config['imap_host'] = '127.0.0.1:143';",
		"$config['smtp_host'] = 'tls://127.0.0.1:587';",
		"$config['smtp_user'] = '%u';", "$config['smtp_pass'] = '%p';",
		"$config['des_key'] = 'abcdefghijklmnopqrstuvwx';",
		"$config['enable_installer'] = false;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	for _, bad := range []string{"a'b", `a\b`, "a\nb"} {
		in2 := in
		in2.TempDir = bad
		if _, err := renderRoundcube(in2); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDesKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := desKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := desKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 24 || k1 != k2 {
		t.Fatalf("keys %q %q", k1, k2)
	}
	fi, err := os.Stat(filepath.Join(dir, "webmail-des-key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if k3, _ := desKey(t.TempDir()); k3 == k1 {
		t.Fatal("two nodes share a key")
	}
}
