package graph

import (
	"path"
	"strings"
	"testing"
)

// FuzzCpanelPath: a path the API accepts stays inside the import area
// (relative, clean, no ..) and names a .tar.gz or .tgz archive.
func FuzzCpanelPath(f *testing.F) {
	for _, s := range []string{"cpmove-joe.tar.gz", "a/b.tgz", "../x.tar.gz", "/abs.tgz", "a//b.tgz", "./a.tgz", "a\x00.tgz", "..", "x.zip", "a\\..\\b.tgz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := cpanelPath(p)
		if err != nil {
			return
		}
		if got != p || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") ||
			strings.ContainsAny(p, "\x00\n\\") || !(strings.HasSuffix(p, ".tar.gz") || strings.HasSuffix(p, ".tgz")) {
			t.Fatalf("accepted %q", p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == ".." || seg == "." || seg == "" {
				t.Fatalf("accepted %q with segment %q", p, seg)
			}
		}
	})
}
