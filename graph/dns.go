package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

func zoneModel(z *store.Zone) *model.Zone {
	m := &model.Zone{
		Name: z.Name, Node: strPtr(z.Node), Status: model.ZoneStatus(z.Status), Reason: strPtr(z.Reason),
		Reverse: z.Reverse, Dnssec: z.DNSSEC, Ds: dnszone.PublishableDS(z.DS), CreatedAt: z.CreatedAt, UpdatedAt: z.UpdatedAt,
		AccountID: z.Account, Records: make([]*model.DNSRecord, 0, len(z.Records)),
	}
	if m.Ds == nil {
		m.Ds = []string{}
	}
	if z.Serial != 0 {
		s := int64(z.Serial)
		m.Serial = &s
	}
	if z.RotateStep > 0 {
		m.Rollover = strPtr([]string{"", "PUBLISH", "ACTIVATE", "RETIRE"}[min(z.RotateStep, 3)])
	}
	for _, r := range z.Records {
		m.Records = append(m.Records, recordModel(r))
	}
	return m
}

func recordModel(r store.ZoneRecord) *model.DNSRecord {
	m := &model.DNSRecord{ID: r.ID, Name: r.Name, Type: model.RecordType(r.Type), Content: r.Content, TTL: int(r.TTL)}
	if dnszone.HasPriority(r.Type) {
		p := int(r.Priority)
		m.Priority = &p
	}
	return m
}

// zoneKeyName turns a zone argument into the stored name (canonical,
// without the trailing dot), as INVALID_INPUT when it is no zone name.
func zoneKeyName(name string) (string, error) {
	z, err := dnszone.ZoneName(name)
	if err != nil {
		return "", &validate.Error{Field: "zone", Reason: err.Error()}
	}
	return strings.TrimSuffix(z, "."), nil
}

// visibleZone returns a zone the caller may see: admins every zone,
// resellers and users the zones of accounts they see. Others are NOT_FOUND,
// which says no more than a zone that does not exist.
func (r *Resolver) visibleZone(ctx context.Context, p auth.Principal, name string) (*store.Zone, error) {
	z, _, err := r.Store.GetZone(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return nil, zoneNotFound(name)
		}
		return nil, err
	}
	if err := r.zoneVisible(ctx, p, z); err != nil {
		return nil, err
	}
	return z, nil
}

// errZoneDeleting aborts a deleteZone of a zone already being removed:
// nothing is written, and the caller is told it succeeded.
var errZoneDeleting = errors.New("zone is being deleted already")

func zoneNotFound(name string) error { return errorf(CodeNotFound, "zone "+quote(name)+" not found") }

// zoneVisible refuses a zone p may not see, as if it did not exist.
func (r *Resolver) zoneVisible(ctx context.Context, p auth.Principal, z *store.Zone) error {
	if p.Role == store.RoleAdmin {
		return nil
	}
	if z.Account != "" {
		a, _, err := r.Store.GetAccount(ctx, z.Account)
		if err != nil && !isNotFound(err) {
			return err
		}
		if err == nil && canSee(p, a) {
			return nil
		}
	}
	// The zone exists: a tenant asking for it is refused a cross-tenant read.
	r.refusedRead(ctx, "zone", z.Name, CodeNotFound)
	return zoneNotFound(z.Name)
}

// changeZone applies fn to a zone the caller may change, checks the
// records check selects against the set rules as its DNS server will, and
// commits it with a new generation; the zone controller serves it. A
// refused change writes nothing.
func (r *Resolver) changeZone(ctx context.Context, action, name string, check recordCheck, fn func(z *store.Zone) error) (*store.Zone, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return nil, err
	}
	key, err := zoneKeyName(name)
	if err != nil {
		return nil, err
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), action, key, "ok")
	found := false
	z, err := r.Zones.ChangeZone(ctx, key, ev, func(z *store.Zone) error {
		found = true
		if err := r.zoneVisible(ctx, p, z); err != nil {
			return err
		}
		if z.Deleted {
			return fmt.Errorf("zone %s is being deleted: %w", z.Name, store.ErrConflict)
		}
		before := len(z.Records)
		if err := fn(z); err != nil {
			return err
		}
		if n := len(z.Records); n > before {
			if err := checkRecordCount(z.Name, n); err != nil {
				return err
			}
		}
		if err := checkZoneRecords(z, check); err != nil {
			return err
		}
		z.Generation++
		z.Attempts = 0
		if z.Status == store.ZoneFailed {
			z.Status, z.Reason = store.ZonePending, ""
		}
		z.UpdatedAt = time.Now().UTC()
		return nil
	})
	if !found && isNotFound(err) {
		return nil, zoneNotFound(key)
	}
	return z, err
}

