package validate

import (
	"net/mail"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mailbox limits: quotas in MB and the sizes a mail object may hold.
const (
	MinMailQuotaMB        = 50
	MaxMailQuotaMB        = 10240
	MaxLocalPartLen       = 64
	MaxAliasTargets       = 50
	MaxAutoreplySubject   = 200
	MaxAutoreplyBody      = 8 << 10
	MinSpamScoreTenths    = 10
	MaxSpamScoreTenths    = 200
	maxSPFLen             = 450
	maxSPFLookups         = 10
	maxDMARCLen           = 450
	maxDKIMSelectorLen    = 63
	CatchAllFail          = ":fail:"
	CatchAllBlackhole     = ":blackhole:"
	mailboxLocalPartChars = "abcdefghijklmnopqrstuvwxyz0123456789._-"
)

// MailLocalPart accepts the local part of a mailbox or forwarder address we
// host and returns it lower-cased: an RFC 5321 dot-atom of letters, digits,
// '.', '_' and '-', starting and ending with a letter or digit, at most 64
// bytes. The other atext characters are refused on purpose: '/' and '%' are
// path and variable syntax in Dovecot's maildir and passwd-file paths, '|'
// is a pipe in Exim's redirect data, ':' and '#' end keys in lookup files,
// and '+' is the subaddress delimiter (user+tag@ reaches user@).
func MailLocalPart(s string) (string, error) {
	const field = "address"
	l := lowerASCII(s)
	switch {
	case l == "":
		return "", fail(field, "the local part (before @) must not be empty")
	case len(l) > MaxLocalPartLen:
		return "", fail(field, "the local part %s is %d bytes; at most %d", quote(s), len(l), MaxLocalPartLen)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if strings.IndexByte(mailboxLocalPartChars, c) < 0 {
			if c >= 0x80 || c < 0x20 || c == 0x7f {
				return "", fail(field, "the local part %s holds %s; use letters, digits, '.', '_' and '-'", quote(s), quoteByte(c))
			}
			return "", fail(field, "the local part %s holds %q; use letters, digits, '.', '_' and '-'", quote(s), string(c))
		}
	}
	if !isAlnum(l[0]) || !isAlnum(l[len(l)-1]) {
		return "", fail(field, "the local part %s must start and end with a letter or digit", quote(s))
	}
	if strings.Contains(l, "..") {
		return "", fail(field, "the local part %s has two dots in a row", quote(s))
	}
	return l, nil
}

// MailAddress accepts local@domain for a mailbox or forwarder we host and
// returns it canonical (lower-case local part, ASCII domain) with its parts.
func MailAddress(s string) (address, local, domain string, err error) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", "", "", fail("address", "%s is not an address (local@domain)", quote(s))
	}
	if local, err = MailLocalPart(s[:at]); err != nil {
		return "", "", "", err
	}
	if domain, err = Domain(s[at+1:]); err != nil {
		return "", "", "", fail("address", "%s: %s", quote(s), err.(*Error).Reason)
	}
	return local + "@" + domain, local, domain, nil
}

// MailTarget accepts a forwarding target: a full address, local or remote.
// Remote local parts may also hold '+' and '='; the characters that are
// syntax in Exim's redirect data stay refused.
func MailTarget(s string) (string, error) {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 {
		return "", fail("to", "%s is not an address (local@domain)", quote(s))
	}
	l := lowerASCII(s[:at])
	if len(l) > MaxLocalPartLen {
		return "", fail("to", "the local part of %s is %d bytes; at most %d", quote(s), len(l), MaxLocalPartLen)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if strings.IndexByte(mailboxLocalPartChars+"+=", c) < 0 {
			return "", fail("to", "%s holds %s; a forwarding target uses letters, digits and . _ - + =", quote(s), quoteByte(c))
		}
	}
	if !isAlnum(l[0]) || l[len(l)-1] == '.' || strings.Contains(l, "..") {
		return "", fail("to", "%s is not a dot-atom address", quote(s))
	}
	d, err := Domain(s[at+1:])
	if err != nil {
		return "", fail("to", "%s: %s", quote(s), err.(*Error).Reason)
	}
	return l + "@" + d, nil
}

// MailPassword accepts a mailbox password: Password's rules, and it must
// not contain the local part. Dovecot and Exim see only its hash.
func MailPassword(pw, address string) error {
	if err := Password(pw); err != nil {
		return err
	}
	local, _, _ := strings.Cut(address, "@")
	if len(local) >= 4 && strings.Contains(strings.ToLower(pw), strings.ToLower(local)) {
		return fail("password", "must not contain the mailbox name")
	}
	return nil
}

