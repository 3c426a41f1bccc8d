package logtail

import "bytes"

// levelScan is how far into a line a level marker is looked for: the
// marker sits in the prefix of every format we know.
const levelScan = 128

// levels maps the markers daemons write to Loki's level names: nginx
// ("[error]"), MariaDB ("[ERROR]", "[Warning]", "[Note]"), PostgreSQL
// and PHP-FPM ("ERROR:", "WARNING:", "NOTICE:"), slog ("level=ERROR").
var levels = []struct {
	word  string
	level string
}{
	{"emerg", "error"}, {"alert", "error"}, {"crit", "error"}, {"critical", "error"},
	{"fatal", "error"}, {"panic", "error"}, {"error", "error"},
	{"warn", "warn"}, {"warning", "warn"},
	{"notice", "info"}, {"note", "info"}, {"info", "info"}, {"log", "info"},
	{"debug", "debug"},
}

// level tells a line's level where its format says it, else "". Access
// log lines are requests, not events: "info".
func level(src *Source, line []byte) string {
	if src.Kind == "access" {
		return "info"
	}
	head := line[:min(len(line), levelScan)]
	for i := 0; i < len(head); i++ {
		var word []byte
		switch {
		case head[i] == '[':
			// [error]
			end := bytes.IndexByte(head[i+1:], ']')
			if end < 0 {
				continue
			}
			word = head[i+1 : i+1+end]
		case i+6 <= len(head) && string(head[i:i+6]) == "level=":
			rest := head[i+6:]
			end := bytes.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			word = rest[:end]
		case head[i] == ':' && i > 0 && (i+1 == len(head) || head[i+1] == ' '):
			// ERROR:  (an upper-case word before the colon)
			start := i
			for start > 0 && head[start-1] >= 'A' && head[start-1] <= 'Z' {
				start--
			}
			if start == i || (start > 0 && head[start-1] != ' ' && head[start-1] != ']') {
				continue
			}
			word = head[start:i]
		default:
			continue
		}
		if l := lookup(word); l != "" {
			return l
		}
	}
	return ""
}

func lookup(word []byte) string {
	if len(word) > 8 {
		return ""
	}
	for _, l := range levels {
		if len(word) == len(l.word) && bytes.EqualFold(word, []byte(l.word)) {
			return l.level
		}
	}
	return ""
}
