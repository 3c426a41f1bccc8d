package scheduler

import (
	"errors"
	"strings"
	"testing"

	"github.com/npanel/npanel/validate"
)

func TestParseSelectorValid(t *testing.T) {
	for _, tc := range []struct{ in, canonical string }{
		{"", ""},
		{"   ", ""},
		{"zone=eu-1", "zone=eu-1"},
		{"zone==eu-1", "zone=eu-1"},
		{" zone = eu-1 ", "zone=eu-1"},
		{"tier!=cheap", "tier!=cheap"},
		{"ssd", "ssd"},
		{"!legacy", "!legacy"},
		{"! legacy", "!legacy"},
		{"tier=", "tier="},
		{"tier!=", "tier!="},
		{"region in (eu-1,eu-2)", "region in (eu-1,eu-2)"},
		{"region in ( eu-2 , eu-1 , eu-2 )", "region in (eu-1,eu-2)"},
		{"disk notin (hdd)", "disk notin (hdd)"},
		{"region\tin\t(eu-1)", "region in (eu-1)"},
		{"zone=eu-1,tier!=cheap,ssd,!legacy,region in (eu-1,eu-2),disk notin (hdd)",
			"disk notin (hdd),!legacy,region in (eu-1,eu-2),ssd,tier!=cheap,zone=eu-1"},
		{"npanel.io/pool=gold", "npanel.io/pool=gold"},
		{"in=in,notin in (in,notin)", "in=in,notin in (in,notin)"}, // keywords only in operator position
		{"a.b_c-d=1.2_3-4", "a.b_c-d=1.2_3-4"},
	} {
		sel, err := ParseSelector(tc.in)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tc.in, err)
			continue
		}
		if got := sel.String(); got != tc.canonical {
			t.Errorf("ParseSelector(%q).String() = %q, want %q", tc.in, got, tc.canonical)
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Errorf("canonical %q does not re-parse to itself: %q, %v", sel.String(), again.String(), err)
		}
	}
}

func TestParseSelectorInvalid(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a=b;rm", `label value: "b;rm" must be lowercase`},
		{"a=b; rm -rf /", `label value: "b;" must be lowercase`},
		{"a=$(reboot)", `label value: "$" must be lowercase`},
		{"a=`id`", "label value: \"`id`\" must be lowercase"},
		{"a=b&&c", `label value: "b&&c" must be lowercase`},
		{"a=b\nc=d", `label value: "b\nc" must be lowercase`},
		{"a=b|c", `label value: "b|c" must be lowercase`},
		{"Zone=eu", `label key: "Zone" must be lowercase`},
		{"zone=EU", `label value: "EU" must be lowercase`},
		{"-a=b", `label key: "-a" must be lowercase`},
		{"a=b-", `label value: "b-" must be lowercase`},
		{"/a=b", "label key prefix: must not be empty"},
		{"a/=b", "label key: must not be empty"},
		{"zone=" + strings.Repeat("x", 64), "longer than 63 characters"},
		{strings.Repeat("a", MaxSelectorLen+1), "longer than 4096 bytes"},
		{",", "empty requirement"},
		{",a", "empty requirement"},
		{"a,", "empty requirement"},
		{"a,,b", "empty requirement"},
		{"a=b,", "empty requirement"},
		{"=b", "expected a label key, found \"=\""},
		{"!", "expected a label key, found the end"},
		{"!=b", "expected a label key, found \"!=\""},
		{"!!a", `expected a label key, found "!"`},
		{"!a=b", `expected "," or the end after a requirement, found "="`},
		{"a=b=c", `expected "," or the end after a requirement, found "="`},
		{"a b", `expected an operator (=, !=, in, notin) after label key "a", found "b"`},
		{"a=b c", `expected "," or the end after a requirement, found "c"`},
		{"a in b", `expected "(" to open a set of values, found "b"`},
		{"a in ()", "empty set of values"},
		{"a in (b", `expected "," or ")" in the set, found the end`},
		{"a in (b,)", `expected a value in the set, found ")"`},
		{"a in (,b)", `expected a value in the set, found ","`},
		{"a in (b c)", `expected "," or ")" in the set, found "c"`},
		{"a in (b))", `expected "," or the end after a requirement, found ")"`},
		{"a in (b=c)", `expected "," or ")" in the set, found "="`},
		{"ain (b)", `expected an operator (=, !=, in, notin) after label key "ain", found "("`},
		{"a(", `expected an operator (=, !=, in, notin) after label key "a", found "("`},
		{"zone=a,zone=b", `label key "zone" appears twice`},
		{"ssd,!ssd", `label key "ssd" appears twice`},
		{"zone in (a),zone notin (b)", `label key "zone" appears twice`},
	} {
		_, err := ParseSelector(tc.in)
		if err == nil {
			t.Errorf("ParseSelector(%q) accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSelector(%q) = %q, want it to contain %q", tc.in, err, tc.want)
		}
		var se *SelectorError
		if !errors.As(err, &se) {
			t.Errorf("ParseSelector(%q): error %T is not a *SelectorError", tc.in, err)
		}
	}
}

func TestSelectorErrorOffset(t *testing.T) {
	_, err := ParseSelector("zone=eu-1, tier=Gold")
	var se *SelectorError
	if !errors.As(err, &se) || se.Offset != 16 {
		t.Fatalf("got %#v, want offset 16 (the value)", err)
	}
	var ve *validate.Error
	if !errors.As(err, &ve) || ve.Field != "label value" {
		t.Errorf("want the validate.Error underneath, got %v", err)
	}
	if got, want := err.Error(), `at offset 16: label value: "Gold" must be lowercase letters, digits and -_. inside, starting and ending with a letter or digit`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

func TestSelectorMatches(t *testing.T) {
	node := map[string]string{"zone": "eu-1", "tier": "cheap", "ssd": "", "disk": "nvme"}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"zone=eu-1", true},
		{"zone=eu-2", false},
		{"region=eu", false},
		{"tier!=cheap", false},
		{"tier!=premium", true},
		{"region!=eu", true}, // an absent label is "not equal"
		{"ssd", true},
		{"ssd=", true},
		{"ssd!=", false},
		{"legacy", false},
		{"!legacy", true},
		{"!ssd", false},
		{"zone in (eu-1,eu-2)", true},
		{"zone in (us-1)", false},
		{"region in (eu)", false},
		{"disk notin (hdd)", true},
		{"disk notin (hdd,nvme)", false},
		{"region notin (eu)", true}, // absent
		{"zone=eu-1,tier!=cheap", false},
		{"zone=eu-1,ssd,!legacy,disk notin (hdd)", true},
	} {
		if got := mustParse(t, tc.sel).Matches(node); got != tc.want {
			t.Errorf("%q matches %v = %v, want %v", tc.sel, node, got, tc.want)
		}
	}
	if !(Selector{}).Matches(nil) || !(Selector{}).Empty() {
		t.Error("the zero Selector must select everything")
	}
	if mustParse(t, "!legacy").Matches(nil) != true || mustParse(t, "ssd").Matches(nil) != false {
		t.Error("nil labels are no labels")
	}
}
