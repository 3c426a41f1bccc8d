package security

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
)

// wantCode fails unless err is a GraphQL error with one of codes.
func wantCode(t *testing.T, what string, err error, codes ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %v", what, codes)
	}
	if got := client.CodeOf(err); !slices.Contains(codes, got) {
		t.Fatalf("%s: code %q (%v), want one of %v", what, got, err, codes)
	}
}

// rawResponse is an HTTP answer of the API, decoded as far as it goes.
type rawResponse struct {
	status int
	header http.Header
	body   string
	data   json.RawMessage
	codes  []string
}

// raw sends body to /graphql with method, content type and extra headers
// as a client other than the Go client would.
func (c *cluster) raw(t *testing.T, method, path, contentType, token, body string, hdr map[string]string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	r := rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
	var g struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Extensions map[string]any `json:"extensions"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &g) == nil {
		r.data = g.Data
		for _, e := range g.Errors {
			code, _ := e.Extensions["code"].(string)
			r.codes = append(r.codes, code)
		}
	}
	return r
}

// postJSON posts a GraphQL document as the Go client would, with token.
func (c *cluster) postJSON(t *testing.T, token, query string, vars map[string]any) rawResponse {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return c.raw(t, http.MethodPost, "/graphql", "application/json", token, string(b), nil)
}

// executed reports whether a response carries data for field (a resolver
// ran and returned something).
func (r rawResponse) executed(field string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(r.data, &m) != nil {
		return false
	}
	v, ok := m[field]
	return ok && string(v) != "null"
}

// planNames lists the plans the admin sees.
func (c *cluster) planNames(t *testing.T) []string {
	t.Helper()
	ps, err := c.admin.Plans(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// accountCount is how many accounts exist, as the admin sees them.
func (c *cluster) accountCount(t *testing.T) int {
	t.Helper()
	as, _, err := c.admin.Accounts(context.Background(), client.AccountFilter{}, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	return len(as)
}

// unchanged runs attack and fails if snapshot differs before and after.
func unchanged[T any](t *testing.T, what string, snapshot func() T, attack func()) {
	t.Helper()
	before := snapshot()
	attack()
	after := snapshot()
	bj, _ := json.Marshal(before)
	aj, _ := json.Marshal(after)
	if !bytes.Equal(bj, aj) {
		t.Fatalf("%s changed by a refused request:\nbefore %s\nafter  %s", what, bj, aj)
	}
}

// tryLogin attempts a login that is expected to fail, on a connection of
// its own. The server limits login attempts per source and per user name;
// a vector must see the refusal its input earns, not the limiter's, so a
// RATE_LIMITED answer is waited out (bounded) and the attempt repeated.
func (c *cluster) tryLogin(t *testing.T, user, password string) error {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": `mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}`,
		"variables": map[string]any{"u": user, "p": password}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Post(c.s.URL()+"/graphql", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var g struct {
			Data   json.RawMessage `json:"data"`
			Errors []struct {
				Message    string         `json:"message"`
				Extensions map[string]any `json:"extensions"`
			} `json:"errors"`
		}
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatalf("login answer: HTTP %d %s", resp.StatusCode, b)
		}
		if len(g.Errors) == 0 {
			return nil
		}
		code, _ := g.Errors[0].Extensions["code"].(string)
		if code == "RATE_LIMITED" && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond) // the limiter refills one attempt every few seconds
			continue
		}
		return &client.Error{Code: code, Message: g.Errors[0].Message}
	}
}
