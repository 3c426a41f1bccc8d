package validate

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// letters returns n letters, for building names at the length limits.
func letters(n int) string { return strings.Repeat("a", n) }

// nameOfLen returns an n-octet name ending in ".com".
func nameOfLen(n int) string {
	var b strings.Builder
	for b.Len()+len(".com") < n {
		room := n - len(".com") - b.Len()
		if b.Len() > 0 {
			b.WriteByte('.')
			room--
		}
		b.WriteString(letters(max(1, min(maxLabelLen, room))))
	}
	return b.String() + ".com"
}

func TestDomainAccepted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"example.net", "example.net"},
		{"example.org", "example.org"},
		{"www.example.com", "www.example.com"},
		{"a.b.c.d.example.com", "a.b.c.d.example.com"},
		{"Example.COM", "example.com"},
		{"WWW.EXAMPLE.ORG", "www.example.org"},
		{"example.com.", "example.com"},
		{"Example.Net.", "example.net"},
		{"sub-domain.example.com", "sub-domain.example.com"},
		{"a-b-c.example.com", "a-b-c.example.com"},
		{"123.com", "123.com"},
		{"1.example.com", "1.example.com"},
		{"0-0.net", "0-0.net"},
		{"x.org", "x.org"},
		{"shop.example.co.uk", "shop.example.co.uk"},
		{"example.co.uk", "example.co.uk"},
		{"example.com.au", "example.com.au"},
		{"example.co.jp", "example.co.jp"},
		{"foo.github.io", "foo.github.io"}, // under a private suffix
		{"user.blogspot.com", "user.blogspot.com"},
		{"www.ck", "www.ck"},                     // exception to the *.ck rule
		{"city.kawasaki.jp", "city.kawasaki.jp"}, // exception to *.kawasaki.jp
		{"example.museum", "example.museum"},
		{letters(63) + ".com", letters(63) + ".com"},
		{nameOfLen(253), nameOfLen(253)},
		{nameOfLen(253) + ".", nameOfLen(253)},
		// Internationalized names.
		{"bücher.de", "xn--bcher-kva.de"},
		{"xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"XN--BCHER-KVA.DE", "xn--bcher-kva.de"},
		{"xn--bcher-kva.de.", "xn--bcher-kva.de"},
		{"münchen.de", "xn--mnchen-3ya.de"},
		{"straße.de", "xn--strae-oqa.de"}, // IDNA2008 keeps ß
		{"café.fr", "xn--caf-dma.fr"},
		{"sábado.com", "xn--sbado-xqa.com"},
		{"例え.jp", "xn--r8jz45g.jp"}, // Han + Hiragana
		{"日本語.jp", "xn--wgv71a119e.jp"},
		{"テスト・ケース.jp", "xn--rckpb3cl02aia.jp"}, // katakana middle dot in context
		{"ー.jp", "xn--wek.jp"},
		{"中国.cn", "xn--fiqs8s.cn"},
		{"例子.中国", "xn--fsqu00a.xn--fiqs8s"},
		{"한국.kr", "xn--3e0b707e.kr"},
		{"пример.рф", "xn--e1afmkfd.xn--p1ai"},
		{"bücher.рф", "xn--bcher-kva.xn--p1ai"},
		{"аррӏе.ru", "xn--80ak6aa92e.ru"}, // all-Cyrillic is ordinary under a Cyrillic TLD
		{"παράδειγμα.gr", "xn--hxajbheg2az3al.gr"},
		{"مثال.مصر", "xn--mgbh0fb.xn--wgbh1c"},
		{"אב.com", "xn--4dbc.com"},
		{"דוגמה.co.il", "xn--6dbbec0c.co.il"},
		{"ตัวอย่าง.th", "xn--72c1a1bt4awk9o.th"},
		{"ნიმუში.გე", "xn--todaic1b4a.xn--node"},
		{"कखग१.in", "xn--11bcd43a.in"},
		{"l·l.cat", "xn--ll-0ea.cat"}, // Catalan middle dot in context
	} {
		got, err := Domain(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Domain(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if again, err := Domain(got); again != got || err != nil {
			t.Errorf("Domain(%q) = %q, %v; not idempotent", got, again, err)
		}
	}
}

func TestDomainRefused(t *testing.T) {
	for _, tc := range []struct{ in, reason string }{
		{"", "must not be empty"},
		{".", "empty label"},
		{"..", "empty label"},
		{".example.com", "empty label"},
		{"example..com", "empty label"},
		{"example.com..", "empty label"},
		// Single labels, public suffixes, unknown and special-use TLDs.
		{"com", "single label"},
		{"example", "reserved"},
		{"intranet", "single label"},
		{"localhost", "reserved"},
		{"localhost.", "reserved"},
		{"LOCALHOST", "reserved"},
		{"co.uk", "public suffix"},
		{"CO.UK.", "public suffix"},
		{"github.io", "public suffix"},
		{"blogspot.com", "public suffix"},
		{"foo.ck", "public suffix"}, // *.ck
		{"foo.kawasaki.jp", "public suffix"},
		{"xn--p1ai", "single label"},
		{"foo.cromulent", "not a top-level domain"},
		{"server.lan", "not a top-level domain"},
		{"router.home", "not a top-level domain"},
		{"foo.example", `under ".example"`},
		{"foo.test", `under ".test"`},
		{"foo.invalid", `under ".invalid"`},
		{"foo.localhost", `under ".localhost"`},
		{"printer.local", `under ".local"`},
		{"foo.onion", `under ".onion"`},
		{"x.home.arpa", `under ".arpa"`},
		{"1.2.0.192.in-addr.arpa", `under ".arpa"`},
		{"foo.alt", `under ".alt"`},
		{"foo.internal", `under ".internal"`},
		// IP addresses.
		{"192.0.2.1", "IP address"},
		{"192.0.2.1.", "IP address"},
		{"0.0.0.0", "IP address"},
		{"2001:db8::1", "IP address"},
		{"::1", "IP address"},
		{"[2001:db8::1]", "IP address"},
		{"[::ffff:192.0.2.1]", "IP address"},
		{"fe80::1%eth0", "IP address"},
		{"127.1", "numeric label"},
		{"0x7f.0.0.1", "numeric label"},
		{"example.123", "numeric label"},
		// Syntax: characters, hyphens, lengths.
		{"-example.com", "hyphen"},
		{"example-.com", "hyphen"},
		{"www.-x.com", "hyphen"},
		{"ab--cd.com", `"--"`},
		{"ex_ample.com", `"_"`},
		{"_dmarc.example.com", `"_"`},
		{"*.example.com", `"*"`},
		{"www.*.com", `"*"`},
		{"example.com:80", "bare domain"},
		{"http://example.com", "bare domain"},
		{"example.com/path", "bare domain"},
		{"user@example.com", "bare domain"},
		{"ex ample.com", "space"},
		{" example.com", "space"},
		{"example.com ", "space"},
		{"example.com\n", "control character 0x0a"},
		{"example.com\r\nHost: evil", "control character"},
		{"example.com\x00", "control character 0x00"},
		{"exa\x00mple.com", "control character 0x00"},
		{"\x7f.com", "control character 0x7f"},
		{"example.com;rm -rf /", `';'`},
		{"$(reboot).example.com", `'$'`},
		{"`id`.example.com", "'`'"},
		{"a|b.com", `'|'`},
		{"a&b.com", `'&'`},
		{"ex'ample.com", `'\''`},
		{`ex"ample.com`, `'"'`},
		{`example.com\`, `'\\'`},
		{"../etc/passwd", "bare domain"},
		{"..%2fetc.com", `'%'`},
		{"%2e%2e.com", `'%'`},
		{"example.com,evil.com", `','`},
		{"\xff.com", "not valid UTF-8"},
		{"ex\xc3ample.com", "not valid UTF-8"},
		{letters(64) + ".com", "64 characters long; at most 63"},
		{nameOfLen(254), "254 octets once encoded; at most 253"},
		{strings.Repeat("a.", 1000) + "com", "bytes long"},
		{strings.Repeat("x", 1<<20), "bytes long"},
		{strings.Repeat("ü", 60) + ".de", "octets once encoded; at most 63"},
		// Punycode.
		{"xn--abc.com", "U+0082"}, // decodes to C1 controls
		{"xn--a.com", "U+0080"},
		{"xn--.com", "hyphen"},
		{"xn--example-.com", "hyphen"},
		{"xn--xample-hy68a.com", "U+FF45"}, // decodes to fullwidth "ｅxample"
		{"xn--n3h.net", "not a letter"},    // decodes to "☃"
		{"xn--pypal-4ve.com", "mixes the Latin, Cyrillic scripts"},
		{"xn--ggle-0nda.com", "mixes the Latin, Greek scripts"},
		{"xn--zz-.com", "hyphen"},
		{"xn--zz.com", "not punycode"},
		{"xn--80ak6aa92e.com", "look like Latin"},
		{"xn--cafe-yvc.fr", "not in Unicode normalization form C"}, // "cafe" + combining acute
		// Characters valid IDNA admits but RFC 5892 or homograph rules refuse.
		{"☃.net", "not a letter"},
		{"😀.com", "not a letter"},
		{"a\u2665b.com", "not a letter"},
		{"exa\u00admple.com", "U+00AD"}, // soft hyphen
		{"ex\u200bample.com", "U+200B"}, // zero-width space
		{"ex\u200dample.com", "U+200D"}, // zero-width joiner
		{"ex\u202eample.com", "U+202E"}, // right-to-left override
		{"a\ufe0f.com", "IDNA2008"},     // variation selector
		{"a\u3164.com", "U+3164"},       // Hangul filler
		{"a\u0640b.com", "U+0640"},      // Arabic tatweel
		{"ｅxample.com", "compatibility form"},
		{"ﾃｽﾄ.jp", "compatibility form"},
		{"ﬁle.com", "compatibility form"},
		{"example。com", "ASCII dot"},
		{"example．com", "ASCII dot"},
		{"BÜCHER.de", "uppercase 'Ü'"},
		{"Пример.рф", "uppercase"},
		{"e\u0301xample.com", "normalization form C"},
		{"\u0301a.com", "combining mark"},
		{"pаypal.com", "mixes the Latin, Cyrillic scripts"}, // Cyrillic а
		{"exampl\u0435.com", "mixes the Latin, Cyrillic scripts"},
		{"gοοgle.com", "mixes the Latin, Greek scripts"}, // Greek omicrons
		{"аррӏе.com", "look like Latin"},                 // all-Cyrillic "apple"
		{"ѕсоре.net", "look like Latin"},
		{"ɡoogle.com", "imitates ASCII"},
		{"ǃ.com", "imitates ASCII"},
		{"ᴀdmin.com", "imitates ASCII"},
		{"a\u05d0.com", "bidi rule"},
		{"1\u05d0.com", "bidi rule"},
		{"١٢٣.com", "bidi rule"},
		{"l·x.cat", "outside the context"},
		{"a·b.com", "outside the context"},
		{"ab・c.com", "outside the context"},
		{"कखग1१.in", "numbering systems"},
	} {
		got, err := Domain(tc.in)
		name := tc.in
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		if err == nil {
			t.Errorf("Domain(%q) = %q, want error containing %q", name, got, tc.reason)
			continue
		}
		if got != "" {
			t.Errorf("Domain(%q) returned %q with an error", name, got)
		}
		var ve *Error
		if !errors.As(err, &ve) || ve.Field != "domain" {
			t.Errorf("Domain(%q) error = %#v, want *Error for field domain", name, err)
			continue
		}
		if !strings.Contains(ve.Reason, tc.reason) {
			t.Errorf("Domain(%q) reason = %q, want it to contain %q", name, ve.Reason, tc.reason)
		}
		if len(err.Error()) > maxErrorLen {
			t.Errorf("Domain(%q) error is %d bytes long", name, len(err.Error()))
		}
	}
}

func TestDomainErrorEchoIsBounded(t *testing.T) {
	in := strings.Repeat("attacker", 50) + ".com"
	_, err := Domain(in + ";")
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), in[:maxEcho+8]) {
		t.Errorf("error echoes more than %d bytes: %v", maxEcho, err)
	}
	if !strings.Contains(err.Error(), in[:maxEcho-8]) {
		t.Errorf("error does not show the start of the input: %v", err)
	}
}

func TestRegistrableDomain(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"www.example.com", "example.com"},
		{"a.b.c.example.com", "example.com"},
		{"shop.example.co.uk", "example.co.uk"},
		{"foo.github.io", "foo.github.io"},
		{"a.foo.github.io", "foo.github.io"},
		{"www.ck", "www.ck"},
		{"xn--bcher-kva.xn--p1ai", "xn--bcher-kva.xn--p1ai"},
		{"www.xn--bcher-kva.de", "xn--bcher-kva.de"},
	} {
		if got, err := RegistrableDomain(tc.in); got != tc.want || err != nil {
			t.Errorf("RegistrableDomain(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "Example.com", "example.com.", "bücher.de", "co.uk", "localhost", "192.0.2.1"} {
		if got, err := RegistrableDomain(in); err == nil {
			t.Errorf("RegistrableDomain(%q) = %q, want error", in, got)
		}
	}
}

func FuzzDomain(f *testing.F) {
	for _, s := range []string{"example.com", "bücher.de", "xn--bcher-kva.de", "co.uk", "192.0.2.1", "[::1]", "a..b", "аррӏе.com", "例え.jp", "*.x.com", "a_b.com", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Domain(s)
		if err != nil {
			var ve *Error
			if !errors.As(err, &ve) || ve.Field != "domain" {
				t.Fatalf("error %#v is not a domain *Error", err)
			}
			if out != "" {
				t.Fatalf("returned %q with an error", out)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("%d-byte error message", len(err.Error()))
			}
			return
		}
		// The result goes into paths, config files and argv unquoted.
		if out == "" || len(out) > maxDomainLen || strings.Contains(out, "..") ||
			out[0] == '.' || out[len(out)-1] == '.' || out[0] == '-' {
			t.Fatalf("Domain(%q) = %q", s, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("Domain(%q) = %q, byte %q", s, out, c)
			}
		}
		for _, l := range strings.Split(out, ".") {
			if l == "" || len(l) > maxLabelLen || l[0] == '-' || l[len(l)-1] == '-' {
				t.Fatalf("Domain(%q) = %q, label %q", s, out, l)
			}
		}
		if _, err := netip.ParseAddr(out); err == nil || allDigits(out[strings.LastIndexByte(out, '.')+1:]) {
			t.Fatalf("Domain(%q) = %q, an IP address", s, out)
		}
		if again, err := Domain(out); again != out || err != nil {
			t.Fatalf("Domain(%q) = %q, but Domain(%q) = %q, %v", s, out, out, again, err)
		}
		reg, err := RegistrableDomain(out)
		if err != nil || (reg != out && !strings.HasSuffix(out, "."+reg)) {
			t.Fatalf("RegistrableDomain(%q) = %q, %v", out, reg, err)
		}
	})
}

func BenchmarkDomain(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"ascii", "www.example.com"},
		{"upper", "WWW.Example.CO.UK."},
		{"idn", "bücher.example.de"},
		{"punycode", "xn--bcher-kva.example.de"},
		{"cjk", "例え.jp"},
		{"georgian", "ნიმუში.გე"}, // a script outside commonScripts
		{"refused", "pаypal.com"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Domain(bc.in)
			}
		})
	}
}
