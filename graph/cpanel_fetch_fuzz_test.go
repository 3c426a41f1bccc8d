package graph

import (
	"path"
	"strings"
	"testing"

	"github.com/npanel/npanel/validate"
)

// FuzzFetchPath: for every remote path or account the API accepts, the
// archive lands in the fetch's own directory of the import area, under a
// name the node's analysis and import take (validate.CpanelArchivePath,
// the rule the agent applies too).
func FuzzFetchPath(f *testing.F) {
	for _, s := range []string{"/home/cpmove-bob.tar.gz", "/backup/bob.tar", "/x/.hidden.tgz", "/a/b/../c.tar.gz", "bob", "/home/a+b@c:d.tgz", "/.tar"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		account, remote := "", s
		if validate.CpanelAccountName(s) == nil {
			account, remote = s, ""
		} else if validate.CpanelRemotePath(s) != nil {
			return
		}
		p, err := fetchPath("01KB0000000000000000000000", account, remote)
		if err != nil {
			return
		}
		if err := validate.CpanelArchivePath(p); err != nil {
			t.Fatalf("%q → %q, refused by the import: %v", s, p, err)
		}
		dir, base := path.Split(p)
		if dir != "fetched/01kb0000000000000000000000/" || strings.HasPrefix(base, ".") {
			t.Fatalf("%q → %q", s, p)
		}
	})
}
