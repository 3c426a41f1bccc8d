package graph

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

// FuzzDomainLogArgs: domainLogs' arguments either are refused as
// INVALID_INPUT (a *validate.Error) or come out canonical and in bounds.
func FuzzDomainLogArgs(f *testing.F) {
	f.Add("example.com", "ACCESS", 100, true)
	f.Add("EXAMPLE.com.", "ERROR", 1000, true)
	f.Add("../etc", "ACCESS", 1001, true)
	f.Add("a.example.org", "DEBUG", 0, false)
	f.Add("xn--bcher-kva.de", "ACCESS", -5, true)
	f.Fuzz(func(t *testing.T, domain, kind string, lines int, set bool) {
		var lp *int
		if set {
			lp = &lines
		}
		d, n, k, err := domainLogArgs(domain, model.LogKind(kind), lp)
		if err != nil {
			if _, ok := err.(*validate.Error); !ok {
				t.Fatalf("refusal %T %v is not INVALID_INPUT", err, err)
			}
			return
		}
		c, cerr := validate.Domain(d)
		if cerr != nil || c != d || strings.ContainsAny(d, "/\\ \x00") {
			t.Fatalf("accepted domain %q (from %q) is not canonical", d, domain)
		}
		if n < 1 || n > maxLogLines || k == 0 {
			t.Fatalf("accepted lines %d kind %v", n, k)
		}
	})
}

// FuzzAliasTarget: an accepted aliasOf is a canonical domain; a refusal
// names the aliasOf field.
func FuzzAliasTarget(f *testing.F) {
	f.Add("example.com")
	f.Add("Example.COM.")
	f.Add("not a domain")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := aliasTarget(s)
		if err != nil {
			if ve, ok := err.(*validate.Error); !ok || ve.Field != "aliasOf" {
				t.Fatalf("refusal %v does not name aliasOf", err)
			}
			return
		}
		if again, err := validate.Domain(c); err != nil || again != c {
			t.Fatalf("accepted %q -> %q is not canonical", s, c)
		}
	})
}
