package controlplane

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// A backup's state comes from the node holding the repository: what it
// says of a certificate is checked before it is written back.
func TestCheckRestoredCert(t *testing.T) {
	a := &store.Account{Domain: "shop.example.com", Sites: []store.Site{{Domain: "shop.example.com"}, {Domain: "blog.example.com"}}}
	ok := func(c BackupStateCertChain, ch store.CertChallenge) {
		t.Helper()
		if err := checkRestoredCert(a, c, ch); err != nil {
			t.Errorf("%+v %s: %v", c, ch, err)
		}
	}
	bad := func(c BackupStateCertChain, ch store.CertChallenge) {
		t.Helper()
		if err := checkRestoredCert(a, c, ch); err == nil || !strings.Contains(err.Error(), "not restored") {
			t.Errorf("%+v %s: %v, want refused", c, ch, err)
		}
	}
	ok(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "www.shop.example.com"}}, store.ChallengeHTTP01)
	ok(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "*.shop.example.com", "blog.example.com"}}, store.ChallengeDNS01)
	bad(BackupStateCertChain{ID: "shop.example.com"}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"www.shop.example.com"}}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "other.example.com"}}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "evilshop.example.com"}}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "*.shop.example.com"}}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "a b.shop.example.com"}}, store.ChallengeHTTP01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com", "*.*.shop.example.com"}}, store.ChallengeDNS01)
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: []string{"shop.example.com"}}, "TLSALPN01")
	many := []string{"shop.example.com"}
	for range maxRestoredCertNames {
		many = append(many, "www.shop.example.com")
	}
	bad(BackupStateCertChain{ID: "shop.example.com", Domains: many}, store.ChallengeHTTP01)
}
