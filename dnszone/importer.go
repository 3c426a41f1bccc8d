package dnszone

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// MaxZoneFileBytes bounds an imported zone file.
const MaxZoneFileBytes = 4 << 20

// ImportLine is the outcome of one entry of a zone file (a record, possibly
// spanning lines in parentheses, or a directive that was refused).
type ImportLine struct {
	Line     int     `json:"line"` // 1-based line the entry starts on
	Text     string  `json:"text"` // the entry without comments, shortened
	Imported bool    `json:"imported"`
	Record   *Record `json:"record,omitempty"` // the record as imported
	// Reason says why the entry was refused, or, for an imported SOA or
	// apex NS record, where it went.
	Reason string `json:"reason,omitempty"`
}

// Import is the result of ParseZone. Records are canonical, sorted and
// pass CheckRecords together; SOA and Nameservers come from the file's SOA
// and apex NS records (nil when it has none).
type Import struct {
	Zone        string       `json:"zone"`
	SOA         *SOA         `json:"soa,omitempty"`
	Nameservers []string     `json:"nameservers,omitempty"`
	Records     []Record     `json:"records"`
	Lines       []ImportLine `json:"lines"`
}

// Refused counts the refused entries.
func (im *Import) Refused() int {
	n := 0
	for _, l := range im.Lines {
		if !l.Imported {
			n++
		}
	}
	return n
}

// ErrTooManyRecords is ParseZone's error for a file of more records than a
// zone may hold.
var ErrTooManyRecords = errors.New("too many records")

