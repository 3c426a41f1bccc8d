package backupnode

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func authorized(t testing.TB, key any) string {
	t.Helper()
	pub, err := ssh.NewPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func ed25519Line(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, pub)
}

func rsaLine(t testing.TB, bits int) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return authorized(t, &k.PublicKey)
}

func TestValidateKey(t *testing.T) {
	ed := ed25519Line(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]string{
		"ed25519":              ed,
		"ed25519 with comment": ed + " root@web1",
		"ecdsa p256":           authorized(t, &ec.PublicKey),
		"rsa 3072":             rsaLine(t, 3072),
	}
	for name, line := range good {
		if _, err := ValidateKey(line); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]string{
		"empty":             "",
		"garbage":           "not a key",
		"rsa 2048":          rsaLine(t, 2048),
		"options":           `command="/bin/sh" ` + ed,
		"restrict option":   "restrict " + ed,
		"two keys":          ed + "\n" + ed25519Line(t),
		"newline in middle": strings.Replace(ed, " ", "\n", 1),
		"carriage return":   ed + "\r",
		"nul":               ed + "\x00",
		"too long":          ed + " " + strings.Repeat("a", maxKeyLen),
		"dsa type":          "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
		"sk key":            "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIEX/dQ0v4127bEo8eeG1EV0ApO2lWbSnN6RWusn/NjqIAAAABHNzaDo=",
	}
	for name, line := range bad {
		if _, err := ValidateKey(line); err == nil {
			t.Errorf("%s: accepted %q", name, line)
		}
	}
}

func TestValidateAccess(t *testing.T) {
	a, b := ed25519Line(t), ed25519Line(t)
	key := func(node, pub string) *agentpb.BackupAccessKey {
		return &agentpb.BackupAccessKey{Node: node, PublicKey: pub}
	}
	ok := []*agentpb.EnsureBackupAccessAction{
		{},
		{Keys: []*agentpb.BackupAccessKey{key("web1", a), key("web-2", b)}},
	}
	for _, req := range ok {
		if err := validateAccess(req); err != nil {
			t.Errorf("%v: %v", req, err)
		}
	}
	bad := map[string]*agentpb.EnsureBackupAccessAction{
		"nil":             nil,
		"empty node":      {Keys: []*agentpb.BackupAccessKey{key("", a)}},
		"node traversal":  {Keys: []*agentpb.BackupAccessKey{key("../etc", a)}},
		"node with slash": {Keys: []*agentpb.BackupAccessKey{key("a/b", a)}},
		"node with quote": {Keys: []*agentpb.BackupAccessKey{key(`a"b`, a)}},
		"node uppercase":  {Keys: []*agentpb.BackupAccessKey{key("Web1", a)}},
		"node twice":      {Keys: []*agentpb.BackupAccessKey{key("web1", a), key("web1", b)}},
		"key shared":      {Keys: []*agentpb.BackupAccessKey{key("web1", a), key("web2", a+" other comment")}},
		"bad key":         {Keys: []*agentpb.BackupAccessKey{key("web1", "ssh-ed25519 AAAA")}},
	}
	for name, req := range bad {
		err := validateAccess(req)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		var ae *actions.Error
		if !errors.As(err, &ae) || ae.Reason != agentpb.ErrorReason_ERROR_REASON_INVALID {
			t.Errorf("%s: %v is not INVALID", name, err)
		}
	}
}

// The line the agent writes confines the key to SFTP in its node's
// directory and drops the sender's comment.
func TestKeyLine(t *testing.T) {
	line := ed25519Line(t)
	pub, err := ValidateKey(line + ` evil" comment`)
	if err != nil {
		t.Fatal(err)
	}
	got := KeyLine("web1", pub)
	want := `restrict,command="internal-sftp -d /web1" ` + line + " npanel-node:web1"
	if got != want {
		t.Fatalf("KeyLine = %q, want %q", got, want)
	}
	back, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(got))
	if err != nil || string(back.Marshal()) != string(pub.Marshal()) {
		t.Fatalf("line does not parse back: %v", err)
	}
	if len(opts) != 2 || opts[0] != "restrict" || opts[1] != `command="internal-sftp -d /web1"` {
		t.Fatalf("options = %q", opts)
	}
}

