package graph_test

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// An enum value in the variables spelt in another case than the schema's
// is INVALID_INPUT naming the variable and the values, not INTERNAL; a
// literal in the document stays a validation error, and the exact
// spelling works.
func TestEnumVariablesExact(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	const create = `mutation($n:String!,$s:[ScrapeScope!]){createScrapeToken(name:$n,scopes:$s){token}}`
	for _, c := range []struct {
		name string
		vars map[string]any
		want string
	}{
		{"lower case in a list", map[string]any{"n": "t1", "s": []any{"metrics"}}, "$s[0]"},
		{"mixed case, one of two", map[string]any{"n": "t2", "s": []any{"METRICS", "Alerts"}}, "$s[1]"},
		{"a single value for a list", map[string]any{"n": "t3", "s": "discovery"}, "$s"},
	} {
		err := s.Admin.Do(ctx, create, c.vars, nil)
		if client.CodeOf(err) != "INVALID_INPUT" || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "METRICS") {
			t.Errorf("%s: %v, want INVALID_INPUT naming %s", c.name, err, c.want)
		}
	}
	// In an input object.
	err := s.Admin.Do(ctx, `mutation($i:RequestCertificateInput!){requestCertificate(input:$i){id}}`,
		map[string]any{"i": map[string]any{"domain": "x.example.com", "challenge": "http01"}}, nil)
	if client.CodeOf(err) != "INVALID_INPUT" || !strings.Contains(err.Error(), "$i.challenge") {
		t.Errorf("input object: %v, want INVALID_INPUT naming $i.challenge", err)
	}
	if err := s.Admin.Do(ctx, `mutation{createScrapeToken(name:"t4",scopes:[metrics]){token}}`, nil, nil); err == nil || client.CodeOf(err) == "INTERNAL" {
		t.Errorf("literal: %v, want a validation error", err)
	}
	if err := s.Admin.Do(ctx, create, map[string]any{"n": "t5", "s": []any{"METRICS"}}, nil); err != nil {
		t.Errorf("exact spelling: %v", err)
	}
	toks, err := s.Admin.ScrapeTokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Errorf("tokens %v %v, want only t5's", toks, err)
	}
}
