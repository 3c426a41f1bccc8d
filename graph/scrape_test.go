package graph

import (
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
)

// FuzzScrapeScopes: whatever createScrapeToken's scopes hold (here a
// comma-separated list, "-" for none given), the check refuses them or
// returns a non-empty subset of the store's scopes in canonical order, and
// what it returns is exactly the distinct scopes given.
func FuzzScrapeScopes(f *testing.F) {
	f.Add("-")
	f.Add("")
	f.Add("METRICS")
	f.Add("ALERTS,DISCOVERY")
	f.Add("METRICS,METRICS")
	f.Add("metrics")
	f.Fuzz(func(t *testing.T, list string) {
		var in []model.ScrapeScope
		if list != "-" {
			in = []model.ScrapeScope{}
			if list != "" {
				for _, s := range strings.Split(list, ",") {
					in = append(in, model.ScrapeScope(s))
				}
			}
		}
		got, err := scrapeScopes(in)
		if err != nil {
			return
		}
		if len(got) == 0 || !slices.IsSortedFunc(got, func(a, b string) int {
			return slices.Index(store.ScrapeScopes, a) - slices.Index(store.ScrapeScopes, b)
		}) {
			t.Fatalf("scrapeScopes(%q) = %v", list, got)
		}
		if in == nil {
			if !slices.Equal(got, store.ScrapeScopes) {
				t.Fatalf("no scopes given: %v, want all", got)
			}
			return
		}
		if len(got) != len(in) {
			t.Fatalf("scrapeScopes(%q) = %v: not one per scope given", list, got)
		}
		for _, s := range in {
			if !slices.Contains(got, strings.ToLower(string(s))) {
				t.Fatalf("scrapeScopes(%q) = %v: lost %s", list, got, s)
			}
		}
	})
}
