package dnszone

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// Record types nPanel manages.
const (
	TypeA     = "A"
	TypeAAAA  = "AAAA"
	TypeCNAME = "CNAME"
	TypeMX    = "MX"
	TypeTXT   = "TXT"
	TypeNS    = "NS"
	TypeSRV   = "SRV"
	TypeCAA   = "CAA"
	TypePTR   = "PTR"
)

// Types lists the supported record types.
var Types = []string{TypeA, TypeAAAA, TypeCNAME, TypeMX, TypeTXT, TypeNS, TypeSRV, TypeCAA, TypePTR}

// Limits.
const (
	// MinTTL and MaxTTL bound record TTLs: below a minute resolvers are
	// hammered for little gain, above a week a mistake outlives any fix.
	MinTTL = 30
	MaxTTL = 604800
	// DefaultTTL applies to records with TTL 0 when the SOA gives none.
	DefaultTTL = 3600
	// MaxContentLen bounds one record's content (a long DKIM key is ~800).
	MaxContentLen = 4096
	// MaxRecords bounds one zone as its DNS server gets it, every record
	// included: CheckRecords, and so the node, refuses more.
	MaxRecords = 10000
	// MaxGlueRecords is how many records the control plane adds to a zone
	// of its own accord: the addresses of the ns1 and ns2 it names when no
	// cluster nameservers are set.
	MaxGlueRecords = 2
	// MaxZoneRecords is how many records the API lets a zone hold, so that
	// a zone it accepted always fits on the node (a zone the node refuses
	// goes FAILED and takes no further change).
	MaxZoneRecords = MaxRecords - MaxGlueRecords
)

// Record is one resource record. Content is the RDATA in presentation form
// without the priority of MX and SRV records, which is Priority.
type Record struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Content  string `json:"content"`
	TTL      uint32 `json:"ttl"`
	Priority uint32 `json:"priority,omitempty"`
}

// HasPriority reports whether records of type t carry a priority.
func HasPriority(t string) bool { return t == TypeMX || t == TypeSRV }

// PDNSContent is the record's content as PowerDNS stores it: the priority of
// MX and SRV records is the first field.
func (r Record) PDNSContent() string {
	if HasPriority(r.Type) {
		return strconv.FormatUint(uint64(r.Priority), 10) + " " + r.Content
	}
	return r.Content
}

// String is the record as a zone-file line.
func (r Record) String() string {
	return fmt.Sprintf("%s %d IN %s %s", r.Name, r.TTL, r.Type, r.PDNSContent())
}

// FromPDNS splits PowerDNS content of type t into content and priority.
func FromPDNS(name, typ string, ttl uint32, content string) (Record, error) {
	r := Record{Name: name, Type: typ, TTL: ttl, Content: content}
	if HasPriority(typ) {
		p, rest, ok := strings.Cut(strings.TrimSpace(content), " ")
		n, err := strconv.ParseUint(p, 10, 16)
		if !ok || err != nil {
			return r, fmt.Errorf("%s content %q has no priority", typ, bound(content))
		}
		r.Priority, r.Content = uint32(n), strings.TrimSpace(rest)
	}
	return r, nil
}

// ValidateRecord checks one record of zone (ZoneName form, canonical or not)
// and returns it canonical: owner and target names absolute and lower case,
// content in the form PowerDNS returns it, TTL 0 replaced by defaultTTL.
// The zone-level rules (CNAME beside other data, one TTL per rrset) are
// CheckRecords'.
func ValidateRecord(zone string, r Record, defaultTTL uint32) (Record, error) {
	z, err := ZoneName(zone)
	if err != nil {
		return r, err
	}
	return validateRecord(z, r, defaultTTL)
}

