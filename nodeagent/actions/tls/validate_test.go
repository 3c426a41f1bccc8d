package tls

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	legoacme "github.com/go-acme/lego/v5/acme"

	"github.com/npanel/npanel/protos/agentpb"
)

func TestValidateIssue(t *testing.T) {
	acme := func() *agentpb.AcmeServer {
		return &agentpb.AcmeServer{DirectoryUrl: "https://acme.example.net/dir", Email: "admin@example.com"}
	}
	base := func() *agentpb.IssueCertificateAction {
		return &agentpb.IssueCertificateAction{
			Id: "c-1", Username: "alice", Site: "example.com", Domains: []string{"example.com", "www.example.com"},
			Challenge: agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, Acme: acme(),
		}
	}
	dns := func(r *agentpb.IssueCertificateAction) {
		r.Challenge = agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01
		r.Nameservers = []string{"127.0.0.1:53", "[::1]:5300"}
	}
	cases := []struct {
		name string
		mod  func(*agentpb.IssueCertificateAction)
		want string // "" valid
	}{
		{"ok", func(*agentpb.IssueCertificateAction) {}, ""},
		{"dns wildcard", func(r *agentpb.IssueCertificateAction) { dns(r); r.Domains = []string{"*.example.com", "example.com"} }, ""},
		{"site covered by wildcard", func(r *agentpb.IssueCertificateAction) {
			dns(r)
			r.Site = "shop.example.com"
			r.Domains = []string{"*.example.com"}
		}, ""},
		{"mail covered", func(r *agentpb.IssueCertificateAction) {
			r.Mail = true
			r.Domains = append(r.Domains, "mail.example.com")
		}, ""},
		{"mail not covered", func(r *agentpb.IssueCertificateAction) { r.Mail = true }, "mail.example.com"},
		{"wildcard on http-01", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"example.com", "*.example.com"} }, "needs the DNS-01"},
		{"wildcard not leftmost", func(r *agentpb.IssueCertificateAction) {
			dns(r)
			r.Domains = []string{"example.com", "a.*.example.com"}
		}, "leftmost"},
		{"partial wildcard", func(r *agentpb.IssueCertificateAction) { dns(r); r.Domains = []string{"example.com", "w*.example.com"} }, "leftmost"},
		{"double wildcard", func(r *agentpb.IssueCertificateAction) {
			dns(r)
			r.Domains = []string{"example.com", "*.*.example.com"}
		}, "leftmost"},
		{"site not covered", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"www.example.com"} }, "do not cover the site"},
		{"not canonical", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"example.com", "WWW.example.com"} }, "canonical"},
		{"reserved tld", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"example.com", "x.localhost"} }, "RFC 6761"},
		{"ip", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"example.com", "127.0.0.1"} }, "IP address"},
		{"duplicate", func(r *agentpb.IssueCertificateAction) { r.Domains = []string{"example.com", "example.com"} }, "twice"},
		{"no names", func(r *agentpb.IssueCertificateAction) { r.Domains = nil }, "names"},
		{"too many names", func(r *agentpb.IssueCertificateAction) { r.Domains = make([]string, 101) }, "names"},
		{"bad site", func(r *agentpb.IssueCertificateAction) { r.Site = "../etc" }, "domain"},
		{"bad user", func(r *agentpb.IssueCertificateAction) { r.Username = "Root;" }, "username"},
		{"bad id", func(r *agentpb.IssueCertificateAction) { r.Id = "a/b" }, "id"},
		{"no challenge", func(r *agentpb.IssueCertificateAction) { r.Challenge = 0 }, "challenge"},
		{"dns without nameservers", func(r *agentpb.IssueCertificateAction) { dns(r); r.Nameservers = nil }, "nameservers"},
		{"nameserver by name", func(r *agentpb.IssueCertificateAction) { dns(r); r.Nameservers = []string{"ns1.example.com:53"} }, "IP address"},
		{"nameserver without port", func(r *agentpb.IssueCertificateAction) { dns(r); r.Nameservers = []string{"127.0.0.1"} }, "nameserver"},
		{"nameservers on http-01", func(r *agentpb.IssueCertificateAction) { r.Nameservers = []string{"127.0.0.1:53"} }, "DNS-01 only"},
		{"no acme", func(r *agentpb.IssueCertificateAction) { r.Acme = nil }, "ACME"},
		{"http directory", func(r *agentpb.IssueCertificateAction) { r.Acme.DirectoryUrl = "http://acme.example.net/dir" }, "https"},
		{"directory with user", func(r *agentpb.IssueCertificateAction) { r.Acme.DirectoryUrl = "https://u:p@acme.example.net/dir" }, "https"},
		{"bad email", func(r *agentpb.IssueCertificateAction) { r.Acme.Email = "not an address" }, "email"},
		{"bad root CAs", func(r *agentpb.IssueCertificateAction) { r.Acme.RootCasPem = []byte("junk") }, "root CAs"},
		{"key in root CAs", func(r *agentpb.IssueCertificateAction) {
			r.Acme.RootCasPem = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		}, "root CAs"},
		{"eab kid without key", func(r *agentpb.IssueCertificateAction) { r.Acme.EabKid = "kid" }, "both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := base()
			c.mod(r)
			err := (&Issue{req: r}).Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q, want %q in it", err, c.want)
			}
		})
	}
}

