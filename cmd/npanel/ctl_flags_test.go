package main

import (
	"maps"
	"testing"

	"github.com/npanel/npanel/validate"
)

func TestMergeLabels(t *testing.T) {
	cur := map[string]string{"zone": "eu", "rack": "a1"}
	for _, tc := range []struct {
		name        string
		set, remove []string
		want        map[string]string
		err         bool
	}{
		{name: "set", set: []string{"tier=gold"}, want: map[string]string{"zone": "eu", "rack": "a1", "tier": "gold"}},
		{name: "overwrite", set: []string{"zone=us"}, want: map[string]string{"zone": "us", "rack": "a1"}},
		{name: "remove", remove: []string{"zone"}, want: map[string]string{"rack": "a1"}},
		{name: "empty value", set: []string{"x="}, want: map[string]string{"zone": "eu", "rack": "a1", "x": ""}},
		{name: "no equals", set: []string{"tier"}, err: true},
		{name: "empty key", set: []string{"=v"}, err: true},
		{name: "twice", set: []string{"a=1", "a=2"}, err: true},
		{name: "set and remove", set: []string{"zone=us"}, remove: []string{"zone"}, err: true},
		{name: "remove missing", remove: []string{"nope"}, err: true},
	} {
		got, err := mergeLabels(cur, tc.set, tc.remove)
		if (err != nil) != tc.err {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if !tc.err && !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if cur["zone"] != "eu" || len(cur) != 2 {
		t.Errorf("mergeLabels changed its input: %v", cur)
	}
}

func TestParseRoles(t *testing.T) {
	for in, ok := range map[string]bool{"web": true, "WEB,dns": true, " web , db ": true, "": false, ",": false, "web,web": false, "web,king": false} {
		if _, err := parseRoles(in); (err == nil) != ok {
			t.Errorf("parseRoles(%q): %v", in, err)
		}
	}
}

// FuzzNodeUpdateFlags: whatever --label, --remove-label and --roles hold,
// the parsers return a usage error or a result the server's validators
// accept, never panic, and never change the current labels.
func FuzzNodeUpdateFlags(f *testing.F) {
	f.Add("tier=gold", "zone", "web,dns")
	f.Add("=", "", "")
	f.Add("a=b=c", "rack", "WEB,web")
	f.Add("k\x00=v", "k\x00", "db,backup,mail")
	f.Fuzz(func(t *testing.T, set, remove, roles string) {
		cur := map[string]string{"zone": "eu", "rack": "a1"}
		got, err := mergeLabels(cur, []string{set}, []string{remove})
		if err == nil {
			if verr := validate.Labels(got); verr != nil {
				t.Fatalf("mergeLabels(%q, %q) = %v, which the server refuses: %v", set, remove, got, verr)
			}
			if _, still := got[remove]; still && remove != "" {
				t.Fatalf("removed label %q still there: %v", remove, got)
			}
		}
		if len(cur) != 2 || cur["zone"] != "eu" || cur["rack"] != "a1" {
			t.Fatalf("input changed: %v", cur)
		}
		rs, err := parseRoles(roles)
		if err == nil {
			if len(rs) == 0 {
				t.Fatalf("parseRoles(%q) accepted no roles", roles)
			}
			seen := map[string]bool{}
			for _, r := range rs {
				if seen[r] {
					t.Fatalf("parseRoles(%q) = %v: duplicate", roles, rs)
				}
				seen[r] = true
			}
		}
	})
}