func validateRecord(zone string, r Record, defaultTTL uint32) (Record, error) {
	out := Record{Type: strings.ToUpper(strings.TrimSpace(r.Type)), TTL: r.TTL, Priority: r.Priority}
	if !isSupported(out.Type) {
		switch out.Type {
		case "SOA":
			return out, fmt.Errorf("type SOA is managed by the server (set the zone's SOA fields instead)")
		case "DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DS", "CDS", "CDNSKEY":
			return out, fmt.Errorf("type %s is managed by DNSSEC signing (enable DNSSEC instead)", out.Type)
		}
		return out, fmt.Errorf("type %q is not supported (supported: %s)", bound(r.Type), strings.Join(Types, ", "))
	}
	name, err := checkOwner(zone, r.Name)
	if err != nil {
		return out, err
	}
	out.Name = name
	if out.TTL == 0 {
		out.TTL = defaultTTL
	}
	if out.TTL < MinTTL || out.TTL > MaxTTL {
		return out, fmt.Errorf("%s %s: TTL %d out of range %d..%d", name, out.Type, out.TTL, MinTTL, MaxTTL)
	}
	if !HasPriority(out.Type) && out.Priority != 0 {
		return out, fmt.Errorf("%s %s: only MX and SRV records take a priority", name, out.Type)
	}
	if out.Priority > 65535 {
		return out, fmt.Errorf("%s %s: priority %d exceeds 65535", name, out.Type, out.Priority)
	}
	if len(r.Content) > MaxContentLen {
		return out, fmt.Errorf("%s %s: content is %d bytes, at most %d allowed", name, out.Type, len(r.Content), MaxContentLen)
	}
	if !utf8.ValidString(r.Content) {
		return out, fmt.Errorf("%s %s: content is not valid UTF-8", name, out.Type)
	}
	// One change is one record: the zone-file parsers behind TXT and CAA
	// read the first line and drop the rest, so a line break would be
	// accepted and silently lost rather than refused.
	content := strings.TrimSpace(r.Content)
	if i := strings.IndexFunc(content, isControl); i >= 0 {
		return out, fmt.Errorf("%s %s: content holds control character %q at byte %d (one record per change; escape it as \\DDD in a TXT string)",
			name, out.Type, content[i], i)
	}
	c, err := canonicalContent(out.Type, name, content)
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", name, out.Type, err)
	}
	out.Content = c
	if out.Type == TypeCNAME && c == name {
		return out, fmt.Errorf("%s CNAME points to itself", name)
	}
	if out.Type == TypeNS && strings.HasPrefix(name, "*.") {
		return out, fmt.Errorf("%s NS: a wildcard name cannot be delegated", name)
	}
	// The whole record must parse as PowerDNS and resolvers will see it.
	// An address record is already known to: its owner passed checkOwner
	// and its content is what netip printed (the parse was a third of a
	// zone's validation, which runs on every change of the zone).
	if out.Type == TypeA || out.Type == TypeAAAA {
		return out, nil
	}
	if _, err := dns.NewRR(out.String()); err != nil {
		return out, fmt.Errorf("%s %s: content %q does not parse: %s", name, out.Type, bound(r.Content), parseReason(err))
	}
	return out, nil
}

// isControl reports C0 controls and DEL; a tab is whitespace between fields.
func isControl(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }

func isSupported(t string) bool {
	for _, s := range Types {
		if s == t {
			return true
		}
	}
	return false
}

// canonicalContent checks content of type t (without priority) and returns
// it in the form PowerDNS stores it.
func canonicalContent(t, owner, c string) (string, error) {
	if c == "" {
		return "", fmt.Errorf("content is empty")
	}
	switch t {
	case TypeA:
		a, err := netip.ParseAddr(c)
		if err != nil || !a.Is4() {
			return "", fmt.Errorf("%q is not an IPv4 address", bound(c))
		}
		return a.String(), nil
	case TypeAAAA:
		a, err := netip.ParseAddr(c)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("%q is not an IPv6 address", bound(c))
		}
		return a.String(), nil
	case TypeCNAME, TypePTR:
		n, err := checkHost(c, targetRules)
		if err != nil {
			return "", fmt.Errorf("target %w", err)
		}
		return n, nil
	case TypeNS:
		n, err := checkHost(c, hostRules)
		if err != nil {
			return "", fmt.Errorf("nameserver %w", err)
		}
		return n, nil
	case TypeMX:
		if c == "." { // null MX (RFC 7505): the domain accepts no mail
			return c, nil
		}
		n, err := checkHost(c, hostRules)
		if err != nil {
			return "", fmt.Errorf("mail exchanger %w", err)
		}
		return n, nil
	case TypeSRV:
		f := strings.Fields(c)
		if len(f) != 3 {
			return "", fmt.Errorf("content %q must be \"weight port target\" (priority is separate)", bound(c))
		}
		w, err1 := strconv.ParseUint(f[0], 10, 16)
		p, err2 := strconv.ParseUint(f[1], 10, 16)
		if err1 != nil || err2 != nil {
			return "", fmt.Errorf("weight %q and port %q must be numbers 0..65535", bound(f[0]), bound(f[1]))
		}
		target := "."
		if f[2] != "." {
			if target, err1 = checkHost(f[2], hostRules); err1 != nil {
				return "", fmt.Errorf("target %w", err1)
			}
		}
		return fmt.Sprintf("%d %d %s", w, p, target), nil
	case TypeTXT:
		return canonicalTXT(c)
	case TypeCAA:
		return canonicalCAA(owner, c)
	}
	return "", fmt.Errorf("type %s is not supported", t)
}

