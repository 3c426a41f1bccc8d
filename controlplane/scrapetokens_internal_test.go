package controlplane

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// A token stored before scopes existed (no "scopes" in its record) keeps
// opening everything; a scoped one opens its scopes only, and only the
// tokens with METRICS are in the set the agents get.
func TestScrapeTokenView(t *testing.T) {
	v := newScrapeTokens(nil)
	put := func(id, tok string, scopes []string) {
		sum := store.ScrapeTokenDigest(tok)
		rec := map[string]any{"id": id, "name": id, "sha256": sum[:]}
		if scopes != nil {
			rec["scopes"] = scopes
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		v.apply(store.Event{Name: id, Value: b})
	}
	put("old", "nps_old", nil)
	put("alerts", "nps_alerts", []string{store.ScrapeAlerts})
	put("disc", "nps_disc", []string{store.ScrapeDiscovery, store.ScrapeMetrics})
	v.publish()
	for _, tc := range []struct {
		tok, scope string
		want       string // "" admitted, "401", "403"
	}{
		{"nps_old", store.ScrapeDiscovery, ""},
		{"nps_old", store.ScrapeMetrics, ""},
		{"nps_old", store.ScrapeAlerts, ""},
		{"nps_alerts", store.ScrapeAlerts, ""},
		{"nps_alerts", store.ScrapeMetrics, "403"},
		{"nps_alerts", store.ScrapeDiscovery, "403"},
		{"nps_disc", store.ScrapeDiscovery, ""},
		{"nps_disc", store.ScrapeMetrics, ""},
		{"nps_disc", store.ScrapeAlerts, "403"},
		{"nps_nope", store.ScrapeMetrics, "401"},
		{"old", store.ScrapeMetrics, "401"},
		{"", store.ScrapeMetrics, "401"},
	} {
		err := v.check(tc.tok, tc.scope)
		var scope *scopeError
		got := ""
		switch {
		case errors.As(err, &scope):
			got = "403"
		case errors.Is(err, errInvalidScrapeToken):
			got = "401"
		case err != nil:
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("check(%q, %s) = %v, want %s", tc.tok, tc.scope, err, tc.want)
		}
	}
	set := v.current()
	old, disc := store.ScrapeTokenDigest("nps_old"), store.ScrapeTokenDigest("nps_disc")
	if len(set.tokens) != 3 || len(set.digests) != 2 || !(set.digests[0] == old && set.digests[1] == disc || set.digests[0] == disc && set.digests[1] == old) {
		t.Errorf("set: %d tokens, agents get %x", len(set.tokens), set.digests)
	}
}
