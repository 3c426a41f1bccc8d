package dnszone

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// SOA holds the SOA fields nPanel decides; the serial is the agent's.
type SOA struct {
	MName   string `json:"mname"`
	RName   string `json:"rname"`
	Refresh uint32 `json:"refresh"`
	Retry   uint32 `json:"retry"`
	Expire  uint32 `json:"expire"`
	Minimum uint32 `json:"minimum"`
	TTL     uint32 `json:"ttl"`
}

// DefaultSOA holds the timers used for fields left 0 (RIPE-203 values,
// with a one-hour negative TTL).
var DefaultSOA = SOA{Refresh: 10800, Retry: 3600, Expire: 604800, Minimum: 3600, TTL: DefaultTTL}

// Content is the SOA's PowerDNS content with serial.
func (s SOA) Content(serial uint32) string {
	return fmt.Sprintf("%s %s %d %d %d %d %d", s.MName, s.RName, serial, s.Refresh, s.Retry, s.Expire, s.Minimum)
}

// Zone is the desired content of a primary zone.
type Zone struct {
	Name        string   `json:"name"`
	SOA         SOA      `json:"soa"`
	Nameservers []string `json:"nameservers"`
	Records     []Record `json:"records"`
}

// RecordError says why one record of a set is refused.
type RecordError struct {
	Index  int // position in the input
	Record Record
	Reason string
}

func (e *RecordError) Error() string {
	if e.Record.Name == "" {
		return fmt.Sprintf("record %d: %s", e.Index+1, e.Reason)
	}
	return fmt.Sprintf("record %d (%s %s): %s", e.Index+1, e.Record.Name, e.Record.Type, e.Reason)
}

// ValidateSOA fills the defaults into soa of zone (canonical) served by
// nameservers (canonical, at least one) and checks the result.
func ValidateSOA(zone string, soa SOA, nameservers []string) (SOA, error) {
	out := soa
	var err error
	switch {
	case out.MName != "":
		if out.MName, err = HostName(out.MName); err != nil {
			return out, fmt.Errorf("SOA mname %w", err)
		}
	case len(nameservers) > 0:
		out.MName = nameservers[0]
	default:
		return out, errors.New("SOA mname is empty and the zone has no nameservers")
	}
	if out.RName == "" {
		out.RName = "hostmaster." + zone
	} else {
		rn := out.RName
		// Accept a mailbox as users write it: hostmaster@example.com.
		if l, d, ok := strings.Cut(rn, "@"); ok {
			if strings.Contains(l, ".") {
				return out, fmt.Errorf("SOA rname %q: a local part with a dot cannot be written as a name", bound(rn))
			}
			rn = l + "." + d
		}
		if out.RName, err = checkName(rn, nameRules{minLabels: 2}); err != nil {
			return out, fmt.Errorf("SOA rname %w", err)
		}
	}
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&out.Refresh, DefaultSOA.Refresh)
	def(&out.Retry, DefaultSOA.Retry)
	def(&out.Expire, DefaultSOA.Expire)
	def(&out.Minimum, DefaultSOA.Minimum)
	def(&out.TTL, DefaultSOA.TTL)
	checks := []struct {
		name     string
		v        uint32
		min, max uint32
	}{
		{"refresh", out.Refresh, 60, 30 * 86400},
		{"retry", out.Retry, 60, 30 * 86400},
		{"expire", out.Expire, 3600, 365 * 86400},
		{"minimum", out.Minimum, MinTTL, 86400},
		{"ttl", out.TTL, MinTTL, MaxTTL},
	}
	for _, c := range checks {
		if c.v < c.min || c.v > c.max {
			return out, fmt.Errorf("SOA %s %d out of range %d..%d", c.name, c.v, c.min, c.max)
		}
	}
	if out.Expire <= out.Refresh {
		return out, fmt.Errorf("SOA expire %d must exceed refresh %d", out.Expire, out.Refresh)
	}
	return out, nil
}

// ValidateZone checks a whole primary zone and returns it canonical: the
// name, SOA (defaults filled in), nameservers (the apex NS set; at least
// one) and every record, sorted by name, type and content.
func ValidateZone(z Zone) (Zone, error) {
	var out Zone
	var err error
	if out.Name, err = ZoneName(z.Name); err != nil {
		return out, err
	}
	if len(z.Nameservers) == 0 {
		return out, errors.New("a zone needs at least one nameserver")
	}
	seen := map[string]bool{}
	for _, ns := range z.Nameservers {
		n, err := HostName(ns)
		if err != nil {
			return out, fmt.Errorf("nameserver %w", err)
		}
		if seen[n] {
			return out, fmt.Errorf("nameserver %q is listed twice", n)
		}
		seen[n] = true
		out.Nameservers = append(out.Nameservers, n)
	}
	if out.SOA, err = ValidateSOA(out.Name, z.SOA, out.Nameservers); err != nil {
		return out, err
	}
	recs, errs := CheckRecords(out.Name, z.Records, out.SOA.TTL)
	if len(errs) > 0 {
		return out, joinRecordErrors(errs)
	}
	out.Records = recs
	return out, nil
}

// joinRecordErrors reports the first few refusals: one is what a user fixes
// first, and a 10,000-line error helps nobody.
func joinRecordErrors(errs []*RecordError) error {
	const show = 5
	var es []error
	for i, e := range errs {
		if i == show {
			es = append(es, fmt.Errorf("and %d more refused records", len(errs)-show))
			break
		}
		es = append(es, e)
	}
	return errors.Join(es...)
}

