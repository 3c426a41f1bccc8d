package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// npanel ctl scrape-token, logs, traffic and node top/status through the
// real binary: a scrape token is shown once, lists and opens the SD
// endpoint until deleted; bad flags exit 2 before anything is sent; API
// refusals exit 1 with their code.
func TestCLIObserve(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}

	out, code := run(t, env, "", "ctl", "scrape-token", "create", "prometheus", "-o", "json")
	if code != 0 {
		t.Fatalf("scrape-token create: exit %d: %s", code, out)
	}
	var created struct {
		Token       string
		ScrapeToken struct {
			ID, Name string
			Scopes   []string
		}
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Token, "nps_") || created.ScrapeToken.ID == "" ||
		!slices.Equal(created.ScrapeToken.Scopes, []string{"DISCOVERY", "METRICS", "ALERTS"}) {
		t.Fatalf("scrape-token create: %v: %s", err, out)
	}
	if out, code := run(t, env, "", "ctl", "scrape-token", "list"); code != 0 || !strings.Contains(out, created.ScrapeToken.ID) ||
		!strings.Contains(out, "prometheus") || !strings.Contains(out, "discovery,metrics,alerts") {
		t.Errorf("scrape-token list: exit %d: %s", code, out)
	}
	// --scope: repeated or comma-separated, any case.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scope", "alerts", "--scope", "DISCOVERY"}, "scopes discovery,alerts)"},
		{[]string{"--scope", "metrics,Alerts"}, "scopes metrics,alerts)"},
	} {
		out, code := run(t, env, "", append([]string{"ctl", "scrape-token", "create", "scoped"}, tc.args...)...)
		if code != 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nps_") {
			t.Errorf("scrape-token create %v: exit %d: %s", tc.args, code, out)
		}
	}
	sd := func() int {
		req, _ := http.NewRequest("GET", "http://"+s.api+"/v1/prometheus/sd", nil)
		req.Header.Set("Authorization", "Bearer "+created.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for sd() != http.StatusOK && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if code := sd(); code != http.StatusOK {
		t.Errorf("SD with the token: %d", code)
	}
	if out, code := run(t, env, "", "ctl", "scrape-token", "delete", created.ScrapeToken.ID); code != 0 {
		t.Errorf("scrape-token delete: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "scrape-token", "delete", created.ScrapeToken.ID); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Errorf("scrape-token delete twice: exit %d: %s", code, out)
	}

	for _, args := range [][]string{
		{"ctl", "logs", "domain"},
		{"ctl", "logs", "domain", "x.example.com", "--kind", "debug"},
		{"ctl", "logs", "domain", "x.example.com", "--lines", "0"},
		{"ctl", "logs", "domain", "x.example.com", "--since", "yesterday"},
		{"ctl", "logs", "domain", "x.example.com", "--since", "2999-01-01T00:00:00Z"},
		{"ctl", "logs", "domain", "x.example.com", "--grep", strings.Repeat("x", 201)},
		{"ctl", "logs", "service", "node-1"},
		{"ctl", "logs", "service", "node-1", "nginx", "--lines", "1001"},
		{"ctl", "logs", "domain", "x.example.com", "--grep", "a\x01b"},
		{"ctl", "traffic", "bandwidth", "acct", "--period", "year"},
		{"ctl", "traffic", "requests"},
		{"ctl", "node", "top"},
		{"ctl", "node", "status", "node-1"},
		{"ctl", "scrape-token", "create"},
		{"ctl", "scrape-token", "create", "x", "--scope", "admin"},
		{"ctl", "scrape-token", "create", "x", "--scope", "metrics,metrics"},
		{"ctl", "scrape-token", "create", "x", "--scope", ""},
		{"ctl", "logs", "nonsense"},
	} {
		if out, code := run(t, env, "", args...); code != 2 || strings.TrimSpace(out) == "" {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	for _, args := range [][]string{
		{"ctl", "logs", "domain", "nobody.example.org", "--since", "1h", "--grep", "GET"},
		{"ctl", "logs", "service", "no-such-node", "nginx"},
		{"ctl", "traffic", "bandwidth", "nosuchacct", "--period", "week"},
		{"ctl", "traffic", "requests", "nobody.example.org"},
		{"ctl", "node", "top", "no-such-node"},
		{"ctl", "node", "status", "no-such-node", "nginx"},
	} {
		if out, code := run(t, env, "", args...); code != 1 || !strings.Contains(out, "NOT_FOUND") {
			t.Errorf("%v: exit %d, want 1 with NOT_FOUND: %s", args, code, out)
		}
	}
}

func TestParseScrapeScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string // nil: refused
	}{
		{[]string{"metrics"}, []string{"METRICS"}},
		{[]string{" Alerts ", "DISCOVERY"}, []string{"ALERTS", "DISCOVERY"}},
		{[]string{"metrics", ""}, []string{"METRICS"}},
		{[]string{}, nil},
		{[]string{""}, nil},
		{[]string{"metrics", "METRICS"}, nil},
		{[]string{"admin"}, nil},
	} {
		got, err := parseScrapeScopes(tc.in)
		if (err == nil) != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("parseScrapeScopes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseScrapeScopes: whatever --scope holds, the parser returns a
// usage error or a non-empty list of the API's enum values, each once.
func FuzzParseScrapeScopes(f *testing.F) {
	f.Add("metrics", "alerts")
	f.Add("DISCOVERY", "discovery")
	f.Add("", " ")
	f.Add("metrics\x00", "alerts,")
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := parseScrapeScopes([]string{a, b})
		if err != nil {
			return
		}
		if len(got) == 0 {
			t.Fatalf("parseScrapeScopes(%q, %q) accepted no scopes", a, b)
		}
		seen := map[string]bool{}
		for _, s := range got {
			if seen[s] || !slices.Contains([]string{"DISCOVERY", "METRICS", "ALERTS"}, s) {
				t.Fatalf("parseScrapeScopes(%q, %q) = %v", a, b, got)
			}
			seen[s] = true
		}
	})
}