// checkRecordCount refuses a zone of n records above the limit every
// node accepts; a change that shrinks a zone is never refused by it.
func checkRecordCount(zone string, n int) error {
	if n > dnszone.MaxZoneRecords {
		return fmt.Errorf("%w: a zone holds at most %d records; %s would hold %d", store.ErrQuotaExceeded, dnszone.MaxZoneRecords, zone, n)
	}
	return nil
}

func dnsRecords(z *store.Zone) []dnszone.Record {
	out := make([]dnszone.Record, 0, len(z.Records))
	for _, r := range z.Records {
		out = append(out, dnsRecord(r))
	}
	return out
}

func dnsRecord(r store.ZoneRecord) dnszone.Record {
	return dnszone.Record{Name: r.Name, Type: r.Type, Content: r.Content, TTL: r.TTL, Priority: r.Priority}
}

// recordCheck says which records of a zone a change must check against
// the set rules again; the zero value checks none.
type recordCheck struct {
	all   bool
	names []string // owner names, canonical
}

// checkAll checks every record of the zone.
var checkAll = recordCheck{all: true}

// checkAt checks the records at names. Every set rule (a CNAME alone at
// its name, one TTL per rrset, no duplicates, no apex NS) is about the
// records at one name, and the zone's other records passed them when
// written: checking the names a change wrote is checking the zone, for a
// few records instead of all of them on every change. A removal cannot
// break any of the rules.
func checkAt(names ...string) recordCheck { return recordCheck{names: names} }