// canonicalTXT accepts TXT content either as quoted strings in zone-file
// form or, when it does not start with a quote, as one unquoted text that is
// split into 255-byte strings (how SPF and DKIM values are usually pasted).
func canonicalTXT(c string) (string, error) {
	var parts []string
	if strings.HasPrefix(c, "\"") {
		rr, err := dns.NewRR("x. 3600 IN TXT " + c)
		if err != nil {
			return "", fmt.Errorf("content %s does not parse as quoted strings: %s", bound(c), parseReason(err))
		}
		txt, ok := rr.(*dns.TXT)
		if !ok {
			return "", fmt.Errorf("content %q does not parse as TXT", bound(c))
		}
		// miekg/dns keeps the strings in escaped presentation form.
		for _, p := range txt.Txt {
			parts = append(parts, unescapeTXT(p))
		}
	} else {
		for len(c) > 255 {
			parts = append(parts, c[:255])
			c = c[255:]
		}
		parts = append(parts, c)
	}
	for _, p := range parts {
		if len(p) > 255 {
			return "", fmt.Errorf("a TXT string is %d bytes, at most 255 allowed", len(p))
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] == 0x7f {
				return "", fmt.Errorf("TXT content contains control character 0x%02x", p[i])
			}
		}
	}
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(' ')
		}
		quoteTXT(&b, p)
	}
	return b.String(), nil
}

// quoteTXT writes one character-string as PowerDNS prints it: quoted, with
// '"' and '\' escaped and bytes outside printable ASCII as \DDD.
func quoteTXT(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// unescapeTXT turns a character-string in presentation form (\X, \DDD)
// into its bytes.
func unescapeTXT(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n, err := strconv.Atoi(s[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

var caaTags = map[string]bool{"issue": true, "issuewild": true, "iodef": true, "issuemail": true}

func canonicalCAA(owner, c string) (string, error) {
	rr, err := dns.NewRR(owner + " 3600 IN CAA " + c)
	if err != nil {
		return "", fmt.Errorf("content %q must be 'flags tag \"value\"': %s", bound(c), parseReason(err))
	}
	caa, ok := rr.(*dns.CAA)
	if !ok {
		return "", fmt.Errorf("content %q does not parse as CAA", bound(c))
	}
	if caa.Flag != 0 && caa.Flag != 128 {
		return "", fmt.Errorf("CAA flags %d: only 0 and 128 (critical) are defined", caa.Flag)
	}
	tag := strings.ToLower(caa.Tag)
	caa.Value = unescapeTXT(caa.Value)
	if !caaTags[tag] {
		return "", fmt.Errorf("CAA tag %q is not one of issue, issuewild, iodef, issuemail", bound(caa.Tag))
	}
	for i := 0; i < len(caa.Value); i++ {
		if caa.Value[i] < 0x20 || caa.Value[i] >= 0x7f {
			return "", fmt.Errorf("CAA value must be printable ASCII")
		}
	}
	if tag == "iodef" && !strings.HasPrefix(caa.Value, "mailto:") && !strings.HasPrefix(caa.Value, "https://") && !strings.HasPrefix(caa.Value, "http://") {
		return "", fmt.Errorf("CAA iodef value %q must be a mailto: or http(s): URL", bound(caa.Value))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s ", caa.Flag, tag)
	quoteTXT(&b, caa.Value)
	return b.String(), nil
}

// parseReason trims miekg/dns's parse error to its message: the rest names a
// file and line that mean nothing for a single record.
func parseReason(err error) string {
	s := strings.TrimPrefix(err.Error(), "dns: ")
	if i := strings.Index(s, " at line: "); i >= 0 {
		s = s[:i]
	}
	return s
}
