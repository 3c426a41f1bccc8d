package validate

import (
	"strings"
	"testing"
)

func TestObjectName(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"basic", true}, {"pro-2024", true}, {"a.b_c", true}, {"", false}, {"Basic", false},
		{"-x", false}, {"x-", false}, {"a b", false}, {"../etc", false}, {strings.Repeat("a", 64), false},
	} {
		if err := ObjectName("plan", tc.in); (err == nil) != tc.ok {
			t.Errorf("ObjectName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestPassword(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"correct horse battery", true}, {"ünïcödé-pässwörd", true}, {"short", false},
		{strings.Repeat("a", 20), false}, {strings.Repeat("ab", 40), false},
		{"with\nnewline-here", false}, {"\xff\xfe-invalid-utf8", false},
	} {
		if err := Password(tc.in); (err == nil) != tc.ok {
			t.Errorf("Password(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestTestUsername(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"npt1", true}, {"nptabc123", true}, {"npt", false}, {"alice", false}, {"npt_x", false},
		{"nptA", false}, {"npt" + strings.Repeat("a", 30), false}, {"npt-1", false},
	} {
		if err := TestUsername(tc.in); (err == nil) != tc.ok {
			t.Errorf("TestUsername(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if tc.ok && Username(tc.in) == nil {
			t.Errorf("Username accepts test name %q", tc.in)
		}
	}
}
