package dnszone

import (
	"fmt"
	"strings"
)

// WriteZone renders z as a BIND zone file that ParseZone reads back to the
// same zone: z is checked with ValidateZone first, so what is written is
// canonical and every line is one record with an absolute owner and an
// explicit TTL (ParseZone never carries a TTL from one record to the next,
// BIND does; explicit TTLs mean the same to both). serial goes into the
// SOA, which holds the SOA fields of z with defaults filled in.
func WriteZone(z Zone, serial uint32) (string, error) {
	return WriteZoneNoted(z, serial, nil)
}

// WriteZoneNoted is WriteZone with a comment after each record for which
// note (given the record as validated) returns one; BIND and ParseZone
// ignore comments.
func WriteZoneNoted(z Zone, serial uint32, note func(Record) string) (string, error) {
	v, err := ValidateZone(z)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL %d\n", v.Name, v.SOA.TTL)
	fmt.Fprintf(&b, "%s %d IN SOA %s\n", v.Name, v.SOA.TTL, v.SOA.Content(serial))
	for _, ns := range v.Nameservers {
		fmt.Fprintf(&b, "%s %d IN NS %s\n", v.Name, v.SOA.TTL, ns)
	}
	for _, r := range v.Records {
		b.WriteString(r.String())
		if note != nil {
			if n := note(r); n != "" {
				b.WriteString(" ; ")
				b.WriteString(strings.ReplaceAll(n, "\n", " "))
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}
