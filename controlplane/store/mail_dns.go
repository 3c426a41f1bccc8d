package store

import (
	"strings"

	"github.com/npanel/npanel/dnszone"
)

// SetTXT replaces z's TXT records at name (absolute, with the trailing
// dot) whose content match selects (nil: all of them) with one record of
// content, or removes them when content is empty. Content is the text as
// published, unquoted: a value over 255 bytes (a DKIM key) is split into
// quoted strings of at most 255 bytes (dnszone.ValidateRecord). It reports
// whether the records changed; the caller bumps the zone's generation.
// Mail's SPF, DMARC and DKIM records are written through it.
func (z *Zone) SetTXT(name, content string, match func(content string) bool) (bool, error) {
	var rec *ZoneRecord
	if content != "" {
		r, err := dnszone.ValidateRecord(z.Name, dnszone.Record{Name: name, Type: dnszone.TypeTXT, Content: content}, dnszone.DefaultTTL)
		if err != nil {
			return false, err
		}
		rec = &ZoneRecord{Name: r.Name, Type: dnszone.TypeTXT, Content: r.Content, TTL: r.TTL}
	}
	out := make([]ZoneRecord, 0, len(z.Records)+1)
	found := false
	for _, r := range z.Records {
		if r.Type == dnszone.TypeTXT && strings.EqualFold(r.Name, name) && (match == nil || match(r.Content)) {
			if rec != nil && rec.Content == r.Content && !found {
				found = true
				out = append(out, r)
			}
			continue
		}
		out = append(out, r)
	}
	if rec != nil && !found {
		rec.ID = z.NewRecordID()
		out = append(out, *rec)
	}
	if len(out) == len(z.Records) && (rec == nil || found) {
		return false, nil
	}
	z.Records = out
	return true, nil
}

// TXTHasPrefix selects TXT content (in zone-file form, quoted) whose text
// starts with p, as "v=spf1" selects a domain's SPF record among its other
// TXT records.
func TXTHasPrefix(p string) func(string) bool {
	return func(c string) bool { return strings.HasPrefix(strings.TrimPrefix(c, `"`), p) }
}
