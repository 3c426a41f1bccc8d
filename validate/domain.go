package validate

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
)

const (
	maxDomainLen = 253
	maxLabelLen  = 63
	// maxDomainInput bounds raw input before any Unicode work. A code point
	// takes at most 4 bytes of UTF-8 and at least one octet of punycode, so
	// nothing longer can fit in 253 octets once encoded (the +1 is a root dot).
	maxDomainInput = 4*maxDomainLen + 1
)

// registration is idna.Registration (RFC 5891 §4) with its DNS length check
// off: Domain measures the encoded labels itself so that it can say which
// limit a name breaks. The Lookup profile is the wrong tool here. It applies
// the UTS #46 mapping, which folds case, width and compatibility forms, maps
// "。" to ".", and silently drops soft hyphens and zero-width spaces, so many
// spellings collapse onto one name; that suits a browser resolving what a
// person typed, not a registry of hosted names that must read back as they
// were entered. Registration maps nothing and refuses what is not already in
// IDNA2008 form, and it applies the bidi rule (RFC 5893) and the joiner
// rules.
var registration = idna.New(idna.ValidateForRegistration(), idna.VerifyDNSLength(false))

// Domain validates a hosted domain name and returns its canonical form:
// lowercase ASCII, internationalized labels as punycode A-labels ("bücher.de"
// becomes "xn--bcher-kva.de"), no trailing dot. The result is safe as a path
// component, an nginx or zone-file token and an argv element: it matches
// [a-z0-9.-], never contains "..", and Domain(result) == result.
//
// ASCII letters are folded to lowercase because DNS ignores their case;
// nothing else is folded, so "BÜCHER.de" and fullwidth or compatibility
// spellings are refused rather than rewritten.
//
// Beyond RFC 1035/5891 syntax, a name must be one that nPanel can serve on
// the public Internet under a known owner:
//
//   - At least two labels, and not itself a public suffix, ICANN or private
//     ("com", "co.uk", "github.io"): nobody can own those, and hosting one
//     would let a tenant set cookies or claim certificates for every site
//     under it.
//   - Its top-level domain must be listed in the public suffix list compiled
//     into golang.org/x/net. The list's implicit "*" rule would make any
//     label a TLD, but a name under an unlisted TLD cannot be delegated in
//     public DNS, so it can get neither certificates nor mail, and in
//     practice it is a typo or a private-use name (".lan", ".corp"). A TLD
//     delegated after the compiled-in list was built is refused until x/net
//     is updated.
//   - Special-use TLDs (RFC 6761 and later: localhost, local, test, example,
//     invalid, onion, arpa, alt, internal) are refused even where the list
//     carries them. The second-level names example.com, example.net and
//     example.org are ordinary names under real TLDs and are accepted, so
//     tests can use them.
//   - No IP addresses, bracketed or not, and no all-numeric last label
//     ("127.1" is an IP address to inet_aton).
//   - No '_' (service labels such as _dmarc are records, not hosted domains)
//     and no '*' (wildcards are not domains).
//
// Internationalized labels get checks that Go's idna package leaves out. It
// implements UTS #46 validity, which admits symbols and emoji ("☃.net") and
// skips the CONTEXTO rules, so each label must also hold only letters, marks
// and digits as RFC 5892 derives them. And because valid IDNA can still spoof
// another name, a label must be single-script or one of the CJK combinations
// of UTS #39's Highly Restrictive level, must not mix digit systems, and must
// not be an all-Cyrillic look-alike of an ASCII word ("аррӏе") unless the TLD
// itself is Cyrillic, where such labels are normal.
func Domain(s string) (string, error) {
	switch {
	case s == "":
		return "", failDomain("must not be empty")
	case len(s) > maxDomainInput:
		return "", failDomain("%s is %d bytes long; a domain name is at most %d characters", quote(s), len(s), maxDomainLen)
	case !utf8.ValidString(s):
		return "", failDomain("%s is not valid UTF-8", quote(s))
	case isIPLiteral(s):
		return "", failDomain("%s is an IP address; give a domain name", quote(s))
	}
	// One trailing dot is the absolute spelling of the same name.
	name := lowerASCII(strings.TrimSuffix(s, "."))
	if err := checkDomainBytes(s, name); err != nil {
		return "", err
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if err := checkLabelShape(s, l); err != nil {
			return "", err
		}
	}
	for _, l := range labels {
		if !isASCII(l) {
			if err := checkULabel(l, l); err != nil {
				return "", err
			}
		}
	}
	if len(labels) == 1 {
		if why, ok := specialUseTLDs[name]; ok {
			return "", failDomain("%s is reserved: %s", quote(s), why)
		}
		return "", failDomain("%s is a single label; give a full name such as example.com", quote(s))
	}

	ascii, err := registration.ToASCII(name)
	if err != nil {
		return "", idnaRefusal(s, labels)
	}
	alabels := strings.Split(ascii, ".")
	if len(alabels) != len(labels) {
		// Registration maps nothing, so it cannot add or remove dots.
		return "", failDomain("%s changed shape under IDNA conversion", quote(s))
	}
	ulabels := make([]string, len(labels))
	for i, a := range alabels {
		switch {
		case a == "":
			return "", failDomain("label %s decodes to nothing", quote(labels[i]))
		case len(a) > maxLabelLen:
			return "", failDomain("label %s is %d octets once encoded; at most %d", quote(labels[i]), len(a), maxLabelLen)
		case strings.HasPrefix(labels[i], "xn--") && a != labels[i]:
			// A different encoding of the same U-label would be a second
			// spelling of one name, defeating canonical comparison.
			return "", failDomain("label %s is not canonical punycode (want %s)", quote(labels[i]), quote(a))
		}
		ulabels[i] = labels[i]
		if strings.HasPrefix(a, "xn--") && isASCII(labels[i]) {
			u, err := registration.ToUnicode(a)
			if err != nil {
				return "", failDomain("label %s is not valid punycode", quote(labels[i]))
			}
			if err := checkULabel(labels[i], u); err != nil {
				return "", err
			}
			ulabels[i] = u
		}
	}
	if len(ascii) > maxDomainLen {
		return "", failDomain("%s is %d octets once encoded; at most %d", quote(s), len(ascii), maxDomainLen)
	}
	for i := 0; i < len(ascii); i++ {
		// Unreachable given the checks above; kept because callers rely on
		// this alphabet to splice the result into files and commands.
		if c := ascii[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return "", failDomain("%s encodes to a name with %s", quote(s), quoteByte(c))
		}
	}

	tld := alabels[len(alabels)-1]
	if allDigits(tld) {
		return "", failDomain("%s ends in a numeric label; that is an IP address, not a domain name", quote(s))
	}
	if why, ok := specialUseTLDs[tld]; ok {
		return "", failDomain("%s is under %q, %s", quote(s), "."+tld, why)
	}
	suffix, icann := publicsuffix.PublicSuffix(ascii)
	if suffix == ascii {
		return "", failDomain("%s is a public suffix; use a name under it, such as example.%s", quote(s), ascii)
	}
	if !icann && suffix == tld {
		// No rule matched, so the list fell back to its implicit "*".
		return "", failDomain("%s is under %q, which is not a top-level domain in the public suffix list", quote(s), "."+tld)
	}

	cyrillicTLD := isCyrillicTLD(tld, ulabels[len(ulabels)-1])
	for i, u := range ulabels {
		if isASCII(u) {
			continue
		}
		if err := checkScripts(labels[i], u, cyrillicTLD); err != nil {
			return "", err
		}
	}
	return ascii, nil
}