// ParseZone imports a BIND zone file for zone: $ORIGIN and $TTL, relative
// names, omitted owners and multi-line (parenthesised) records are
// understood; $INCLUDE and $GENERATE are refused. Every entry is parsed on
// its own, so one bad line is reported with its reason and the rest still
// imports. The error is only for a bad zone name or an oversized file (too
// many bytes, or more than MaxRecords records: ErrTooManyRecords).
//
// Deviation from BIND: a record without a TTL gets the $TTL in effect (or
// DefaultTTL), never the previous record's TTL.
func ParseZone(zone, text string) (*Import, error) {
	z, err := ZoneName(zone)
	if err != nil {
		return nil, err
	}
	if len(text) > MaxZoneFileBytes {
		return nil, fmt.Errorf("zone file is %d bytes, at most %d allowed", len(text), MaxZoneFileBytes)
	}
	im := &Import{Zone: z}
	origin, ttl, lastOwner := z, uint32(DefaultTTL), ""
	type cand struct {
		line int // index into im.Lines
		r    Record
	}
	var cands []cand
	nsSeen := map[string]bool{}
	for _, e := range splitEntries(text) {
		out := ImportLine{Line: e.line, Text: bound(e.text)}
		refuse := func(format string, args ...any) {
			out.Reason = fmt.Sprintf(format, args...)
			im.Lines = append(im.Lines, out)
		}
		if e.err != "" {
			refuse("%s", e.err)
			continue
		}
		if strings.HasPrefix(e.text, "$") {
			f := strings.Fields(e.text)
			switch strings.ToUpper(f[0]) {
			case "$ORIGIN":
				if len(f) != 2 {
					refuse("$ORIGIN takes one name")
					continue
				}
				o := f[1]
				if !strings.HasSuffix(o, ".") {
					o += "." + origin
				}
				n, err := checkName(o, ownerRules)
				if err != nil {
					refuse("$ORIGIN %s", err)
					continue
				}
				origin = n
			case "$TTL":
				if len(f) != 2 {
					refuse("$TTL takes one value")
					continue
				}
				v, ok := parseTTL(f[1])
				if !ok || v < MinTTL || v > MaxTTL {
					refuse("$TTL %q is not a TTL in range %d..%d", bound(f[1]), MinTTL, MaxTTL)
					continue
				}
				ttl = v
			default:
				refuse("directive %s is not supported", bound(f[0]))
			}
			continue
		}
		src := e.text
		if e.indented {
			if lastOwner == "" {
				refuse("the record has no owner name and no record before it gave one")
				continue
			}
			src = lastOwner + " " + src
		} else {
			first := strings.Fields(src)[0]
			switch {
			case first == "@":
				lastOwner = origin
			case strings.HasSuffix(first, "."):
				lastOwner = first
			default:
				lastOwner = first + "." + origin
			}
		}
		zp := dns.NewZoneParser(strings.NewReader(src), origin, "")
		zp.SetDefaultTTL(ttl)
		rr, ok := zp.Next()
		if !ok {
			if err := zp.Err(); err != nil {
				refuse("%s", parseReason(err))
			} else {
				refuse("no record")
			}
			continue
		}
		h := rr.Header()
		if h.Class != dns.ClassINET {
			refuse("class %s is not supported, only IN", dns.ClassToString[h.Class])
			continue
		}
		if soa, ok := rr.(*dns.SOA); ok {
			switch {
			case strings.ToLower(h.Name) != z:
				refuse("SOA of %s is not at the apex of %s", h.Name, z)
			case im.SOA != nil:
				refuse("a second SOA record")
			default:
				s := SOA{MName: soa.Ns, RName: soa.Mbox, Refresh: soa.Refresh, Retry: soa.Retry, Expire: soa.Expire, Minimum: soa.Minttl, TTL: h.Ttl}
				v, err := ValidateSOA(z, s, nil)
				if err != nil {
					refuse("%s", err)
					continue
				}
				im.SOA = &v
				out.Imported = true
				out.Reason = "SOA: parsed into Import.SOA"
				im.Lines = append(im.Lines, out)
			}
			continue
		}
		rec, err := fromRR(rr, origin, absoluteTarget(src))
		if err != nil {
			refuse("%s", err)
			continue
		}
		c, err := validateRecord(z, rec, ttl)
		if err != nil {
			refuse("%s", err)
			continue
		}
		if c.Type == TypeNS && c.Name == z {
			if !nsSeen[c.Content] {
				nsSeen[c.Content] = true
				im.Nameservers = append(im.Nameservers, c.Content)
			}
			out.Imported, out.Record = true, &c
			out.Reason = "apex NS: parsed into Import.Nameservers"
			im.Lines = append(im.Lines, out)
			continue
		}
		cands = append(cands, cand{line: len(im.Lines), r: c})
		out.Imported, out.Record = true, &c
		im.Lines = append(im.Lines, out)
	}
	if len(cands) > MaxRecords {
		// CheckRecords would refuse the set as a whole; reporting every
		// line as imported and importing none of them would be a lie.
		return nil, fmt.Errorf("%w: the file holds %d records, a zone at most %d", ErrTooManyRecords, len(cands), MaxRecords)
	}
	recs := make([]Record, len(cands))
	for i, c := range cands {
		recs[i] = c.r
	}
	accepted, errs := CheckRecords(z, recs, ttl)
	for _, e := range errs {
		l := &im.Lines[cands[e.Index].line]
		l.Imported, l.Reason = false, e.Reason
	}
	im.Records = accepted
	if im.Records == nil {
		im.Records = []Record{}
	}
	return im, nil
}

// absoluteTarget says whether an entry's last field, the target of the
// types that have one, is written absolute (with its final dot).
func absoluteTarget(src string) bool {
	f := strings.Fields(strings.TrimRight(src, ") \t"))
	return len(f) > 0 && strings.HasSuffix(f[len(f)-1], ".")
}

