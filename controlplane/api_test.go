package controlplane_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func wantAPICode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %s", what, code)
	}
	if got := client.CodeOf(err); got != code {
		t.Fatalf("%s: code %q (%v), want %s", what, got, err, code)
	}
}

func TestAPIAuthorization(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	anon := client.New(s.URL(), "")

	hash, err := auth.HashPassword("reseller-password", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Store().CreateUser(ctx, store.User{Name: "res", Role: store.RoleReseller, PasswordHash: hash, CreatedAt: time.Now()},
		store.NewAuditEvent("test", "", "createUser", "res", "ok"))
	if err != nil {
		t.Fatal(err)
	}
	reseller, _, err := anon.Login(ctx, "res", "reseller-password")
	if err != nil {
		t.Fatal(err)
	}

	adminOnly := map[string]func(*client.Client) error{
		"nodes": func(c *client.Client) error { _, err := c.Nodes(ctx); return err },
		"createJoinToken": func(c *client.Client) error {
			_, err := c.CreateJoinToken(ctx, "n1", "127.0.0.1", []string{"WEB"}, nil)
			return err
		},
		"removeNode":    func(c *client.Client) error { return c.RemoveNode(ctx, "n1") },
		"runNodeAction": func(c *client.Client) error { _, err := c.Ping(ctx, "n1", "", 1); return err },
	}
	for name, call := range adminOnly {
		wantAPICode(t, name+" without token", call(anon), "UNAUTHENTICATED")
		wantAPICode(t, name+" as reseller", call(reseller), "FORBIDDEN")
	}
	wantAPICode(t, "bad token", client.New(s.URL(), "garbage").Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	_, _, err = anon.Login(ctx, "admin", "wrong")
	wantAPICode(t, "wrong password", err, "UNAUTHENTICATED")
	_, _, err = anon.Login(ctx, "nobody", "wrong")
	wantAPICode(t, "unknown user", err, "UNAUTHENTICATED")

	var me struct{ Me struct{ Name, Role string } }
	if err := reseller.Do(ctx, `{me{name role}}`, nil, &me); err != nil || me.Me.Role != "RESELLER" {
		t.Fatalf("me as reseller = %+v, %v", me, err)
	}

	// A bad bearer is refused with 401 before any resolver runs.
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/graphql", strings.NewReader(`{"query":"{me{name}}"}`))
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad bearer: HTTP %d, want 401", resp.StatusCode)
	}
}

func TestAPIInputErrors(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	c := s.Admin
	for _, tc := range []struct {
		name, node, addr string
		roles            []string
		labels           map[string]string
	}{
		{"uppercase name", "Node1", "127.0.0.1", []string{"WEB"}, nil},
		{"name with dot", "a.b", "127.0.0.1", []string{"WEB"}, nil},
		{"empty name", "", "127.0.0.1", []string{"WEB"}, nil},
		{"hostname address", "n1", "example.com", []string{"WEB"}, nil},
		{"unspecified address", "n1", "0.0.0.0", []string{"WEB"}, nil},
		{"no roles", "n1", "127.0.0.1", []string{}, nil},
		{"repeated role", "n1", "127.0.0.1", []string{"WEB", "WEB"}, nil},
		{"bad label", "n1", "127.0.0.1", []string{"WEB"}, map[string]string{"Bad Key": "x"}},
	} {
		_, err := c.CreateJoinToken(ctx, tc.node, tc.addr, tc.roles, tc.labels)
		wantAPICode(t, tc.name, err, "INVALID_INPUT")
	}
	// Nothing was written by any of them.
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 0 {
		t.Fatalf("nodes after refused input = %v, %v", nodes, err)
	}
	err = c.Do(ctx, `mutation{createJoinToken(input:{name:"n1",address:"127.0.0.1",roles:[FTP]}){token}}`, nil, nil)
	wantAPICode(t, "unknown role enum", err, "GRAPHQL_VALIDATION_FAILED")

	wantAPICode(t, "remove unknown", c.RemoveNode(ctx, "nope"), "NOT_FOUND")
	_, err = c.Ping(ctx, "nope", "", 1)
	wantAPICode(t, "ping unknown", err, "NOT_FOUND")
	_, err = c.Ping(ctx, "nope", "bad\x00payload", 1)
	wantAPICode(t, "control character payload", err, "INVALID_INPUT")

	// A declared but not yet enrolled node may get a fresh token; an enrolled
	// one may not.
	if _, err := c.CreateJoinToken(ctx, "n1", "127.0.0.1", []string{"WEB"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJoinToken(ctx, "n1", "127.0.0.1", []string{"WEB"}, nil); err != nil {
		t.Fatalf("re-issue for pending node: %v", err)
	}
	s.StartAgent(t, "n2")
	_, err = c.CreateJoinToken(ctx, "n2", "127.0.0.1", []string{"WEB"}, nil)
	wantAPICode(t, "token for enrolled node", err, "CONFLICT")

	// Every refusal above is in the audit log.
	var out struct {
		AuditEvents struct {
			Edges []struct {
				Node struct{ Action, Result, Actor string }
			}
		}
	}
	if err := c.Do(ctx, `{auditEvents(first:500){edges{node{action result actor}}}}`, nil, &out); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range out.AuditEvents.Edges {
		counts[e.Node.Action+" "+e.Node.Result]++
	}
	if counts["createJoinToken INVALID_INPUT"] != 8 || counts["removeNode NOT_FOUND"] != 1 || counts["createJoinToken CONFLICT"] != 1 || counts["enroll ok"] != 1 {
		t.Fatalf("audit counts = %v", counts)
	}
	// The filter narrows the log server-side.
	var failed struct {
		AuditEvents struct {
			Edges []struct {
				Node struct{ Action, Result string }
			}
		}
	}
	err = c.Do(ctx, `{auditEvents(filter:{action:"createJoinToken",failedOnly:true},first:100){edges{node{action result}}}}`, nil, &failed)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(failed.AuditEvents.Edges); n != 9 {
		t.Fatalf("failed createJoinToken events = %d, want 9", n)
	}
	for _, e := range failed.AuditEvents.Edges {
		if e.Node.Action != "createJoinToken" || e.Node.Result == "ok" {
			t.Fatalf("filter let through %+v", e.Node)
		}
	}
}

func TestHTTPEndpoints(t *testing.T) {
	s := testenv.StartServer(t)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ok", "/metrics": "npanel_leader 1"} {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Admin.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(body, want) {
			t.Fatalf("GET %s = %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	// The console: its page at /graphql, and every script and stylesheet
	// it names served by this server (graph/console tests it in a browser).
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/graphql", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("console page CSP %q", resp.Header.Get("Content-Security-Policy"))
	}
	assets := regexp.MustCompile(`(?:src|href)="(console/[^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(assets) == 0 || !strings.Contains(body, "graphiql.min.js") {
		t.Fatalf("console page does not load GraphiQL: %s", body)
	}
	for _, m := range assets {
		resp, err := http.Get(s.URL() + "/" + m[1])
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); resp.StatusCode != 200 || len(b) == 0 {
			t.Fatalf("GET /%s = %d", m[1], resp.StatusCode)
		}
	}
}

// The controllers' runtime reports per controller on /metrics: the zone
// cluster controller syncs at the start of every term, with no zone yet.
func TestControllerMetrics(t *testing.T) {
	s := testenv.StartServer(t)
	want := []string{
		`npanel_controller_sync_duration_seconds_count{controller="zone-cluster"}`,
		`npanel_controller_queue_depth{controller="zone-cluster"}`,
	}
	testenv.WaitFor(t, 30*time.Second, "controller metrics", func() bool {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+s.Admin.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
