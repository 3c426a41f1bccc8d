package controlplane

import (
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// TestWebSpecHTTPS: a site's HTTPS redirect and HSTS reach its vhost; an
// alias is served by its target's server block with the target's.
func TestWebSpecHTTPS(t *testing.T) {
	a := &store.Account{Domain: "a.example", Sites: []store.Site{
		{Domain: "a.example", Docroot: "public_html", HTTPSRedirect: true, HSTSMaxAge: 31536000},
		{Domain: "b.example", Docroot: "b"},
		{Domain: "c.example", AliasOf: "a.example", HTTPSRedirect: false},
	}}
	spec := webSpec(a, nil)
	if len(spec.GetSites()) != 2 {
		t.Fatalf("sites: %v", spec.GetSites())
	}
	s0, s1 := spec.GetSites()[0], spec.GetSites()[1]
	if !s0.GetHttpsRedirect() || s0.GetHstsMaxAge() != 31536000 {
		t.Fatalf("a.example: redirect %t hsts %d", s0.GetHttpsRedirect(), s0.GetHstsMaxAge())
	}
	if s1.GetHttpsRedirect() || s1.GetHstsMaxAge() != 0 {
		t.Fatalf("b.example: redirect %t hsts %d", s1.GetHttpsRedirect(), s1.GetHstsMaxAge())
	}
}
