package dnszone

import "time"

// NextSerial returns the SOA serial that follows prev at time now, in the
// date-based form YYYYMMDDnn: the first serial of the day (nn = 00) when
// that is newer than prev, else prev+1. "Newer" is RFC 1982 serial-number
// arithmetic, which is how secondaries compare serials, so the result is
// always newer than prev for them, also when prev came from another scheme
// (a Unix timestamp, a small counter) or more than 100 changes in a day ran
// nn past 99 into the next day's numbers.
func NextSerial(prev uint32, now time.Time) uint32 {
	y, m, d := now.UTC().Date()
	base := uint32(y*1000000 + int(m)*10000 + d*100)
	if SerialLess(prev, base) {
		return base
	}
	next := prev + 1
	if next == 0 {
		// 0 is a legal serial but many tools treat it as "unset".
		next = 1
	}
	return next
}

// SerialLess reports a < b in RFC 1982 serial-number arithmetic.
func SerialLess(a, b uint32) bool {
	return a != b && int32(b-a) > 0
}