// RegistrableDomain returns the registrable domain (eTLD+1) of a canonical
// name, for grouping: "shop.example.co.uk" gives "example.co.uk". Private
// suffixes count, so two sites under github.io stay apart. The argument must
// be Domain's result; anything else is refused rather than canonicalized,
// since a caller holding a non-canonical name has skipped validation.
func RegistrableDomain(canonical string) (string, error) {
	d, err := Domain(canonical)
	if err != nil {
		return "", err
	}
	if d != canonical {
		return "", failDomain("%s is not in canonical form (%s)", quote(canonical), quote(d))
	}
	reg, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		// Domain refuses public suffixes, so this means the two disagree.
		return "", failDomain("%s has no registrable domain", quote(d))
	}
	return reg, nil
}

func failDomain(format string, args ...any) error { return fail("domain", format, args...) }

// specialUseTLDs can never be hosted publicly, whatever the suffix list says
// (it lists onion and arpa).
var specialUseTLDs = map[string]string{
	"localhost":   "it names this machine (RFC 6761)",
	"local":       "it is multicast DNS (RFC 6762)",
	"test":        "reserved for testing (RFC 6761) and never delegated",
	"example":     "reserved for documentation (RFC 6761) and never delegated",
	"invalid":     "guaranteed not to exist (RFC 6761)",
	"onion":       "Tor onion services (RFC 7686), not DNS",
	"arpa":        "DNS infrastructure such as reverse zones (RFC 3172)",
	"alt":         "reserved for non-DNS namespaces (RFC 9476)",
	"internal":    "reserved by ICANN for private networks",
	"localdomain": "a local alias of localhost",
}

