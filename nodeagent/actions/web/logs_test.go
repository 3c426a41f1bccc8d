package web

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/npanel/npanel/protos/agentpb"
)

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in    string
		n     int
		want  []string
		trunc bool
	}{
		{"", 10, nil, false},
		{"a\n", 10, []string{"a"}, false},
		{"a\nb\nc\n", 2, []string{"b", "c"}, true},
		{"a\nb\nc", 5, []string{"a", "b", "c"}, false},
		{strings.Repeat("x\n", 50000), 3, []string{"x", "x", "x"}, true},
	} {
		got, trunc, err := tail(bytes.NewReader([]byte(tc.in)), tc.n, maxLogRead)
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") || trunc != tc.trunc {
			t.Errorf("tail(%.20q, %d) = %q %v %v, want %q %v", tc.in, tc.n, got, trunc, err, tc.want, tc.trunc)
		}
	}
	// A huge line is cut; the read never exceeds its bound.
	got, trunc, _ := tail(bytes.NewReader([]byte("first\n"+strings.Repeat("y", 3*maxLogRead)+"\n")), 10, maxLogRead)
	if !trunc || len(got) != 0 && len(got[0]) > maxLogLine {
		t.Errorf("huge line: %d lines, truncated %v", len(got), trunc)
	}
}

// FuzzTail: whatever a log holds (binary, no newline, huge lines), a read
// returns at most n valid UTF-8 lines within the size bounds, each a
// suffix-ordered piece of the file.
func FuzzTail(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\nGET /a HTTP/1.1\n"), 1)
	f.Add([]byte("\xff\xfe\x00\n\n\n"), 5)
	f.Add([]byte(strings.Repeat("z", 5000)), 2)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		if n < 1 || n > MaxLogLines {
			return
		}
		lines, _, err := tail(bytes.NewReader(data), n, maxLogRead)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) > n {
			t.Fatalf("%d lines, asked for %d", len(lines), n)
		}
		total := 0
		for _, l := range lines {
			if !utf8.ValidString(l) || strings.Contains(l, "\n") || len(l) > maxLogLine*3 {
				t.Fatalf("bad line %q", l)
			}
			total += len(l)
		}
		if total > 3*maxLogRead {
			t.Fatalf("%d bytes returned", total)
		}
	})
}

// FuzzValidateReadDomainLog: what passes names a file inside the account's
// log directory and nothing else.
func FuzzValidateReadDomainLog(f *testing.F) {
	f.Add("alice", "example.com", int32(1), uint32(100))
	f.Add("alice", "../../etc/shadow", int32(1), uint32(1))
	f.Add("alice/..", "example.com", int32(2), uint32(1000))
	f.Add("alice", "EXAMPLE.com", int32(3), uint32(0))
	f.Add("alice", "a.b/c", int32(1), uint32(1001))
	f.Fuzz(func(t *testing.T, user, domain string, kind int32, lines uint32) {
		k := agentpb.DomainLogKind(kind)
		if ValidateReadDomainLog(user, domain, k, lines) != nil {
			return
		}
		name := logFileName(domain, kindName(k))
		if name != filepath.Base(name) || strings.HasPrefix(name, ".") || strings.ContainsAny(name+user, "/\\\x00") {
			t.Fatalf("valid read names %q for %q", name, user)
		}
		if lines < 1 || lines > MaxLogLines {
			t.Fatalf("%d lines passed", lines)
		}
	})
}

func TestValidateReadDomainLog(t *testing.T) {
	access := agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS
	if err := ValidateReadDomainLog("alice", "example.com", access, 100); err != nil {
		t.Fatalf("valid read refused: %v", err)
	}
	for name, tc := range map[string]struct {
		user, domain string
		kind         agentpb.DomainLogKind
		lines        uint32
	}{
		"traversal domain":  {"alice", "../../etc/shadow", access, 10},
		"slash in domain":   {"alice", "a.com/b", access, 10},
		"not canonical":     {"alice", "Example.COM", access, 10},
		"trailing dot":      {"alice", "example.com.", access, 10},
		"traversal user":    {"../root", "example.com", access, 10},
		"empty user":        {"", "example.com", access, 10},
		"no kind":           {"alice", "example.com", agentpb.DomainLogKind_DOMAIN_LOG_KIND_UNSPECIFIED, 10},
		"unknown kind":      {"alice", "example.com", agentpb.DomainLogKind(7), 10},
		"no lines":          {"alice", "example.com", access, 0},
		"too many lines":    {"alice", "example.com", access, MaxLogLines + 1},
		"newline in domain": {"alice", "example.com\n", access, 10},
	} {
		if err := ValidateReadDomainLog(tc.user, tc.domain, tc.kind, tc.lines); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
