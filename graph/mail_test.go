package graph

import (
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
)

// A forwarder chain of the account's own forwarders that leads back to
// its start is a loop, however long; chains that leave the account or end
// at a mailbox are not.
func TestForwarderLoop(t *testing.T) {
	aliases := map[string][]string{
		"a@x.example": {"b@x.example"},
		"b@x.example": {"c@x.example", "out@elsewhere.example"},
		"c@x.example": {"box@x.example"},
		"d@x.example": {"d2@x.example"},
	}
	for _, c := range []struct {
		from    string
		targets []string
		loop    bool
	}{
		{"c@x.example", []string{"a@x.example"}, true},
		{"c@x.example", []string{"out@elsewhere.example", "a@x.example"}, true},
		{"e@x.example", []string{"a@x.example"}, false},
		{"d2@x.example", []string{"d@x.example"}, true},
		{"z@x.example", []string{"z2@x.example"}, false},
	} {
		if got := forwarderLoop(func(a string) []string { return aliases[a] }, c.from, c.targets); got != c.loop {
			t.Errorf("%s -> %v: loop %v, want %v", c.from, c.targets, got, c.loop)
		}
	}
}

func TestNewDKIMSelector(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	d := &store.MailDomain{}
	got := []string{}
	for range 3 {
		s := newDKIMSelector(d, now)
		d.DKIM = append(d.DKIM, store.MailDKIM{Selector: s})
		got = append(got, s)
	}
	if strings.Join(got, ",") != "np20261205,np20261205b,np20261205c" {
		t.Fatalf("selectors %v", got)
	}
}

func TestSpamTenths(t *testing.T) {
	for _, c := range []struct {
		score *float64
		want  int
		ok    bool
	}{
		{nil, 50, true}, {ptrTo(5.0), 50, true}, {ptrTo(6.25), 63, true}, {ptrTo(0.5), 5, false}, {ptrTo(25.0), 250, false},
	} {
		got, err := spamTenths(c.score)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("%v: %d %v", c.score, got, err)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

// joinTXT reads back what the zone holds for a text that was written
// through dnszone's TXT canonicalisation (split into 255-byte strings and
// quoted), and never panics on arbitrary content.
func FuzzJoinTXT(f *testing.F) {
	f.Add("v=spf1 mx a ip4:192.0.2.1 ~all")
	f.Add("v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com")
	f.Add(strings.Repeat("p=MIIBIjANBgkqhkiG9w0B", 30))
	f.Add(`"a" "b\"c" \`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = joinTXT(s) // arbitrary zone content: no panic
		if s == "" || s != strings.TrimSpace(s) || strings.ContainsAny(s, "\"\\") {
			return
		}
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] >= 0x7f {
				return
			}
		}
		r, err := dnszone.ValidateRecord("example.com", dnszone.Record{Name: "example.com.", Type: dnszone.TypeTXT, Content: s}, dnszone.DefaultTTL)
		if err != nil {
			return
		}
		if got := joinTXT(r.Content); got != s {
			t.Fatalf("joinTXT(%q) = %q, want %q", r.Content, got, s)
		}
	})
}

// A mail change for a domain the account no longer serves is refused
// (the check runs inside changeMail's transaction); a deletion is not.
func TestStillSite(t *testing.T) {
	a := &store.Account{Username: "alice", Sites: []store.Site{{Domain: "a.example"}}}
	if err := stillSite(a, "a.example", false); err != nil {
		t.Fatal(err)
	}
	if err := stillSite(a, "gone.example", false); err == nil {
		t.Fatal("a removed domain took mail")
	}
	if err := stillSite(a, "gone.example", true); err != nil {
		t.Fatal(err)
	}
}

// A vacation reply's From must be an address of one of the account's
// domains: another tenant's name is refused, as is a malformed address.
func TestAutoresponderFrom(t *testing.T) {
	set := &store.MailSet{Account: &store.Account{Domain: "shop.example.com", Sites: []store.Site{{Domain: "shop.example.com"}, {Domain: "blog.example.org"}}}}
	for _, ok := range []string{"info@shop.example.com", "Team@Blog.Example.org"} {
		if _, err := autoresponderFrom(set, ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"ceo@other.example.net", "info@shop.example.com.evil.example", "no-at-sign", "a@b@shop.example.com", "x\r\n@shop.example.com"} {
		if _, err := autoresponderFrom(set, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
