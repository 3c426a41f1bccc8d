package platform

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProfiles(t *testing.T) {
	tests := []struct {
		name, prefix          string
		nologin, home, backup string
	}{
		{NameAlma9, "", "/sbin/nologin", "/home", "/var/lib/npanel/backups"},
		{NameDebian12, "", "/usr/sbin/nologin", "/home", "/var/lib/npanel/backups"},
		{NameAlma9, "/tmp/p", "/sbin/nologin", "/tmp/p/home", "/tmp/p/var/lib/npanel/backups"},
		{NameDebian12, "/tmp/p", "/usr/sbin/nologin", "/tmp/p/home", "/tmp/p/var/lib/npanel/backups"},
	}
	for _, tt := range tests {
		t.Run(tt.name+tt.prefix, func(t *testing.T) {
			p, err := ProfileFor(tt.name, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tt.name || p.Prefix != tt.prefix || p.Nologin != tt.nologin || p.HomeBase != tt.home || p.BackupDir != tt.backup {
				t.Fatalf("profile = %+v", p)
			}
			// The user database never moves with the prefix: useradd has none.
			if p.Passwd != "/etc/passwd" || p.Shadow != "/etc/shadow" || p.MinUID != 1000 {
				t.Fatalf("profile = %+v", p)
			}
			// Certificates and ACME tokens move with the prefix; sites
			// listen on HTTPS by default.
			w := p.Web()
			if w.CertDir != filepath.Join("/", tt.prefix, "var/lib/npanel/certs") || w.ACMEChallengeDir != filepath.Join("/", tt.prefix, "var/lib/npanel/acme-challenge") || p.HTTPSListen != ":443" {
				t.Errorf("cert dir %q, challenge dir %q, https listen %q", w.CertDir, w.ACMEChallengeDir, p.HTTPSListen)
			}
			for _, bin := range []string{p.Useradd, p.Usermod, p.Userdel, p.Setquota, p.Nologin} {
				if !filepath.IsAbs(bin) || filepath.Clean(bin) != bin {
					t.Errorf("binary path %q is not fixed and absolute", bin)
				}
			}
		})
	}
}

func TestProfileForRefuses(t *testing.T) {
	tests := []struct{ name, prefix, want string }{
		{"ubuntu", "", "unknown platform"},
		{"", "", "unknown platform"},
		{NameDebian12, "rel/dir", "absolute"},
		{NameDebian12, "/a/../b", "clean"},
		{NameDebian12, "/a/", "clean"},
		{NameDebian12, "/a:b", "/etc/passwd"},
		{NameDebian12, "/a\nb", "/etc/passwd"},
	}
	for _, tt := range tests {
		if _, err := ProfileFor(tt.name, tt.prefix); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ProfileFor(%q, %q) = %v, want error containing %q", tt.name, tt.prefix, err, tt.want)
		}
	}
}

func TestProfileName(t *testing.T) {
	tests := []struct {
		osRelease string
		want      string // "" for an error
	}{
		{"ID=almalinux\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n", NameAlma9},
		{"ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n", NameAlma9},
		{"ID=rhel\nVERSION_ID=\"9.2\"\n", NameAlma9},
		{"ID=\"ol\"\nID_LIKE=\"fedora rhel\"\nVERSION_ID=\"9\"\n", NameAlma9},
		{"ID=almalinux\nVERSION_ID=\"8.9\"\n", ""},
		{"ID=fedora\nVERSION_ID=40\n", ""},
		{"ID=debian\nVERSION_ID=\"12\"\n", NameDebian12},
		{"ID=debian\nVERSION_ID=\"11\"\n", ""},
		{"ID=debian\n", ""}, // testing/sid carry no VERSION_ID
		{"ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"12.04\"\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := profileName(parseOSRelease([]byte(tt.osRelease)))
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--platform") {
				t.Errorf("%q: got %q, %v; want an error naming --platform", tt.osRelease, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.osRelease, got, err, tt.want)
		}
	}
}

func TestDetectProfile(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "os-release")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saved := osReleasePaths
	t.Cleanup(func() { osReleasePaths = saved })

	osReleasePaths = []string{filepath.Join(dir, "missing"), write("ID=almalinux\nVERSION_ID=9.5\n")}
	p, err := DetectProfile("/srv/t")
	if err != nil || p.Name != NameAlma9 || p.HomeBase != "/srv/t/home" {
		t.Fatalf("DetectProfile = %+v, %v", p, err)
	}
	osReleasePaths = []string{write("PRETTY_NAME=\"Arch Linux\"\nID=arch\n")}
	if _, err := DetectProfile(""); err == nil || !strings.Contains(err.Error(), "Arch Linux") || !strings.Contains(err.Error(), "--platform") {
		t.Fatalf("DetectProfile(arch) = %v", err)
	}
	osReleasePaths = []string{filepath.Join(dir, "missing")}
	if _, err := DetectProfile(""); err == nil || !strings.Contains(err.Error(), "--platform") {
		t.Fatalf("DetectProfile(no os-release) = %v", err)
	}
	if _, err := DetectProfile("relative"); err == nil {
		t.Fatal("DetectProfile accepted a relative prefix")
	}
}

// The tests and CI run on Debian 12; the agent must find its profile there.
func TestDetectProfileThisMachine(t *testing.T) {
	vals, err := readOSRelease()
	if err != nil {
		t.Fatal(err)
	}
	p, err := DetectProfile("")
	if vals["ID"] == "debian" && vals["VERSION_ID"] == "12" {
		if err != nil || p.Name != NameDebian12 {
			t.Fatalf("DetectProfile on Debian 12 = %+v, %v", p, err)
		}
		return
	}
	t.Logf("not Debian 12: DetectProfile = %+v, %v", p, err)
}