func TestRenderConfig(t *testing.T) {
	p := platform.Debian12("/srv/node").BackupNode()
	conf, err := renderConfig(p, "127.0.0.1:2222", "/var/lib/npanel/key")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ListenAddress 127.0.0.1:2222\n", "PasswordAuthentication no\n", "KbdInteractiveAuthentication no\n",
		"PubkeyAuthentication yes\n", "UsePAM no\n", "AllowUsers npanel-backup\n",
		"AuthorizedKeysFile /srv/node/etc/npanel/backup/authorized_keys\n",
		"ChrootDirectory /srv/node/var/lib/npanel/backup-node\n", "Subsystem sftp internal-sftp\n",
		"AllowTcpForwarding no\n", "X11Forwarding no\n", "PermitTTY no\n", "LogLevel VERBOSE\n",
		"PidFile /srv/node/run/npanel/backup-sftpd.pid\n", "HostKey /var/lib/npanel/key\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	// A global ForceCommand would override the keys' per-node command.
	if strings.Contains(conf, "ForceCommand") {
		t.Error("config has a ForceCommand")
	}
	conf, err = renderConfig(p, ":2222", "/k")
	if err != nil || !strings.Contains(conf, "ListenAddress 0.0.0.0:2222\nListenAddress [::]:2222\n") {
		t.Errorf("wildcard listen: %v\n%s", err, conf)
	}
	for _, bad := range []string{"", "2222", "localhost:2222", "127.0.0.1:x", "127.0.0.1:99999"} {
		if _, err := renderConfig(p, bad, "/k"); err == nil {
			t.Errorf("listen %q accepted", bad)
		}
	}
}

func TestReachable(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:2222": "127.0.0.1:2222",
		":2222":          ":2222",
		"0.0.0.0:2222":   ":2222",
		"[::]:2222":      ":2222",
		"[::1]:2222":     "[::1]:2222",
	} {
		if got := reachable(in); got != want {
			t.Errorf("reachable(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzValidateKey: whatever the control plane sends, an accepted key
// yields a line that is one line, parses back to the same key with
// exactly the agent's options, and carries nothing of the input but the
// key itself.
func FuzzValidateKey(f *testing.F) {
	f.Add(ed25519Line(f))
	f.Add(ed25519Line(f) + " root@web1")
	f.Add(`command="/bin/sh" ` + ed25519Line(f))
	f.Add("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ")
	f.Add("")
	f.Fuzz(func(t *testing.T, line string) {
		pub, err := ValidateKey(line)
		if err != nil {
			return
		}
		out := KeyLine("web1", pub)
		if strings.ContainsAny(out, "\n\r\x00") {
			t.Fatalf("line %q spans lines", out)
		}
		back, comment, opts, rest, err := ssh.ParseAuthorizedKey([]byte(out))
		if err != nil {
			t.Fatalf("%q does not parse back: %v", out, err)
		}
		if string(back.Marshal()) != string(pub.Marshal()) || comment != "npanel-node:web1" || len(rest) != 0 {
			t.Fatalf("%q parses back as another key", out)
		}
		if len(opts) != 2 || opts[0] != "restrict" || opts[1] != `command="internal-sftp -d /web1"` {
			t.Fatalf("%q has options %q", out, opts)
		}
	})
}

func TestRenderUnit(t *testing.T) {
	u := renderUnit(platform.Alma9("").BackupNode())
	for _, want := range []string{
		"ExecStart=/usr/sbin/sshd -D -e -f /etc/npanel/backup/sshd_config\n",
		"ExecStartPre=/usr/sbin/sshd -t -f /etc/npanel/backup/sshd_config\n",
		"KillMode=process\n", "Restart=on-failure\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	if strings.Contains(u, "RuntimeDirectory") {
		t.Error("unit would remove the system sshd's /run/sshd when it stops")
	}
}

// Setup refuses, with the directory to blame, what sshd would refuse at
// every login.
func TestCheckRootChain(t *testing.T) {
	if err := checkRootChain("/usr/lib", true); err != nil {
		t.Fatalf("/usr/lib: %v", err)
	}
	d := t.TempDir()
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := checkRootChain(filepath.Join(d), false); err == nil || !strings.Contains(err.Error(), d) {
		t.Fatalf("world-writable %s: %v", d, err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkRootChain(d, true); err == nil {
		t.Fatalf("%s not searchable by others accepted", d)
	}
}