func TestValidateOthers(t *testing.T) {
	ca := newTestCA(t)
	if err := (&Install{req: &agentpb.InstallCertificateAction{Id: "c", Username: "alice", Site: "example.com", ChainPem: ca.pem, SealedPrivateKey: []byte{1}}}).Validate(); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Errorf("install of a CA certificate as leaf: %v", err)
	}
	if err := (&Install{req: &agentpb.InstallCertificateAction{Id: "c", Username: "alice", Site: "example.com", ChainPem: ca.pem}}).Validate(); err == nil {
		t.Error("install without a key accepted")
	}
	acme := &agentpb.AcmeServer{DirectoryUrl: "https://acme.example.net/dir"}
	if err := (&Revoke{req: &agentpb.RevokeCertificateAction{Id: "c", Username: "alice", Site: "example.com", ChainPem: []byte("x"), Acme: acme}}).Validate(); err == nil {
		t.Error("revoke of junk accepted")
	}
	if err := (&Remove{req: &agentpb.RemoveCertificateAction{Id: "c", Username: "alice", Site: "Example.com"}}).Validate(); err == nil {
		t.Error("remove of a non-canonical site accepted")
	}
	if err := (&Remove{req: nil}).Validate(); err == nil {
		t.Error("nil accepted")
	}
}

func TestNameErrors(t *testing.T) {
	pd := &legoacme.ProblemDetails{Type: legoacme.RateLimitedErrorType, HTTPStatus: 429, Detail: "too many"}
	err := fmt.Errorf("order: %w", nameErrors{"mail.example.com": errors.New("connection refused"), "*.example.com": pd})
	if got := err.Error(); got != "order: one or more names failed validation: [*.example.com: "+pd.Error()+"] [mail.example.com: connection refused]" {
		t.Fatalf("got %q", got)
	}
	var bad nameErrors
	if !errors.As(err, &bad) || len(bad) != 2 {
		t.Fatalf("names lost: %v", bad)
	}
	// The CA's problem behind a name still classifies the failure.
	var got *legoacme.ProblemDetails
	if !errors.As(err, &got) || got.Type != legoacme.RateLimitedErrorType {
		t.Fatalf("problem not found: %v", got)
	}
	if r := reason(errors.New(strings.Repeat("x", 600))); len(r) > 504 {
		t.Fatalf("reason not shortened: %d bytes", len(r))
	}
}

func FuzzValidateIssue(f *testing.F) {
	f.Add("example.com", "*.example.com", "127.0.0.1:53", "https://acme.example.net/dir")
	f.Add("example.com", "www.example.com", "", "https://x/")
	f.Fuzz(func(t *testing.T, site, name, ns, dir string) {
		r := &agentpb.IssueCertificateAction{Id: "c", Username: "alice", Site: site, Domains: []string{site, name},
			Challenge: agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01, Nameservers: []string{ns},
			Acme: &agentpb.AcmeServer{DirectoryUrl: dir}}
		if (&Issue{req: r}).Validate() != nil {
			return
		}
		// Whatever passes is safe as a file name and for the CA.
		for _, n := range r.Domains {
			if strings.ContainsAny(n, "/\\ \x00") || strings.Contains(n, "..") {
				t.Fatalf("accepted %q", n)
			}
		}
	})
}
