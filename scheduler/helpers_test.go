package scheduler

import "testing"

func mustParse(tb testing.TB, s string) Selector {
	tb.Helper()
	sel, err := ParseSelector(s)
	if err != nil {
		tb.Fatalf("ParseSelector(%q): %v", s, err)
	}
	return sel
}
