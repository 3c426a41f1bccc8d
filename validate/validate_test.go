package validate

import (
	"errors"
	"strings"
	"testing"
)

func TestNodeAddress(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"192.0.2.10", true},
		{"2001:db8::1", true},
		{"127.0.0.1", true},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"fe80::1%eth0", false},
		{"example.com", false},
		{"192.0.2.10:80", false},
		{"", false},
		{" 192.0.2.10", false},
	} {
		err := NodeAddress(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("NodeAddress(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		var ve *Error
		if err != nil && !errors.As(err, &ve) {
			t.Errorf("NodeAddress(%q) error is %T, want *Error", tc.in, err)
		}
	}
}

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		in []string
		ok bool
	}{
		{[]string{"web"}, true},
		{[]string{"web", "dns", "mail", "db", "backup"}, true},
		{nil, false},
		{[]string{"web", "web"}, false},
		{[]string{"WEB"}, false},
		{[]string{"ftp"}, false},
	} {
		if err := Roles(tc.in); (err == nil) != tc.ok {
			t.Errorf("Roles(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		k, v string
		ok   bool
	}{
		{"zone", "eu-1", true},
		{"npanel.io/pool", "premium", true},
		{"tier", "", true},
		{"a", "b", true},
		{"", "x", false},
		{"Zone", "x", false},
		{"-zone", "x", false},
		{"zone-", "x", false},
		{"zo ne", "x", false},
		{"zone", "x y", false},
		{"zone", "$(rm -rf /)", false},
		{strings.Repeat("a", 64), "x", false},
		{"zone", strings.Repeat("a", 64), false},
		{"/zone", "x", false},
	} {
		if err := Labels(map[string]string{tc.k: tc.v}); (err == nil) != tc.ok {
			t.Errorf("Labels(%q=%q) = %v, want ok=%v", tc.k, tc.v, err, tc.ok)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"hello", true},
		{"tab\tok", true},
		{"ünïcödé", true},
		{"new\nline", false},
		{"nul\x00", false},
		{"\xff", false},
		{strings.Repeat("x", 13), false},
	} {
		if err := Text("payload", tc.in, 12); (err == nil) != tc.ok {
			t.Errorf("Text(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func FuzzLabelKey(f *testing.F) {
	for _, s := range []string{"zone", "npanel.io/pool", "", "-", "a/b/c", "ZONE", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		if LabelKey(k) != nil {
			return
		}
		// Anything accepted is printable lowercase ASCII without spaces, so it
		// can never break a selector expression or a log line.
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_./", c) >= 0) {
				t.Fatalf("accepted %q with byte %q", k, c)
			}
		}
		if len(k) > 253+1+63 {
			t.Fatalf("accepted %d-byte key", len(k))
		}
	})
}

func FuzzNodeAddress(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "::1", "fe80::1%lo", "1.2.3", "", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if NodeAddress(s) != nil {
			return
		}
		if strings.ContainsAny(s, " %/:\n") && !strings.Contains(s, ":") {
			t.Fatalf("accepted %q", s)
		}
		if strings.ContainsAny(s, " %/\n") {
			t.Fatalf("accepted %q", s)
		}
	})
}
