package validate

import (
	"slices"
	"strings"
	"unicode"
)

// checkScripts refuses the homograph tricks that valid IDNA still allows.
//
// Mixed scripts: a label may use one script, or one of the combinations
// UTS #39 §5.2 calls Highly Restrictive (Latin with Han and Japanese kana,
// with Han and Bopomofo, or with Han and Hangul). That stops "pаypal" with a
// Cyrillic "а". Common and Inherited characters (digits, '-', combining
// marks) belong to every script.
//
// Whole-script look-alikes: a label written only in Cyrillic letters that
// have an ASCII twin ("аррӏе") passes the mixed-script rule but reads as an
// English word. It is refused unless the TLD is Cyrillic (.ru, .рф, ...),
// where such labels are ordinary words. Chromium applies the same rule; the
// full UTS #39 confusables data is in neither Go's standard library nor x/text.
func checkScripts(display, u string, cyrillicTLD bool) error {
	var seen []string
	for _, r := range u {
		if sc := scriptOf(r, seen); sc != "" && !slices.Contains(seen, sc) {
			seen = append(seen, sc)
		}
	}
	if !allowedScriptMix(seen) {
		return failDomain("label %s mixes the %s scripts, a common look-alike trick; use one script per label", quote(display), strings.Join(seen, ", "))
	}
	if !cyrillicTLD && isCyrillicLookalike(u) {
		return failDomain("label %s is written in Cyrillic letters that look like Latin ones; it would be mistaken for an ASCII name", quote(display))
	}
	return nil
}

// highlyRestrictive are the multi-script sets UTS #39 allows in one label.
var highlyRestrictive = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Bopomofo"},
	{"Latin", "Han", "Hangul"},
}

func allowedScriptMix(seen []string) bool {
	if len(seen) <= 1 {
		return true
	}
	for _, set := range highlyRestrictive {
		all := true
		for _, sc := range seen {
			all = all && slices.Contains(set, sc)
		}
		if all {
			return true
		}
	}
	return false
}

// cyrillicLookalikes are the lowercase Cyrillic letters that render like
// ASCII letters in common fonts (Chromium's IDN spoof checker list).
const cyrillicLookalikes = "асԁеһіјӏорԛѕԝхуъьҽпгѵѡ"

func isCyrillicLookalike(u string) bool {
	letters := 0
	for _, r := range u {
		switch {
		case '0' <= r && r <= '9' || r == '-':
		case containsRune(cyrillicLookalikes, r):
			letters++
		default:
			return false
		}
	}
	return letters > 0
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}

// cyrillicCCTLDs are the ASCII country-code TLDs of countries that write in
// Cyrillic, where an all-Cyrillic label is a normal word, not a disguise.
var cyrillicCCTLDs = map[string]bool{"bg": true, "by": true, "kz": true, "ru": true, "su": true, "ua": true, "uz": true}

// isCyrillicTLD reports whether the TLD (A-label tld, U-label utld) is
// Cyrillic: a Cyrillic IDN TLD or one of cyrillicCCTLDs.
func isCyrillicTLD(tld, utld string) bool {
	if cyrillicCCTLDs[tld] {
		return true
	}
	for _, r := range utld {
		if unicode.Is(unicode.Cyrillic, r) {
			return true
		}
	}
	return false
}

type script struct {
	name  string
	table *unicode.RangeTable
}

// scripts lists unicode.Scripts without Common and Inherited, the usual
// scripts of domain names first, then the rest in a fixed order.
var scripts = func() []script {
	common := []string{"Latin", "Cyrillic", "Greek", "Han", "Hiragana", "Katakana", "Hangul", "Arabic", "Hebrew", "Thai", "Devanagari"}
	var rest []string
	for n := range unicode.Scripts {
		if n != "Common" && n != "Inherited" && !slices.Contains(common, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	var all []script
	for _, n := range append(common, rest...) {
		all = append(all, script{n, unicode.Scripts[n]})
	}
	return all
}()

// scriptOf returns the Unicode script of r, or "" for characters every
// script shares (digits, '-', combining marks). The scripts already seen in
// the label are tried first: a full scan searches about 170 tables.
func scriptOf(r rune, seen []string) string {
	if r <= unicode.MaxASCII {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' {
			return "Latin"
		}
		return ""
	}
	if unicode.In(r, unicode.Common, unicode.Inherited) {
		return ""
	}
	for _, n := range seen {
		if unicode.Is(unicode.Scripts[n], r) {
			return n
		}
	}
	for _, sc := range scripts {
		if unicode.Is(sc.table, r) {
			return sc.name
		}
	}
	return "Unknown"
}
