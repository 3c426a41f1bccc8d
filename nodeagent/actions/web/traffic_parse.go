package web

// A hand scanner for the npanel_json access log line (logFormat). The
// traffic counters read every request of every site on the node, so the
// line is not decoded with encoding/json (reflection and allocations per
// line): this walks the object once, without allocating, and keeps only
// the four fields the counters need, and stops once it has them (nginx
// writes them first: the rest of the line, its longest part, is not
// looked at). Anything it cannot read is skipped.

import "bytes"

// accessRecord is what the counters take from one access log line.
type accessRecord struct {
	unix   int64  // "time", seconds; 0 when absent or unreadable
	status int    // "status"
	bytes  uint64 // "bytes" ($body_bytes_sent)
	rtMS   uint64 // "rt" ($request_time, millisecond resolution) in ms
}

// parseAccess reads one line; ok is false when it is not a JSON object
// with a status.
func parseAccess(line []byte) (rec accessRecord, ok bool) {
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return rec, false
	}
	i++
	haveStatus := false
	var seen uint8 // a bit per field read
	for seen != 0b1111 {
		i = skipSpace(line, i)
		if i >= len(line) {
			return rec, false
		}
		if line[i] == '}' {
			return rec, haveStatus
		}
		if line[i] == ',' {
			i++
			continue
		}
		if line[i] != '"' {
			return rec, false
		}
		ks, ke, next := scanString(line, i)
		if next < 0 {
			return rec, false
		}
		key := line[ks:ke]
		i = skipSpace(line, next)
		if i >= len(line) || line[i] != ':' {
			return rec, false
		}
		i = skipSpace(line, i+1)
		if i >= len(line) {
			return rec, false
		}
		var vs, ve int
		if line[i] == '"' {
			vs, ve, next = scanString(line, i)
			if next < 0 {
				return rec, false
			}
		} else {
			vs = i
			for next = i; next < len(line) && line[next] != ',' && line[next] != '}' && line[next] != ' '; next++ {
			}
			ve = next
		}
		val := line[vs:ve]
		switch string(key) { // no allocation: the compiler compares in place
		case "status":
			n, good := parseUint(val)
			if !good || n > 999 {
				return rec, false
			}
			rec.status, haveStatus = int(n), true
			seen |= 1
		case "bytes":
			rec.bytes, _ = parseUint(val)
			seen |= 2
		case "rt":
			rec.rtMS = parseMillis(val)
			seen |= 4
		case "time":
			rec.unix = parseISOTime(val)
			seen |= 8
		}
		i = next
	}
	return rec, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// scanString returns the bounds of the string starting at the quote b[i]
// (escapes left as they are) and the index after its closing quote, or
// next < 0 when it does not end.
func scanString(b []byte, i int) (start, end, next int) {
	start = i + 1
	for j := start; ; j++ {
		k := bytes.IndexByte(b[j:], '"') // vectorised: strings are most of a line
		if k < 0 {
			return 0, 0, -1
		}
		j += k
		odd := false // an odd run of backslashes escapes the quote
		for p := j - 1; p >= start && b[p] == '\\'; p-- {
			odd = !odd
		}
		if !odd {
			return start, j, j + 1
		}
	}
}

// parseUint reads a decimal integer; ok is false for anything else (nginx
// writes "-" for some variables that are not set).
func parseUint(b []byte) (n uint64, ok bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// parseMillis reads "12.345" (seconds) as 12345 ms; digits after the third
// decimal are dropped.
func parseMillis(b []byte) uint64 {
	var sec, ms uint64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 12; i++ {
		sec = sec*10 + uint64(b[i]-'0')
	}
	if i < len(b) && b[i] == '.' {
		i++
		for d := 0; d < 3; d++ {
			ms *= 10
			if i < len(b) && b[i] >= '0' && b[i] <= '9' {
				ms += uint64(b[i] - '0')
				i++
			}
		}
	}
	return sec*1000 + ms
}

// parseISOTime reads nginx's $time_iso8601, "2026-12-06T12:29:11+01:00",
// as Unix seconds; 0 when it is not of that shape.
func parseISOTime(b []byte) int64 {
	if len(b) != 25 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[22] != ':' || (b[19] != '+' && b[19] != '-') {
		return 0
	}
	num := func(s []byte) int64 {
		var n int64
		for _, c := range s {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int64(c-'0')
		}
		return n
	}
	y, mo, d := num(b[0:4]), num(b[5:7]), num(b[8:10])
	h, mi, s := num(b[11:13]), num(b[14:16]), num(b[17:19])
	oh, om := num(b[20:22]), num(b[23:25])
	if y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60 || oh < 0 || oh > 23 || om < 0 || om > 59 {
		return 0
	}
	t := daysFromCivil(y, mo, d)*86400 + h*3600 + mi*60 + s
	off := oh*3600 + om*60
	if b[19] == '+' {
		return t - off
	}
	return t + off
}

// daysFromCivil is the number of days from 1970-01-01 to y-m-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
