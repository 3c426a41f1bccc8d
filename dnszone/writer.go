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
		b.WriteByte('\n')
	}
	return b.String(), nil
}