func isIPLiteral(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// checkDomainBytes refuses ASCII that has no place in a host name, naming the
// usual mistakes. Non-ASCII is left to the IDNA checks.
func checkDomainBytes(s, name string) error {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c >= utf8.RuneSelf:
		case c == '_':
			return failDomain("%s contains \"_\"; service labels such as _dmarc are DNS records, not domains", quote(s))
		case c == '*':
			return failDomain("%s contains \"*\"; wildcards are not domains, add the parent domain", quote(s))
		case c == ':' || c == '/' || c == '@' || c == '[' || c == ']' || c == '?' || c == '#':
			return failDomain("%s contains %q; give the bare domain name, without scheme, port, path or user", quote(s), c)
		case c < ' ' || c == 0x7f:
			return failDomain("%s contains control character %s", quote(s), quoteByte(c))
		case c == ' ':
			return failDomain("%s contains a space", quote(s))
		default:
			return failDomain("%s contains %q; a domain name holds letters, digits, '-' and '.'", quote(s), c)
		}
	}
	return nil
}

// checkLabelShape checks what can be seen before encoding: emptiness,
// hyphens, and the length of labels that are already ASCII.
func checkLabelShape(s, l string) error {
	switch {
	case l == "":
		return failDomain("%s has an empty label (a leading dot or \"..\")", quote(s))
	case l[0] == '-' || l[len(l)-1] == '-':
		return failDomain("label %s starts or ends with a hyphen", quote(l))
	case isASCII(l) && len(l) > maxLabelLen:
		return failDomain("label %s is %d characters long; at most %d", quote(l), len(l), maxLabelLen)
	case len(l) >= 4 && l[2] == '-' && l[3] == '-' && !strings.HasPrefix(l, "xn--"):
		return failDomain("label %s has \"--\" in the third and fourth places, which is reserved for encoded labels (RFC 5891)", quote(l))
	}
	return nil
}

// idnaRefusal explains why registration refused a name whose runes
// checkULabel already passed. The idna package's errors carry no exported
// code and can echo the whole input, so they are not passed on.
func idnaRefusal(s string, labels []string) error {
	for i, l := range labels {
		if _, err := registration.ToASCII(l); err == nil {
			continue
		}
		if strings.HasPrefix(l, "xn--") {
			// Name the offending character when the punycode itself decodes.
			if u, err := idna.Punycode.ToUnicode(l); err == nil {
				if err := checkULabel(l, u); err != nil {
					return err
				}
				l = u
			}
		}
		switch {
		case hasRTL(l):
			return failDomain("label %s breaks the bidi rule (RFC 5893): a right-to-left label starts with a right-to-left letter, does not mix directions and uses one kind of digits", quote(l))
		case strings.HasPrefix(l, "xn--"):
			return failDomain("label %s is not punycode for a valid IDNA2008 label", quote(l))
		case !isASCII(l) && strings.HasPrefix(labels[i], "xn--"):
			return failDomain("label %s decodes to %s, which is not a valid IDNA2008 label (RFC 5891)", quote(labels[i]), quote(l))
		default:
			return failDomain("label %s is not a valid IDNA2008 label (RFC 5891): it must be lowercase, normalized and contain only letters, marks and digits", quote(l))
		}
	}
	// Each label passes alone, so it is the whole-name bidi rule: once any
	// label is right-to-left, RFC 5893 applies to every label.
	return failDomain("%s breaks the bidi rule (RFC 5893) across its labels", quote(s))
}

func hasRTL(s string) bool {
	for _, r := range s {
		p, _ := bidi.LookupRune(r)
		switch p.Class() {
		case bidi.R, bidi.AL, bidi.AN:
			return true
		}
	}
	return false
}

// checkULabel applies the per-character rules of IDNA2008 (RFC 5892) that Go's
// UTS #46-based idna package does not: only letters, marks and digits, the
// CONTEXTO characters only in their context, the exceptions of §2.6. It also
// refuses letters whose only use in a domain is imitating ASCII. display is
// the label as the user wrote it.
func checkULabel(display, u string) error {
	if !norm.NFC.IsNormalString(u) {
		return failDomain("label %s is not in Unicode normalization form C; use precomposed letters (é, not e followed by a combining accent)", quote(display))
	}
	if r, _ := utf8.DecodeRuneInString(u); unicode.In(r, unicode.Mn, unicode.Mc, unicode.Me) {
		return failDomain("label %s starts with a combining mark", quote(display))
	}
	zero := rune(-1)
	for i, r := range u {
		if r >= utf8.RuneSelf {
			if err := checkIDNRune(display, u, i, r); err != nil {
				return err
			}
		}
		if unicode.Is(unicode.Nd, r) {
			z := digitZero(r)
			if zero >= 0 && z != zero {
				return failDomain("label %s mixes digits of different numbering systems", quote(display))
			}
			zero = z
		}
	}
	return nil
}