// checkZoneRecords applies the set rules to the records of z that check
// selects, and reports refusals by their position in z.Records.
func checkZoneRecords(z *store.Zone, check recordCheck) error {
	var recs []dnszone.Record
	var pos []int
	for i, r := range z.Records {
		if check.all || slices.Contains(check.names, r.Name) {
			recs = append(recs, dnsRecord(r))
			pos = append(pos, i)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if _, errs := dnszone.CheckRecords(z.Name+".", recs, dnszone.DefaultTTL); len(errs) > 0 {
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			if e.Index < len(pos) {
				e.Index = pos[e.Index]
			}
			msgs = append(msgs, e.Error())
		}
		return &validate.Error{Field: "record", Reason: strings.Join(msgs, "; ")}
	}
	return nil
}

// recordFromInput validates one record of zone (stored name) and returns
// it canonical.
func recordFromInput(zone string, in model.RecordInput) (store.ZoneRecord, error) {
	owner, err := dnszone.OwnerName(zone, in.Name)
	if err != nil {
		return store.ZoneRecord{}, &validate.Error{Field: "name", Reason: err.Error()}
	}
	rec := dnszone.Record{Name: owner, Type: string(in.Type), Content: in.Content}
	if in.TTL != nil {
		if *in.TTL < 0 || *in.TTL > dnszone.MaxTTL {
			return store.ZoneRecord{}, &validate.Error{Field: "ttl", Reason: fmt.Sprintf("must be between %d and %d", dnszone.MinTTL, dnszone.MaxTTL)}
		}
		rec.TTL = uint32(*in.TTL)
	}
	if in.Priority != nil {
		if *in.Priority < 0 || *in.Priority > 65535 {
			return store.ZoneRecord{}, &validate.Error{Field: "priority", Reason: "must be between 0 and 65535"}
		}
		rec.Priority = uint32(*in.Priority)
	} else if dnszone.HasPriority(rec.Type) {
		return store.ZoneRecord{}, &validate.Error{Field: "priority", Reason: rec.Type + " records need a priority"}
	}
	out, err := dnszone.ValidateRecord(zone, rec, dnszone.DefaultTTL)
	if err != nil {
		return store.ZoneRecord{}, &validate.Error{Field: "record", Reason: err.Error()}
	}
	return store.ZoneRecord{Name: out.Name, Type: out.Type, Content: out.Content, TTL: out.TTL, Priority: out.Priority}, nil
}

func recordIndex(z *store.Zone, id string) int {
	return slices.IndexFunc(z.Records, func(r store.ZoneRecord) bool { return r.ID == id })
}

// importRecords merges what a zone file holds into z: each imported rrset
// replaces the zone's records of that name and type. Entries the parser
// refused, and imported records that would break the zone as a whole, are
// reported and left out. A file that would take the zone past the record
// limit is refused whole (QUOTA_EXCEEDED): which records to leave out is
// the user's choice, not ours.
// Why an import skips the lines the server owns.
const (
	skipSOA    = "not imported: the server writes the zone's SOA (serial, timers and primary nameserver are the cluster's)"
	skipApexNS = "not imported: every zone's NS records are the cluster's nameservers (setNameservers)"
)

func importRecords(z *store.Zone, imp *dnszone.Import) (imported, refused, skipped []*model.ImportLine, err error) {
	lineOf := map[dnszone.Record]*dnszone.ImportLine{}
	for i := range imp.Lines {
		l := &imp.Lines[i]
		switch {
		case !l.Imported:
			refused = append(refused, &model.ImportLine{Line: l.Line, Text: l.Text, Reason: strPtr(l.Reason)})
		case l.Record == nil:
			skipped = append(skipped, &model.ImportLine{Line: l.Line, Text: l.Text, Reason: strPtr(skipSOA)})
		case l.Record.Type == dnszone.TypeNS && l.Record.Name == imp.Zone:
			skipped = append(skipped, &model.ImportLine{Line: l.Line, Text: l.Text, Reason: strPtr(skipApexNS)})
		default:
			lineOf[*l.Record] = l
		}
	}
	type rrset struct{ name, typ string }
	replaced := map[rrset]bool{}
	for _, rec := range imp.Records {
		replaced[rrset{rec.Name, rec.Type}] = true
	}
	kept := slices.DeleteFunc(slices.Clone(z.Records), func(r store.ZoneRecord) bool { return replaced[rrset{r.Name, r.Type}] })
	candidates := slices.Clone(imp.Records)
	if n := len(kept) + len(candidates); n > len(z.Records) {
		if err := checkRecordCount(z.Name, n); err != nil {
			return nil, nil, nil, err
		}
	}
	for {
		trial := slices.Clone(kept)
		for _, rec := range candidates {
			trial = append(trial, store.ZoneRecord{Name: rec.Name, Type: rec.Type, Content: rec.Content, TTL: rec.TTL, Priority: rec.Priority})
		}
		probe := &store.Zone{Name: z.Name, Records: trial}
		_, errs := dnszone.CheckRecords(z.Name+".", dnsRecords(probe), dnszone.DefaultTTL)
		var bad []int
		for _, e := range errs {
			if e.Index >= len(kept) {
				bad = append(bad, e.Index-len(kept))
			}
		}
		if len(bad) == 0 || len(errs) != len(bad) {
			if len(errs) != len(bad) {
				// The zone's own records conflict with each other; keep
				// the import out entirely rather than guess.
				for _, rec := range candidates {
					refused = append(refused, importLine(lineOf, rec, "conflicts with the zone's existing records"))
				}
				return imported, refused, skipped, nil
			}
			break
		}
		reasons := map[int]string{}
		for _, e := range errs {
			reasons[e.Index-len(kept)] = e.Reason
		}
		var next []dnszone.Record
		for i, rec := range candidates {
			if reason, ok := reasons[i]; ok {
				refused = append(refused, importLine(lineOf, rec, reason))
				continue
			}
			next = append(next, rec)
		}
		candidates = next
	}
	z.Records = kept
	for _, rec := range candidates {
		sr := store.ZoneRecord{ID: z.NewRecordID(), Name: rec.Name, Type: rec.Type, Content: rec.Content, TTL: rec.TTL, Priority: rec.Priority}
		z.Records = append(z.Records, sr)
		l := importLine(lineOf, rec, "")
		l.Record = recordModel(sr)
		imported = append(imported, l)
	}
	slices.SortFunc(refused, func(a, b *model.ImportLine) int { return a.Line - b.Line })
	return imported, refused, skipped, nil
}

func importLine(lineOf map[dnszone.Record]*dnszone.ImportLine, rec dnszone.Record, reason string) *model.ImportLine {
	l := &model.ImportLine{Text: rec.String(), Reason: strPtr(reason)}
	if src, ok := lineOf[rec]; ok {
		l.Line, l.Text = src.Line, src.Text
	}
	return l
}

// waitZoneApplied waits until the zone's node applied generation gen (or
// the zone failed), up to timeout, and returns the zone as last read.
func (r *Resolver) waitZoneApplied(ctx context.Context, name string, gen int64, timeout time.Duration) (*store.Zone, error) {
	deadline := time.Now().Add(timeout)
	for {
		z, _, err := r.Store.GetZone(ctx, name)
		if err != nil {
			return nil, err
		}
		if z.AppliedGeneration >= gen || z.Status == store.ZoneFailed || time.Now().After(deadline) {
			return z, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// zoneMatches applies a zones filter and the caller's tenancy.
func zoneMatches(p auth.Principal, f *model.ZoneFilter, z *store.Zone) bool {
	switch p.Role {
	case store.RoleReseller:
		if z.Owner != p.Name {
			return false
		}
	case store.RoleUser:
		if z.Account != p.Account {
			return false
		}
	}
	if f == nil {
		return true
	}
	if f.Account != nil && z.Account != *f.Account {
		return false
	}
	if f.Status != nil && string(z.Status) != string(*f.Status) {
		return false
	}
	if f.Search != nil && !strings.Contains(z.Name, strings.ToLower(*f.Search)) {
		return false
	}
	return true
}
