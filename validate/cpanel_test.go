package validate

import (
	"errors"
	"path"
	"strings"
	"testing"
)

func TestCpanelArchivePath(t *testing.T) {
	for _, p := range []string{"cpmove-bob.tar.gz", "2026/backup-6.12.2026_10-00-00_bob.tar.gz", "x.tgz", "fetched/01kb/a+b@c:d.tgz"} {
		if err := CpanelArchivePath(p); err != nil {
			t.Errorf("%q refused: %v", p, err)
		}
	}
	for _, p := range []string{"", "../x.tar.gz", "/var/x.tar.gz", "a/../x.tar.gz", "a//x.tar.gz", "./x.tar.gz", "x.zip", "x.tar",
		".x.tar.gz", "a/.b/x.tar.gz", "x\n.tar.gz", `a\x.tar.gz`, "a\x00.tgz", "\xff.tgz", strings.Repeat("a", 2000) + ".tar.gz", strings.Repeat("a", 300) + ".tgz", "a/"} {
		var e *Error
		if err := CpanelArchivePath(p); !errors.As(err, &e) || e.Field != "path" {
			t.Errorf("%q: %v, want a path error", p, err)
		}
	}
}

// FuzzCpanelArchivePath: a path accepted stays inside the import area
// (relative, clean, no ..), shows no hidden element and names a .tar.gz
// or .tgz archive.
func FuzzCpanelArchivePath(f *testing.F) {
	for _, s := range []string{"cpmove-joe.tar.gz", "a/b.tgz", "../x.tar.gz", "/abs.tgz", "a//b.tgz", "./a.tgz", "a\x00.tgz", "..", "x.zip", "a\\..\\b.tgz", "a/.p/x.tgz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CpanelArchivePath(p) != nil {
			return
		}
		if strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsAny(p, "\x00\n\r\\") ||
			!(strings.HasSuffix(p, ".tar.gz") || strings.HasSuffix(p, ".tgz")) {
			t.Fatalf("accepted %q", p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == ".." || seg == "." || seg == "" || strings.HasPrefix(seg, ".") {
				t.Fatalf("accepted %q with segment %q", p, seg)
			}
		}
	})
}