// CheckRecords validates recs of zone (canonical) one by one and then as a
// set, and returns the accepted records canonical and sorted, and one error
// per refused record. Set rules: apex NS records belong to the zone's
// nameservers, a CNAME is the only record at its name (and never at the
// apex, which holds SOA and NS), no record is listed twice, and the records
// of one rrset share a TTL (PowerDNS stores one TTL per rrset).
func CheckRecords(zone string, recs []Record, defaultTTL uint32) ([]Record, []*RecordError) {
	var errs []*RecordError
	zone, err := ZoneName(zone)
	if err != nil {
		return nil, []*RecordError{{Index: 0, Reason: err.Error()}}
	}
	if len(recs) > MaxRecords {
		return nil, []*RecordError{{Index: MaxRecords, Reason: fmt.Sprintf("a zone holds at most %d records, got %d", MaxRecords, len(recs))}}
	}
	type item struct {
		i int
		r Record
	}
	ok := make([]item, 0, len(recs))
	for i, r := range recs {
		c, err := validateRecord(zone, r, defaultTTL)
		if err != nil {
			errs = append(errs, &RecordError{Index: i, Record: r, Reason: err.Error()})
			continue
		}
		if c.Type == TypeNS && c.Name == zone {
			errs = append(errs, &RecordError{Index: i, Record: c, Reason: "NS records at the apex are the zone's nameservers; set those instead"})
			continue
		}
		ok = append(ok, item{i, c})
	}
	// The maps are sized up front: this runs on every change of a zone, in
	// the API and again in the agent, and growing them was most of its cost.
	// Types present at each name; the apex always has SOA and NS.
	types := make(map[string]typeSet, len(ok)+1)
	types[zone] = typeSet{}.with(typeSOA).with(TypeNS)
	type rrset struct{ name, typ string }
	rrTTL := make(map[rrset]uint32, len(ok))
	dup := make(map[Record]struct{}, len(ok))
	kept := ok[:0]
	for _, it := range ok {
		r := it.r
		key := Record{Name: r.Name, Type: r.Type, Content: r.Content, Priority: r.Priority}
		if _, seen := dup[key]; seen {
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: "the same record is listed twice"})
			continue
		}
		dup[key] = struct{}{}
		set := rrset{r.Name, r.Type}
		if ttl, seen := rrTTL[set]; seen && ttl != r.TTL {
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: fmt.Sprintf("TTL %d differs from TTL %d of the other %s records at this name; an rrset has one TTL", r.TTL, ttl, r.Type)})
			continue
		}
		rrTTL[set] = r.TTL
		t := types[r.Name].with(r.Type)
		if r.Type == TypeCNAME {
			t.cnames++
		}
		types[r.Name] = t
		kept = append(kept, it)
	}
	out := make([]Record, 0, len(kept))
	for _, it := range kept {
		r := it.r
		t := types[r.Name]
		switch {
		case r.Type == TypeCNAME && r.Name == zone:
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: "a CNAME cannot be at the zone apex, which holds SOA and NS records"})
			continue
		case r.Type == TypeCNAME && t.cnames > 1:
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: "a name can hold only one CNAME record"})
			continue
		case r.Type == TypeCNAME && t.others() != "":
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: fmt.Sprintf("a CNAME cannot coexist with other records at %s (%s)", r.Name, t.others())})
			continue
		case r.Type != TypeCNAME && t.cnames > 0:
			errs = append(errs, &RecordError{Index: it.i, Record: r, Reason: fmt.Sprintf("%s holds a CNAME, which cannot coexist with other records", r.Name)})
			continue
		}
		out = append(out, r)
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Index < errs[j].Index })
	SortRecords(out)
	return out, errs
}

const typeSOA = "SOA"

// typeSet is the set of record types at one name (Types and SOA) and how
// many CNAME records it holds.
type typeSet struct {
	mask   uint16
	cnames int
}

// typeBit is t's bit in a typeSet: its index in Types, SOA after them.
func typeBit(t string) uint16 {
	if i := slices.Index(Types, t); i >= 0 {
		return 1 << i
	}
	return 1 << len(Types) // SOA: the only other type a zone holds
}

func (s typeSet) with(t string) typeSet {
	s.mask |= typeBit(t)
	return s
}

// others lists the types other than CNAME, sorted.
func (s typeSet) others() string {
	var names []string
	for _, t := range append(slices.Clone(Types), typeSOA) {
		if t != TypeCNAME && s.mask&typeBit(t) != 0 {
			names = append(names, t)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// SortRecords orders records by name, type, priority and content.
func SortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		return cmp.Or(
			strings.Compare(a.Name, b.Name),
			strings.Compare(a.Type, b.Type),
			cmp.Compare(a.Priority, b.Priority),
			strings.Compare(a.Content, b.Content))
	})
}

// ValidateRecords is CheckRecords for callers that want one error: the
// first refusals, or nil when every record is accepted.
func ValidateRecords(zone string, recs []Record, defaultTTL uint32) ([]Record, error) {
	z, err := ZoneName(zone)
	if err != nil {
		return nil, err
	}
	out, errs := CheckRecords(z, recs, defaultTTL)
	if len(errs) > 0 {
		return nil, joinRecordErrors(errs)
	}
	return out, nil
}