func checkIDNRune(display, u string, i int, r rune) error {
	switch {
	case unicode.IsUpper(r) || unicode.IsTitle(r):
		return failDomain("label %s contains uppercase %s; write the name in lowercase", quote(display), quoteRune(r))
	case r == 0x3002 || r == 0xFF0E || r == 0xFF61:
		return failDomain("label %s contains %s; separate labels with the ASCII dot \".\"", quote(display), quoteRune(r))
	case idnaDisallowed[r]:
		return failDomain("label %s contains %s, which IDNA2008 disallows (RFC 5892 §2.6)", quote(display), quoteRune(r))
	case isContextO(r):
		if !contextOK(u, i, r) {
			return failDomain("label %s contains %s outside the context RFC 5892 allows it in", quote(display), quoteRune(r))
		}
		return nil
	case unicode.Is(asciiImitators, r):
		return failDomain("label %s contains %s, a phonetic or click letter that imitates ASCII", quote(display), quoteRune(r))
	case !norm.NFKC.IsNormalString(string(r)):
		return failDomain("label %s contains %s, a compatibility form (fullwidth, ligature, superscript, ...); type the plain character", quote(display), quoteRune(r))
	case idnaPValidExceptions[r]:
		return nil
	case !unicode.In(r, unicode.Ll, unicode.Lo, unicode.Lm, unicode.Mn, unicode.Mc, unicode.Nd):
		return failDomain("label %s contains %s, which is not a letter, mark or digit", quote(display), quoteRune(r))
	}
	return nil
}

// idnaDisallowed are letters and marks that RFC 5892 §2.6 disallows by
// exception, plus the Hangul fillers, which are letters that draw nothing.
var idnaDisallowed = map[rune]bool{
	0x0640: true, 0x07FA: true, 0x302E: true, 0x302F: true, 0x3031: true, 0x3032: true,
	0x3033: true, 0x3034: true, 0x3035: true, 0x303B: true,
	0x115F: true, 0x1160: true, 0x3164: true, 0xFFA0: true,
}

// idnaPValidExceptions are allowed by RFC 5892 §2.6 although their general
// category is not a letter or digit (the Tibetan tsheg separates syllables).
var idnaPValidExceptions = map[rune]bool{0x06FD: true, 0x06FE: true, 0x0F0B: true, 0x3007: true}

// asciiImitators are Latin-script letters with no orthographic use in domain
// names that render like ASCII letters or punctuation: IPA and phonetic
// extensions ("ɡ", "ɑ", small capitals), spacing modifiers, the click
// letters ("ǃ" for "!") and dotless j.
var asciiImitators = &unicode.RangeTable{R16: []unicode.Range16{
	{Lo: 0x01C0, Hi: 0x01C3, Stride: 1},
	{Lo: 0x0237, Hi: 0x0237, Stride: 1},
	{Lo: 0x0250, Hi: 0x02FF, Stride: 1},
	{Lo: 0x1D00, Hi: 0x1DBF, Stride: 1},
}}

func isContextO(r rune) bool {
	return r == 0x00B7 || r == 0x0375 || r == 0x05F3 || r == 0x05F4 || r == 0x30FB
}

// contextOK applies the CONTEXTO rules of RFC 5892 Appendix A to the rune r
// at byte offset i of label u.
func contextOK(u string, i int, r rune) bool {
	before, _ := utf8.DecodeLastRuneInString(u[:i])
	after, _ := utf8.DecodeRuneInString(u[i+utf8.RuneLen(r):])
	switch r {
	case 0x00B7: // MIDDLE DOT: only in Catalan "l·l".
		return before == 'l' && after == 'l'
	case 0x0375: // GREEK LOWER NUMERAL SIGN: before a Greek letter.
		return unicode.Is(unicode.Greek, after)
	case 0x05F3, 0x05F4: // HEBREW GERESH, GERSHAYIM: after a Hebrew letter.
		return unicode.Is(unicode.Hebrew, before)
	case 0x30FB: // KATAKANA MIDDLE DOT: in a Japanese label.
		for _, c := range u {
			if c != 0x30FB && unicode.In(c, unicode.Hiragana, unicode.Katakana, unicode.Han) {
				return true
			}
		}
	}
	return false
}

// digitZero returns the zero of r's numbering system. Unicode assigns
// decimal digits in contiguous runs of ten starting at zero, and adjacent
// systems (the mathematical digits) in whole tens, so the zero is found by
// walking back to the start of the run.
func digitZero(r rune) rune {
	start := r
	for start > 0 && unicode.Is(unicode.Nd, start-1) {
		start--
	}
	return start + (r-start)/10*10
}

// CanonicalDomain accepts a domain already in the form Domain returns: an
// agent never rewrites a name it then uses in a file name or hands on.
func CanonicalDomain(s string) error {
	c, err := Domain(s)
	if err != nil {
		return err
	}
	if c != s {
		return fmt.Errorf("domain %q is not in canonical form; send %q", s, c)
	}
	return nil
}