// fromRR turns a parsed record of a supported type into a Record. abs says
// the target was written absolute.
func fromRR(rr dns.RR, origin string, abs bool) (Record, error) {
	h := rr.Header()
	r := Record{Name: h.Name, TTL: h.Ttl, Type: dns.TypeToString[h.Rrtype]}
	switch v := rr.(type) {
	case *dns.A:
		r.Content = v.A.String()
	case *dns.AAAA:
		r.Content = v.AAAA.String()
	case *dns.CNAME:
		r.Content = v.Target
	case *dns.NS:
		r.Content = v.Ns
	case *dns.PTR:
		r.Content = v.Ptr
	case *dns.MX:
		r.Priority, r.Content = uint32(v.Preference), v.Mx
	case *dns.SRV:
		r.Priority, r.Content = uint32(v.Priority), fmt.Sprintf("%d %d %s", v.Weight, v.Port, v.Target)
	case *dns.TXT:
		var b strings.Builder
		for i, s := range v.Txt {
			if i > 0 {
				b.WriteByte(' ')
			}
			quoteTXT(&b, unescapeTXT(s))
		}
		r.Content = b.String()
	case *dns.CAA:
		var b strings.Builder
		fmt.Fprintf(&b, "%d %s ", v.Flag, v.Tag)
		quoteTXT(&b, unescapeTXT(v.Value))
		r.Content = b.String()
	default:
		// Reuse validateRecord's wording for SOA-like and DNSSEC types.
		_, err := validateRecord(".", Record{Type: r.Type}, 0)
		return r, err
	}
	// "MX 10 192.0.2.1" in a zone file is a relative name below the
	// origin; the writer meant an address, which these types cannot hold.
	// Written absolute ("192.0.2.1.example.com.") it is a name like any
	// other, which WriteZone writes and ValidateRecord accepts.
	if abs {
		return r, nil
	}
	target := r.Content
	if r.Type == TypeSRV {
		target = target[strings.LastIndexByte(target, ' ')+1:]
	}
	if r.Type != TypeTXT && r.Type != TypeCAA && r.Type != TypeA && r.Type != TypeAAAA {
		if rel, ok := strings.CutSuffix(strings.ToLower(target), "."+origin); ok && isIP(rel) {
			return r, fmt.Errorf("%s target %q is an IP address, a host name is required", r.Type, rel)
		}
	}
	return r, nil
}

// parseTTL reads a TTL in seconds or BIND units ("1h30m", "2d", "1W").
func parseTTL(s string) (uint32, bool) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), true
	}
	var total, cur uint64
	digits := false
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= '0' && c <= '9':
			cur = cur*10 + uint64(c-'0')
			digits = true
			if cur > 1<<32 {
				return 0, false
			}
		case digits && strings.ContainsRune("smhdw", c):
			mult := map[rune]uint64{'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}[c]
			total += cur * mult
			cur, digits = 0, false
			if total > 1<<32-1 {
				return 0, false
			}
		default:
			return 0, false
		}
	}
	if digits || total == 0 {
		return 0, false
	}
	return uint32(total), true
}

// entry is one logical entry of a zone file.
type entry struct {
	line     int
	text     string // comments removed, lines of a parenthesised entry joined
	indented bool   // starts with blank space: the previous owner applies
	err      string
}

// splitEntries cuts a zone file into entries: a line, or the lines a pair
// of parentheses spans. Comments (';' outside quotes) are dropped.
func splitEntries(text string) []entry {
	var (
		out     []entry
		b       strings.Builder
		line    = 1
		start   = 1
		depth   = 0
		inQuote = false
		comment = false
		escape  = false
	)
	flush := func() {
		t := b.String()
		b.Reset()
		trimmed := strings.TrimSpace(t)
		if trimmed == "" {
			return
		}
		e := entry{line: start, text: trimmed, indented: t[0] == ' ' || t[0] == '\t'}
		if depth > 0 {
			e.err = "unbalanced parentheses: '(' is never closed"
		}
		out = append(out, e)
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c == '\n' {
			comment = false
			escape = false
			line++
			if depth == 0 || inQuote {
				if inQuote {
					// A quote never spans lines; let the parser say so.
					inQuote = false
				}
				flush()
				depth = 0
				start = line
			} else {
				b.WriteByte(' ')
			}
			continue
		}
		if comment || c == '\r' {
			continue
		}
		if escape {
			escape = false
			b.WriteByte(c)
			continue
		}
		switch {
		case c == '\\':
			escape = true
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == ';':
			comment = true
			continue
		case c == '(':
			depth++
		case c == ')':
			if depth > 0 {
				depth--
			}
		}
		if b.Len() == 0 && (c == ' ' || c == '\t') {
			// Keep one blank to remember the entry is indented.
			b.WriteByte(' ')
			continue
		}
		b.WriteByte(c)
	}
	flush()
	return out
}
