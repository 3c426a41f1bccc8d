package pki

import (
	"regexp"
	"slices"
	"testing"
)

// FuzzParseJoinToken feeds the agent-side decoder, which sees tokens pasted
// by operators before any trust exists. Whatever it accepts must satisfy the
// invariants the agent relies on.
func FuzzParseJoinToken(f *testing.F) {
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ParseJoinToken(tok)
		if err != nil {
			return
		}
		if err := ValidNodeName(c.Node); err != nil {
			t.Fatalf("accepted token for invalid node %q: %v", c.Node, err)
		}
		if !validTokenID(c.ID) {
			t.Fatalf("accepted token with bad id %q", c.ID)
		}
		if !validFingerprint(c.RootFingerprint) {
			t.Fatalf("accepted token with bad fingerprint %q", c.RootFingerprint)
		}
		if c.ExpiresAt.IsZero() {
			t.Fatal("accepted token without expiry")
		}
	})
}

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FuzzValidNodeName checks the validator against an independent statement of
// the rule, and that every valid name survives the trip through a URI.
func FuzzValidNodeName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidNodeName(name)
		if want := nodeNameRE.MatchString(name); (err == nil) != want {
			t.Fatalf("ValidNodeName(%q) = %v, regexp says valid=%v", name, err, want)
		}
		if err != nil {
			return
		}
		got, err := identityFromURI(NodeURI(name), nodePathPrefix, ValidNodeName)
		if err != nil || got != name {
			t.Fatalf("NodeURI round trip of %q = %q, %v", name, got, err)
		}
	})
}

// FuzzNodeHosts: whatever NodeHosts accepts is its own normal form, and
// survives the trip through a certificate's IP and DNS fields.
func FuzzNodeHosts(f *testing.F) {
	f.Add("10.0.0.5", "web-1.example.net")
	f.Add("2001:DB8::5", "::ffff:10.0.0.1")
	f.Add("Web-1", "10.0.0.5:9469")
	f.Fuzz(func(t *testing.T, a, b string) {
		hosts, err := NodeHosts([]string{a, b})
		if err != nil {
			return
		}
		again, err := NodeHosts(hosts)
		if err != nil || !slices.Equal(again, hosts) {
			t.Fatalf("NodeHosts(%q) = %q, %v; not a fixed point", hosts, again, err)
		}
		ips, names := SplitHosts(hosts)
		if got := HostsOf(ips, names); !slices.Equal(got, hosts) {
			t.Fatalf("HostsOf(SplitHosts(%q)) = %q", hosts, got)
		}
	})
}
