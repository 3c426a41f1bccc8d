package scheduler

import (
	"errors"
	"reflect"
	"testing"

	"github.com/npanel/npanel/validate"
)

// FuzzParseSelector checks that the parser never panics, refuses only with
// a *SelectorError, and that whatever it accepts has a canonical form that
// parses back to the same selector — the property the snapshot's cache,
// keyed by that form, depends on. Seeds are in testdata/fuzz/FuzzParseSelector.
func FuzzParseSelector(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			var se *SelectorError
			if !errors.As(err, &se) {
				t.Fatalf("ParseSelector(%q): %T %v is not a *SelectorError", s, err, err)
			}
			return
		}
		for _, r := range sel.reqs {
			if validate.LabelKey(r.key) != nil {
				t.Fatalf("ParseSelector(%q) accepted key %q", s, r.key)
			}
			for _, v := range r.values {
				if validate.LabelValue(v) != nil {
					t.Fatalf("ParseSelector(%q) accepted value %q", s, v)
				}
			}
		}
		text := sel.String()
		again, err := ParseSelector(text)
		if err != nil {
			t.Fatalf("ParseSelector(%q) = %q, which does not parse: %v", s, text, err)
		}
		if !reflect.DeepEqual(sel, again) {
			t.Fatalf("ParseSelector(%q) = %#v, but its form %q parses to %#v", s, sel, text, again)
		}
	})
}
