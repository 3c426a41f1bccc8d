package cpaneltest

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// entries lists the names in a .tar.gz.
func entries(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

func TestBuildLayouts(t *testing.T) {
	for _, layout := range []string{LayoutCpmove, LayoutBackup} {
		p := Build(t, t.TempDir(), Default(layout))
		names := strings.Join(entries(t, p), "\n")
		for _, want := range []string{"/cp/cpuser", "/userdata/main", "/mysql.sql", "/apache_tls/example.com", "/dnszones/example.com.db"} {
			if !strings.Contains(names, want) {
				t.Errorf("%s: no %s in\n%s", layout, want, names)
			}
		}
		home := "/homedir.tar"
		if layout == LayoutBackup {
			home = "/homedir/public_html/index.php"
		}
		if !strings.Contains(names, home) {
			t.Errorf("%s: no %s", layout, home)
		}
	}
}

func TestHostileBuilds(t *testing.T) {
	for _, k := range HostileKinds {
		if k == HostileBomb && testing.Short() {
			continue
		}
		p, entry := Hostile(t, t.TempDir(), k)
		if entry == "" {
			t.Errorf("%s: no entry named", k)
		}
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", k, err)
		}
	}
}