// MailQuotaMB accepts a mailbox quota in MB.
func MailQuotaMB(mb int) error {
	if mb < MinMailQuotaMB || mb > MaxMailQuotaMB {
		return fail("quotaMB", "%d is out of range: %d to %d MB", mb, MinMailQuotaMB, MaxMailQuotaMB)
	}
	return nil
}

// CatchAll accepts a catch-all target of domain: "" (none), ":fail:",
// ":blackhole:", or a local part or full address of a mailbox of the domain;
// it returns the canonical form (a local part for a mailbox).
func CatchAll(target, domain string) (string, error) {
	switch target {
	case "", CatchAllFail, CatchAllBlackhole:
		return target, nil
	}
	if strings.Contains(target, "@") {
		_, local, d, err := MailAddress(target)
		if err != nil {
			return "", err
		}
		if d != domain {
			return "", fail("target", "%s is not a mailbox of %s", quote(target), domain)
		}
		return local, nil
	}
	return MailLocalPart(target)
}

// DKIMSelector accepts a DKIM selector: one DNS label of lower-case
// letters, digits and '-'.
func DKIMSelector(s string) error {
	if s == "" || len(s) > maxDKIMSelectorLen {
		return fail("selector", "%s must be 1 to %d characters", quote(s), maxDKIMSelectorLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !(c == '-' && i > 0 && i < len(s)-1) {
			return fail("selector", "%s: use lower-case letters, digits and inner '-'", quote(s))
		}
	}
	return nil
}

// SPF accepts an SPF record (RFC 7208): "v=spf1" and terms of known
// mechanisms and modifiers, printable ASCII, at most 10 DNS-querying terms.
func SPF(rec string) error {
	const field = "record"
	if len(rec) > maxSPFLen {
		return fail(field, "is %d bytes; at most %d", len(rec), maxSPFLen)
	}
	if err := printableTXT(field, rec); err != nil {
		return err
	}
	terms := strings.Fields(rec)
	if len(terms) == 0 || !strings.EqualFold(terms[0], "v=spf1") {
		return fail(field, "must start with \"v=spf1\"")
	}
	lookups, allSeen := 0, false
	seen := map[string]bool{}
	for _, t := range terms[1:] {
		lt := strings.ToLower(t)
		if name, val, ok := strings.Cut(lt, "="); ok && (name == "redirect" || name == "exp") {
			if seen[name] {
				return fail(field, "modifier %q given twice", name)
			}
			seen[name] = true
			if !spfDomainSpec(val) {
				return fail(field, "modifier %s: %q is not a domain", name, val)
			}
			if name == "redirect" {
				lookups++
			}
			continue
		}
		if allSeen {
			return fail(field, "%q after \"all\" is never evaluated", t)
		}
		m := strings.TrimLeft(lt, "+-~?")
		if len(lt)-len(m) > 1 {
			return fail(field, "%q has more than one qualifier", t)
		}
		name, arg, hasArg := strings.Cut(m, ":")
		cidr := ""
		if !hasArg {
			name, cidr, _ = strings.Cut(m, "/")
		}
		switch name {
		case "all":
			if hasArg || cidr != "" {
				return fail(field, "%q: \"all\" takes no argument", t)
			}
			allSeen = true
		case "ip4", "ip6":
			if !hasArg {
				return fail(field, "%q needs an address", t)
			}
			p, err := netip.ParsePrefix(arg)
			if err != nil {
				a, aerr := netip.ParseAddr(arg)
				if aerr != nil {
					return fail(field, "%q: %q is not an address or network", t, arg)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if (name == "ip4") != p.Addr().Is4() {
				return fail(field, "%q: wrong address family for %s", t, name)
			}
		case "a", "mx", "ptr", "include", "exists":
			if name != "ptr" {
				lookups++
			}
			if (name == "include" || name == "exists") && !hasArg {
				return fail(field, "%q needs a domain", t)
			}
			if hasArg {
				dom, c, _ := strings.Cut(arg, "/")
				if !spfDomainSpec(dom) {
					return fail(field, "%q: %q is not a domain", t, dom)
				}
				cidr = c
			}
			if cidr != "" {
				for _, part := range strings.Split(cidr, "/") {
					if n, err := strconv.Atoi(part); part != "" && (err != nil || n < 0 || n > 128) {
						return fail(field, "%q: bad prefix length", t)
					}
				}
			}
		default:
			return fail(field, "unknown mechanism %q", t)
		}
	}
	if lookups > maxSPFLookups {
		return fail(field, "has %d DNS-querying terms; RFC 7208 allows %d", lookups, maxSPFLookups)
	}
	return nil
}

// DMARC accepts a DMARC record (RFC 7489): "v=DMARC1; p=..." with known
// tags, each at most once.
func DMARC(rec string) error {
	const field = "policy"
	if len(rec) > maxDMARCLen {
		return fail(field, "is %d bytes; at most %d", len(rec), maxDMARCLen)
	}
	if err := printableTXT(field, rec); err != nil {
		return err
	}
	parts := strings.Split(strings.TrimRight(strings.TrimSpace(rec), ";"), ";")
	seen := map[string]bool{}
	for i, p := range parts {
		tag, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		tag, val = strings.ToLower(strings.TrimSpace(tag)), strings.TrimSpace(val)
		if !ok {
			return fail(field, "%q is not tag=value", strings.TrimSpace(p))
		}
		if seen[tag] {
			return fail(field, "tag %q given twice", tag)
		}
		seen[tag] = true
		switch {
		case i == 0 && (tag != "v" || val != "DMARC1"):
			return fail(field, "must start with \"v=DMARC1\"")
		case i == 1 && tag != "p":
			return fail(field, "\"p\" must follow \"v=DMARC1\"")
		}
		switch tag {
		case "v":
		case "p", "sp":
			if val != "none" && val != "quarantine" && val != "reject" {
				return fail(field, "%s=%q: one of none, quarantine, reject", tag, val)
			}
		case "adkim", "aspf":
			if val != "r" && val != "s" {
				return fail(field, "%s=%q: r or s", tag, val)
			}
		case "pct":
			if n, err := strconv.Atoi(val); err != nil || n < 0 || n > 100 {
				return fail(field, "pct=%q: 0 to 100", val)
			}
		case "ri":
			if n, err := strconv.Atoi(val); err != nil || n < 1 {
				return fail(field, "ri=%q: a positive number of seconds", val)
			}
		case "fo":
			for _, o := range strings.Split(val, ":") {
				if o != "0" && o != "1" && o != "d" && o != "s" {
					return fail(field, "fo=%q: options 0, 1, d, s separated by ':'", val)
				}
			}
		case "rf":
			if val != "afrf" {
				return fail(field, "rf=%q: afrf", val)
			}
		case "rua", "ruf":
			for _, u := range strings.Split(val, ",") {
				addr, ok := strings.CutPrefix(strings.TrimSpace(u), "mailto:")
				addr, _, _ = strings.Cut(addr, "!")
				if !ok {
					return fail(field, "%s: %q is not a mailto: URI", tag, u)
				}
				if _, err := mail.ParseAddress(addr); err != nil || strings.ContainsAny(addr, " <>\"") {
					return fail(field, "%s: %q is not an address", tag, addr)
				}
			}
		default:
			return fail(field, "unknown tag %q", tag)
		}
	}
	if !seen["p"] {
		return fail(field, "\"p\" is required")
	}
	return nil
}

// Autoresponder accepts a vacation reply's subject and body: the subject
// one line of at most 200 bytes, the body at most 8 KiB, both valid UTF-8
// without control characters (the body may hold newlines and tabs).
func Autoresponder(subject, body string) error {
	if subject == "" || len(subject) > MaxAutoreplySubject {
		return fail("subject", "must be 1 to %d bytes", MaxAutoreplySubject)
	}
	if !utf8.ValidString(subject) || strings.ContainsFunc(subject, isControl) {
		return fail("subject", "must be one line of valid UTF-8 without control characters")
	}
	if body == "" || len(body) > MaxAutoreplyBody {
		return fail("body", "must be 1 to %d bytes", MaxAutoreplyBody)
	}
	if !utf8.ValidString(body) || strings.ContainsFunc(body, func(r rune) bool { return r != '\n' && r != '\t' && r != '\r' && isControl(r) }) {
		return fail("body", "must be valid UTF-8 without control characters")
	}
	return nil
}

// SpamScoreTenths accepts a spam threshold in tenths of a point.
func SpamScoreTenths(n int) error {
	if n < MinSpamScoreTenths || n > MaxSpamScoreTenths {
		return fail("score", "%.1f is out of range: %.1f to %.1f", float64(n)/10, float64(MinSpamScoreTenths)/10, float64(MaxSpamScoreTenths)/10)
	}
	return nil
}

// spfDomainSpec accepts an SPF domain-spec: a DNS name (labels may hold
// '_', as _spf.example.com does) or one using macros ("%{i}.example.com").
func spfDomainSpec(s string) bool {
	if strings.Contains(s, "%{") {
		return true
	}
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(s) > 253 || len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func printableTXT(field, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return fail(field, "must be printable ASCII without quotes or backslashes (found %s)", quoteByte(c))
		}
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029
}
