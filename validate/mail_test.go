package validate

import (
	"strings"
	"testing"
)

func TestMailAddress(t *testing.T) {
	good := map[string]string{
		"Info@Example.COM":       "info@example.com",
		"first.last@example.com": "first.last@example.com",
		"a_b-c9@example.com":     "a_b-c9@example.com",
		"x@münchen.de":           "x@xn--mnchen-3ya.de",
	}
	for in, want := range good {
		got, _, _, err := MailAddress(in)
		if err != nil || got != want {
			t.Errorf("MailAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "@example.com", "user", "user@", ".user@example.com", "user.@example.com",
		"us..er@example.com", "us/er@example.com", "../../etc@example.com", "us%er@example.com",
		"us|er@example.com", "us:er@example.com", "us#er@example.com", "us+tag@example.com",
		"us er@example.com", "us\r\nBcc: x@example.com", "us\ner@example.com", "us\x00er@example.com",
		"üser@example.com", "\"quoted\"@example.com", strings.Repeat("a", 65) + "@example.com",
		"user@localhost", "user@127.0.0.1", "user@[127.0.0.1]", "user@exa mple.com",
		"user@example.com\n", "user@example.com:x", "us*er@example.com", "us$er@example.com",
		"us{er}@example.com", "us`id`@example.com", "us'er@example.com", "us\\er@example.com",
	}
	for _, in := range bad {
		if got, _, _, err := MailAddress(in); err == nil {
			t.Errorf("MailAddress(%q) = %q; want an error", in, got)
		}
	}
}

func TestMailTarget(t *testing.T) {
	for _, in := range []string{"Someone+tag@Example.org", "a=b@example.net", "x@example.com"} {
		if _, err := MailTarget(in); err != nil {
			t.Errorf("MailTarget(%q): %v", in, err)
		}
	}
	for _, in := range []string{"|/bin/sh@example.com", "/etc/passwd", ":include:/etc/x@example.com", "a@b@", "x@example.com, y@example.com", "x@example.com\ny@example.com", "@example.com", ".x@example.com"} {
		if _, err := MailTarget(in); err == nil {
			t.Errorf("MailTarget(%q): want an error", in)
		}
	}
}

func TestMailPasswordAndQuota(t *testing.T) {
	if err := MailPassword("correct horse battery", "info@example.com"); err != nil {
		t.Error(err)
	}
	for _, pw := range []string{"short", "password1234", "aaaaaaaaaaaaaaaa", "myinfo-is-secret-99"} {
		if MailPassword(pw, "info@example.com") == nil {
			t.Errorf("MailPassword(%q) accepted", pw)
		}
	}
	for _, q := range []int{50, 1024, 10240} {
		if err := MailQuotaMB(q); err != nil {
			t.Error(err)
		}
	}
	for _, q := range []int{0, 49, 10241, -1} {
		if MailQuotaMB(q) == nil {
			t.Errorf("quota %d accepted", q)
		}
	}
}

func TestCatchAll(t *testing.T) {
	for in, want := range map[string]string{"": "", ":fail:": ":fail:", ":blackhole:": ":blackhole:", "Info": "info", "info@example.com": "info"} {
		if got, err := CatchAll(in, "example.com"); err != nil || got != want {
			t.Errorf("CatchAll(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"info@example.org", ":defer:", "|cmd", "a b"} {
		if _, err := CatchAll(in, "example.com"); err == nil {
			t.Errorf("CatchAll(%q) accepted", in)
		}
	}
}

func TestSPF(t *testing.T) {
	for _, rec := range []string{
		"v=spf1 mx a ~all", "v=spf1 mx a ip4:192.0.2.10 ~all", "v=spf1 ip6:2001:db8::/32 include:_spf.example.net -all",
		"v=spf1 a/24 mx:example.com/24//64 ?all", "v=spf1 redirect=_spf.example.com",
	} {
		if err := SPF(rec); err != nil {
			t.Errorf("SPF(%q): %v", rec, err)
		}
	}
	for _, rec := range []string{
		"", "spf1 mx", "v=spf2 mx", "v=spf1 mx all -all", "v=spf1 ip4:300.1.1.1 -all", "v=spf1 ip4:2001:db8:: -all",
		"v=spf1 include -all", "v=spf1 foo -all", "v=spf1 \"mx\" -all", "v=spf1 mx\n-all", "v=spf1 ++mx -all",
		"v=spf1 " + strings.Repeat("include:a.example.com ", 11) + "-all", "v=spf1 redirect=x.example.com redirect=y.example.com",
	} {
		if SPF(rec) == nil {
			t.Errorf("SPF(%q) accepted", rec)
		}
	}
}

func TestDMARC(t *testing.T) {
	for _, rec := range []string{
		"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com", "v=DMARC1; p=reject", "v=DMARC1; p=none; pct=50; adkim=s; aspf=r; fo=1:d; ri=86400;",
	} {
		if err := DMARC(rec); err != nil {
			t.Errorf("DMARC(%q): %v", rec, err)
		}
	}
	for _, rec := range []string{
		"", "p=reject", "v=DMARC1", "v=DMARC1; pct=5; p=reject", "v=DMARC1; p=maybe", "v=DMARC1; p=reject; p=none",
		"v=DMARC1; p=reject; rua=http://example.com", "v=DMARC1; p=reject; pct=101", "v=DMARC1; p=reject; x=y", "v=DMARC1; p=reject\n",
	} {
		if DMARC(rec) == nil {
			t.Errorf("DMARC(%q) accepted", rec)
		}
	}
}

func TestDKIMSelectorAndAutoresponder(t *testing.T) {
	for _, s := range []string{"npanel1", "s2026-12", "a"} {
		if err := DKIMSelector(s); err != nil {
			t.Error(err)
		}
	}
	for _, s := range []string{"", "-a", "a-", "A1", "a.b", "a_b", strings.Repeat("a", 64)} {
		if DKIMSelector(s) == nil {
			t.Errorf("selector %q accepted", s)
		}
	}
	if err := Autoresponder("Away", "Back on Monday.\n\nRegards"); err != nil {
		t.Error(err)
	}
	for _, c := range [][2]string{{"", "b"}, {"a\r\nBcc: x@example.com", "b"}, {"a", ""}, {"a", "x\x00y"}, {strings.Repeat("s", 201), "b"}, {"a", strings.Repeat("b", 8193)}} {
		if Autoresponder(c[0], c[1]) == nil {
			t.Errorf("Autoresponder(%q, %q) accepted", c[0], c[1])
		}
	}
}

// FuzzMailAddress: an accepted address is canonical (accepting it again
// gives the same), and never holds a byte that is syntax in Dovecot's or
// Exim's files.
func FuzzMailAddress(f *testing.F) {
	for _, s := range []string{"info@example.com", "a.b@xn--mnchen-3ya.de", "../x@example.com", "a\n@example.com", "a:b@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, local, domain, err := MailAddress(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(a, "/%|:#+\n\r\x00 \"\\") || a != local+"@"+domain {
			t.Fatalf("MailAddress(%q) = %q", s, a)
		}
		if again, _, _, err := MailAddress(a); err != nil || again != a {
			t.Fatalf("MailAddress(%q) = %q, %v; not canonical", a, again, err)
		}
	})
}

// FuzzSPFDMARC: an accepted record is printable ASCII without quotes, so
// it can be published as TXT as it is.
func FuzzSPFDMARC(f *testing.F) {
	f.Add("v=spf1 mx a ~all")
	f.Add("v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com")
	f.Fuzz(func(t *testing.T, s string) {
		for _, check := range []func(string) error{SPF, DMARC} {
			if check(s) == nil && strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f || r == '"' || r == '\\' }) {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

func TestGenerateMailPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		pw := GenerateMailPassword("alice@example.com")
		if err := MailPassword(pw, "alice@example.com"); err != nil {
			t.Fatalf("generated %q refused: %v", pw, err)
		}
		if seen[pw] {
			t.Fatalf("generated %q twice", pw)
		}
		seen[pw] = true
	}
}
