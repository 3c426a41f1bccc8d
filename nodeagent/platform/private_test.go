package platform

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPrivateTree(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "data")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, filepath.Join(root, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "db"), filepath.Join(root, "sub/key"), outside} {
		if err := os.WriteFile(f, []byte("x"), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "sub"), 0o775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	mode := func(p string) os.FileMode {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}

	// Files only: the directories keep their bits.
	if err := PrivateTree(root, false); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"db": 0o660, "sub/key": 0o660} {
		if got := mode(filepath.Join(root, p)).Perm(); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
	if got := mode(root).Perm(); got != 0o755 {
		t.Errorf("root changed with dirs=false: %v", got)
	}
	if got := mode(outside).Perm(); got != 0o666 {
		t.Errorf("followed a symlink out of the tree: %v", got)
	}

	if err := PrivateTree(root, true); err != nil {
		t.Fatal(err)
	}
	if got := mode(root).Perm(); got != 0o750 {
		t.Errorf("root: %v, want 0750", got)
	}
	if got := mode(filepath.Join(root, "sub")); got.Perm() != 0o770 || got&os.ModeSetgid == 0 {
		t.Errorf("sub: %v, want 0770 keeping setgid", got)
	}
	if err := PrivateTree(filepath.Join(base, "missing"), true); err != nil {
		t.Errorf("missing root: %v", err)
	}
}

// The data trees of every profile, in production and under a prefix: on
// Alma 9 the MariaDB socket is in the datadir, so the datadir stays
// passable; the distribution's pdns directory keeps its mode.
func TestDataTrees(t *testing.T) {
	type trees struct{ dns, maria, pg DataTree }
	for _, tc := range []struct {
		p    *Profile
		want trees
	}{
		{Alma9(""), trees{
			DataTree{"/var/lib/pdns", false}, DataTree{"/var/lib/mysql", false}, DataTree{"/var/lib/pgsql/data", true}}},
		{Debian12(""), trees{
			DataTree{"/var/lib/powerdns", false}, DataTree{"/var/lib/mysql", true}, DataTree{"/var/lib/postgresql/15/main", true}}},
		{Alma9("/srv/n"), trees{
			DataTree{"/srv/n/var/lib/pdns", true}, DataTree{"/srv/n/var/lib/mysql", true}, DataTree{"/srv/n/var/lib/pgsql/data", true}}},
		{Debian12("/srv/n"), trees{
			DataTree{"/srv/n/var/lib/powerdns", true}, DataTree{"/srv/n/var/lib/mysql", true}, DataTree{"/srv/n/var/lib/postgresql/15/main", true}}},
	} {
		got := trees{tc.p.DNSData(), tc.p.MariaDBData(), tc.p.PostgresData()}
		if got != tc.want {
			t.Errorf("%s %q: %+v, want %+v", tc.p.Name, tc.p.Prefix, got, tc.want)
		}
	}
}
