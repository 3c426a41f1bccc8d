package controlplane_test

// Regression tests for the API findings of issue 23 (4, 5, 8, 9, 10, 11):
// each performs the attack through the real API or socket.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/internal/testenv"
)

type gqlResult struct {
	status int
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
	size int
}

func (r gqlResult) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// post sends one GraphQL request on a fresh connection (no keep-alive), as
// a sprayer opening connection after connection would.
func post(t *testing.T, url string, hdr map[string]string, query string, vars map[string]any) gqlResult {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return postRaw(t, url, hdr, body)
}

func postRaw(t *testing.T, url string, hdr map[string]string, body []byte) gqlResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := gqlResult{status: resp.StatusCode, size: len(raw)}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("HTTP %d, not JSON: %.300s", resp.StatusCode, raw)
	}
	return r
}

const loginQuery = `mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}`

func withTrustedLoopback(c *controlplane.Config) {
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
}

// Finding 4: a sprayer over many connections from one IP is limited; the
// real user, from its own IP, is not locked out by an attacker's failures;
// X-Forwarded-For counts only from a trusted proxy.
func TestLoginThrottleByClientIP(t *testing.T) {
	s := testenv.StartServer(t, withTrustedLoopback)
	ctx := testenv.Context(t)
	if _, err := s.Admin.CreateReseller(ctx, "victim", resellerPassword, 1, 100, nil, ""); err != nil {
		t.Fatal(err)
	}
	attacker := map[string]string{"X-Forwarded-For": "198.51.100.7"}
	start := time.Now()
	var tried, limited int
	for i := range 60 {
		// Spraying: a different user name each time, a new connection each time.
		r := post(t, s.URL(), attacker, loginQuery, map[string]any{"u": fmt.Sprintf("user%d", i%5), "p": "Summer2024!x"})
		switch r.code() {
		case "UNAUTHENTICATED":
			tried++
		case "RATE_LIMITED":
			limited++
		default:
			t.Fatalf("spray attempt %d: %+v", i, r)
		}
	}
	elapsed := time.Since(start)
	bound := auth.IPBurst + int(elapsed.Minutes()*auth.IPPerMinute) + 1
	t.Logf("sprayer from one IP over 60 connections: %d attempts checked, %d refused in %s (bound %d per first minute, then %d/min)",
		tried, limited, elapsed.Round(time.Millisecond), auth.IPBurst+auth.IPPerMinute, auth.IPPerMinute)
	if tried > bound {
		t.Fatalf("sprayer got %d password checks in %s, want at most %d", tried, elapsed, bound)
	}

	// The attacker now guesses the victim's password from another IP until
	// refused; the victim, from its own IP, still signs in.
	guesser := map[string]string{"X-Forwarded-For": "198.51.100.8"}
	for range 30 {
		post(t, s.URL(), guesser, loginQuery, map[string]any{"u": "victim", "p": "wrong-password-1"})
	}
	if r := post(t, s.URL(), guesser, loginQuery, map[string]any{"u": "victim", "p": resellerPassword}); r.code() != "RATE_LIMITED" {
		t.Fatalf("guesser's IP after 30 failures: %+v, want RATE_LIMITED", r)
	}
	own := map[string]string{"X-Forwarded-For": "203.0.113.5"}
	if r := post(t, s.URL(), own, loginQuery, map[string]any{"u": "victim", "p": resellerPassword}); r.code() != "" {
		t.Fatalf("victim from its own IP after an attack: %+v, want a token", r)
	}

	// A peer that is not a trusted proxy cannot pick its address: a server
	// trusting no proxy limits the sprayer whatever X-Forwarded-For says.
	s2 := testenv.StartServer(t)
	var checked int
	for i := range 40 {
		fake := map[string]string{"X-Forwarded-For": fmt.Sprintf("192.0.2.%d", i+1)}
		if r := post(t, s2.URL(), fake, loginQuery, map[string]any{"u": "nobody", "p": "Summer2024!x"}); r.code() == "UNAUTHENTICATED" {
			checked++
		}
	}
	if checked > auth.IPBurst+auth.IPPerMinute {
		t.Fatalf("X-Forwarded-For from an untrusted peer: %d checks of 40, want the loopback's limit", checked)
	}
}

// Finding 10: weak passwords are refused and write nothing; login tokens
// are revocable (logout, revokeSessions, changePassword), with RBAC and
// audit.
func TestSessionsAndPasswords(t *testing.T) {
	tn := setupTenants(t)
	s, ctx := tn.s, testenv.Context(t)
	for _, pw := range []string{"passwordpassword", "123456789012", "Password1234", "qwertyuiopas", "iloveyou2024"} {
		_, err := s.Admin.CreateReseller(ctx, "weakling", pw, 1, 100, nil, "")
		wantAPICode(t, "createReseller with "+pw, err, "INVALID_INPUT")
		err = tn.resA.CreateUser(ctx, "weakuser", pw, "alpha1")
		wantAPICode(t, "createUser with "+pw, err, "INVALID_INPUT")
	}
	var users struct{ Users []struct{ Name string } }
	if err := s.Admin.Do(ctx, `{users{name}}`, nil, &users); err != nil {
		t.Fatal(err)
	}
	for _, u := range users.Users {
		if u.Name == "weakling" || u.Name == "weakuser" {
			t.Fatalf("a refused user was written: %v", users.Users)
		}
	}

	// Two sessions of resa; logout from one revokes both.
	c1 := login(t, s, "resa", resellerPassword)
	c2 := login(t, s, "resa", resellerPassword)
	if err := c1.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range []*client.Client{c1, c2, tn.resA} {
		err := c.Do(ctx, `{me{name}}`, nil, nil)
		wantAPICode(t, fmt.Sprintf("session %d after logout", i), err, "UNAUTHENTICATED")
	}
	resA := login(t, s, "resa", resellerPassword)

	// revokeSessions: admin only.
	anon := client.New(s.URL(), "")
	wantAPICode(t, "revokeSessions anonymous", anon.RevokeSessions(ctx, "resb"), "UNAUTHENTICATED")
	wantAPICode(t, "revokeSessions as reseller", resA.RevokeSessions(ctx, "resb"), "FORBIDDEN")
	wantAPICode(t, "revokeSessions as reseller B", tn.resB.RevokeSessions(ctx, "resa"), "FORBIDDEN")
	wantAPICode(t, "revokeSessions as account user", tn.userA.RevokeSessions(ctx, "resb"), "FORBIDDEN")
	wantAPICode(t, "revokeSessions of nobody", s.Admin.RevokeSessions(ctx, "nobody"), "NOT_FOUND")
	if err := tn.resB.Do(ctx, `{me{name}}`, nil, nil); err != nil {
		t.Fatalf("resb revoked by a refused call: %v", err)
	}
	if err := s.Admin.RevokeSessions(ctx, "resb"); err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "resb after revokeSessions", tn.resB.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	wantAPICode(t, "logout anonymous", anon.Logout(ctx), "UNAUTHENTICATED")
	// A websocket signed in before a logout starts no more subscriptions.
	wsc := login(t, s, "resb", resellerPassword)
	ws, _, err := dialWS(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := wsjson.Write(ctx, ws, map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + wsc.Token()}}); err != nil {
		t.Fatal(err)
	}
	var ack struct{ Type string }
	if err := wsjson.Read(ctx, ws, &ack); err != nil || ack.Type != "connection_ack" {
		t.Fatalf("signed-in socket: %v %v", ack, err)
	}
	// ... and one it started before ends at the next change of its account.
	live := map[string]any{"id": "live", "type": "subscribe", "payload": map[string]any{
		"query": `subscription($id:ID!){accountEvents(id:$id){status}}`, "variables": map[string]any{"id": tn.b1.ID}}}
	if err := wsjson.Write(ctx, ws, live); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the subscription live", func() bool { return s.Subscriptions() == 1 })
	if err := wsc.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.AccountAction(ctx, "suspendAccount", tn.b1.ID); err != nil {
		t.Fatal(err)
	}
	// Well before graph.SessionRecheck: the change itself ends it.
	rctx, cancel := context.WithTimeout(ctx, graph.SessionRecheck/3)
	defer cancel()
	for {
		var msg struct {
			ID      string
			Type    string
			Payload json.RawMessage
		}
		if err := wsjson.Read(rctx, ws, &msg); err != nil {
			t.Fatalf("live subscription after logout and a change of its account: %v", err)
		}
		if msg.Type == "ping" || msg.Type == "pong" || msg.Type == "next" && !strings.Contains(string(msg.Payload), "SUSPENDED") {
			continue // the events recorded before the logout
		}
		if msg.Type == "error" && msg.ID == "live" && strings.Contains(string(msg.Payload), "UNAUTHENTICATED") {
			break
		}
		t.Fatalf("live subscription after its session was revoked: %s %s", msg.Type, msg.Payload)
	}
	testenv.WaitFor(t, 20*time.Second, "the subscription ended", func() bool { return s.Subscriptions() == 0 })
	sub := map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
		"query": `subscription($id:ID!){accountEvents(id:$id){status}}`, "variables": map[string]any{"id": tn.b1.ID}}}
	if err := wsjson.Write(ctx, ws, sub); err != nil {
		t.Fatal(err)
	}
	for {
		var msg struct {
			Type    string
			Payload json.RawMessage
		}
		if err := wsjson.Read(ctx, ws, &msg); err != nil {
			t.Fatalf("socket after logout: %v", err)
		}
		if msg.Type == "ping" || msg.Type == "pong" {
			continue
		}
		if msg.Type == "next" && strings.Contains(string(msg.Payload), "UNAUTHENTICATED") {
			break
		}
		t.Fatalf("subscription on a socket whose session was revoked: %s %s", msg.Type, msg.Payload)
	}

	// Every role may log itself out, and only itself.
	for _, who := range []struct{ user, pw string }{
		{"admin", testenv.AdminPassword}, {"resa", resellerPassword}, {"resb", resellerPassword}, {"alphauser", resellerPassword},
	} {
		c := login(t, s, who.user, who.pw)
		if err := c.Logout(ctx); err != nil {
			t.Fatalf("%s logout: %v", who.user, err)
		}
		wantAPICode(t, who.user+" after logout", c.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	}
	wantAPICode(t, "admin's earlier session after its logout", s.Admin.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	admin := login(t, s, "admin", testenv.AdminPassword)
	resA = login(t, s, "resa", resellerPassword)

	// changePassword: weak or wrong refused (nothing changes), then the old
	// token and password stop working.
	_, _, err = resA.ChangePassword(ctx, resellerPassword, "passwordpassword")
	wantAPICode(t, "change to a weak password", err, "INVALID_INPUT")
	_, _, err = resA.ChangePassword(ctx, "not-the-password-9", "a-much-better-pass-42")
	wantAPICode(t, "change with a wrong current password", err, "INVALID_INPUT")
	if err := resA.Do(ctx, `{me{name}}`, nil, nil); err != nil {
		t.Fatalf("refused change revoked the session: %v", err)
	}
	fresh, _, err := resA.ChangePassword(ctx, resellerPassword, "a-much-better-pass-42")
	if err != nil {
		t.Fatal(err)
	}
	wantAPICode(t, "old token after changePassword", resA.Do(ctx, `{me{name}}`, nil, nil), "UNAUTHENTICATED")
	if err := fresh.Do(ctx, `{me{name}}`, nil, nil); err != nil {
		t.Fatalf("token from changePassword: %v", err)
	}
	_, _, err = anon.Login(ctx, "resa", resellerPassword)
	wantAPICode(t, "old password", err, "UNAUTHENTICATED")
	login(t, s, "resa", "a-much-better-pass-42")

	counts := auditCounts(t, admin)
	for _, want := range []string{"logout ok", "revokeSessions ok", "revokeSessions FORBIDDEN", "revokeSessions NOT_FOUND",
		"changePassword ok", "changePassword INVALID_INPUT", "createReseller INVALID_INPUT"} {
		if counts[want] == 0 {
			t.Errorf("no audit event %q in %v", want, counts)
		}
	}
}

func auditCounts(t *testing.T, c *client.Client) map[string]int {
	t.Helper()
	var out struct {
		AuditEvents struct {
			Edges []struct {
				Node struct{ Action, Result string }
			}
		}
	}
	if err := c.Do(context.Background(), `{auditEvents(first:500){edges{node{action result}}}}`, nil, &out); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range out.AuditEvents.Edges {
		counts[e.Node.Action+" "+e.Node.Result]++
	}
	return counts
}

func dialWS(ctx context.Context, s *testenv.Server) (*websocket.Conn, *http.Response, error) {
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL(), "http")+"/graphql",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
}

// Finding 5: sockets must sign in within a few seconds or are closed; an
// unauthenticated connection_init is refused; one IP holds a bounded
// number of sockets and of connections.
func TestWebsocketAndConnectionLimits(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) {
		c.MaxWebsocketsPerIP = 3
		c.MaxConnectionsPerIP = 12
	})
	ctx := testenv.Context(t)

	// Silent socket: closed by the server (InitTimeout), not kept.
	silent, _, err := dialWS(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, _, err = silent.Read(rctx)
	timedOut := rctx.Err() != nil
	cancel()
	if err == nil || timedOut {
		t.Fatalf("a socket that never sent connection_init is still open: %v", err)
	}

	// connection_init without a token: refused, never acknowledged.
	anon, _, err := dialWS(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := wsjson.Write(ctx, anon, map[string]string{"type": "connection_init"}); err != nil {
		t.Fatal(err)
	}
	var msg struct{ Type string }
	if err := wsjson.Read(ctx, anon, &msg); err == nil && msg.Type == "connection_ack" {
		t.Fatal("unauthenticated connection_init was acknowledged")
	}
	anon.CloseNow()

	// Per-IP cap: three signed-in sockets, the fourth upgrade refused.
	var held []*websocket.Conn
	for i := range 3 {
		c, _, err := dialWS(ctx, s)
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		held = append(held, c)
	}
	_, resp, err := dialWS(ctx, s)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth socket from one IP: %v (%v), want HTTP 429", err, resp)
	}
	held[0].CloseNow()
	testenv.WaitFor(t, 20*time.Second, "a socket slot to free up", func() bool {
		c, _, err := dialWS(ctx, s)
		if err != nil {
			return false
		}
		held[0] = c
		return true
	})
	for _, c := range held {
		c.CloseNow()
	}

	// Per-IP connection cap on the listener: past it, connections are
	// closed as soon as accepted; the API still answers once they go.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := false
	for range 40 {
		c, err := net.Dial("tcp", s.APIAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatalf("40 connections held from one IP, cap 12")
	}
	if len(conns) > 13 {
		t.Fatalf("connection %d was the first refused, cap 12", len(conns))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	testenv.WaitFor(t, 20*time.Second, "the API to answer again", func() bool {
		return s.Admin.Do(ctx, `{me{name}}`, nil, nil) == nil
	})
}

// An IPv6 client is one /64 for every per-client limit: addresses of one
// /64 (here behind a trusted proxy) share the websocket cap and the
// refusal audit's bucket; another /64 has its own.
func TestIPv6ClientLimitsByPrefix(t *testing.T) {
	s := testenv.StartServer(t, withTrustedLoopback, func(c *controlplane.Config) { c.MaxWebsocketsPerIP = 2 })
	ctx := testenv.Context(t)
	dialFrom := func(ip string) (*websocket.Conn, *http.Response, error) {
		return websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL(), "http")+"/graphql", &websocket.DialOptions{
			Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: http.Header{"X-Forwarded-For": {ip}}})
	}
	for i := range 2 {
		c, _, err := dialFrom(fmt.Sprintf("2001:db8:1:2::%x", i+1))
		if err != nil {
			t.Fatalf("socket %d of the /64: %v", i, err)
		}
		defer c.CloseNow()
	}
	if _, resp, err := dialFrom("2001:db8:1:2:ffff::9"); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third socket from one /64: %v (%v), want HTTP 429", err, resp)
	}
	c, _, err := dialFrom("2001:db8:1:3::1")
	if err != nil {
		t.Fatalf("socket from another /64: %v", err)
	}
	c.CloseNow()

	for i := range 20 {
		post(t, s.URL(), map[string]string{"Authorization": "Bearer forged-token",
			"X-Forwarded-For": fmt.Sprintf("2001:db8:1:2::%x", 100+i)}, `{me{name}}`, nil)
	}
	var counts map[string]int
	testenv.WaitFor(t, 20*time.Second, "bad tokens in the audit log", func() bool {
		counts = auditCounts(t, s.Admin)
		return counts["badToken invalid token"] > 0
	})
	if n := counts["badToken invalid token"]; n > 6 {
		t.Fatalf("20 bad tokens from one /64 wrote %d audit events, want at most the per-source burst", n)
	}
}

// Finding 8: tenants see a node's name and address only, on every path.
func TestTenantsSeeNodeNameOnly(t *testing.T) {
	tn := setupTenants(t)
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 60*time.Second, "alpha1 to be placed", func() bool {
		a, err := tn.admin.Account(ctx, "alpha1")
		return err == nil && a.Node != nil
	})
	const full = `query($u:String!){account(username:$u){node{name address os kernel arch capacity{cpus} capabilities services{name}}}}`
	const names = `query($u:String!){account(username:$u){node{name address}}}`
	for _, tc := range []struct {
		who  string
		c    *client.Client
		full bool
	}{{"admin", tn.admin, true}, {"reseller A", tn.resA, false}, {"account user", tn.userA, false}} {
		var out struct {
			Account struct {
				Node *struct{ Name, Address string }
			}
		}
		if err := tc.c.Do(ctx, names, map[string]any{"u": "alpha1"}, &out); err != nil || out.Account.Node == nil ||
			out.Account.Node.Name == "" || out.Account.Node.Address == "" {
			t.Fatalf("%s: node name and address = %+v, %v", tc.who, out.Account.Node, err)
		}
		r := post(t, tn.s.URL(), map[string]string{"Authorization": "Bearer " + tc.c.Token()}, full, map[string]any{"u": "alpha1"})
		if tc.full {
			if len(r.Errors) > 0 {
				t.Fatalf("admin reading node details: %+v", r.Errors)
			}
			continue
		}
		if r.code() != "FORBIDDEN" || strings.Contains(string(r.Data), "capacity") || strings.Contains(string(r.Data), "kernel") {
			t.Fatalf("%s reading node details: %s %+v", tc.who, r.Data, r.Errors)
		}
	}
	// Reseller B sees nothing of A's account at all.
	var out struct{ Account *struct{ Username string } }
	if err := tn.resB.Do(ctx, `query{account(username:"alpha1"){username}}`, nil, &out); err != nil || out.Account != nil {
		t.Fatalf("reseller B reading A's account: %+v, %v", out.Account, err)
	}
}

// Finding 9: refusals are audited under a rate limit, and what the limit
// drops is counted.
func TestRefusalsAuditedRateLimited(t *testing.T) {
	tn := setupTenants(t)
	s, ctx := tn.s, testenv.Context(t)
	for range 40 {
		post(t, s.URL(), map[string]string{"Authorization": "Bearer forged-token"}, `{me{name}}`, nil)
	}
	// Cross-tenant read, GET mutation, refused websocket.
	var out struct{ Account *struct{ Username string } }
	if err := tn.resB.Do(ctx, `query($i:ID){account(id:$i){username}}`, map[string]any{"i": tn.a1.ID}, &out); err != nil || out.Account != nil {
		t.Fatalf("cross-tenant read: %+v %v", out.Account, err)
	}
	resp, err := http.Get(s.URL() + "/graphql?query=" + strings.ReplaceAll(`mutation{logout}`, " ", "%20"))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(body, "METHOD_NOT_ALLOWED") {
		t.Fatalf("GET mutation: %d %s", resp.StatusCode, body)
	}
	ws, _, err := dialWS(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	_ = wsjson.Write(ctx, ws, map[string]string{"type": "connection_init"})
	var msg struct{ Type string }
	_ = wsjson.Read(ctx, ws, &msg)
	ws.CloseNow()

	// A genuine NOT_FOUND is no refusal: not audited.
	if err := tn.resB.Do(ctx, `query{account(id:"no-such-account"){username}}`, nil, &out); err != nil || out.Account != nil {
		t.Fatalf("read of a missing account: %+v %v", out.Account, err)
	}

	var counts map[string]int
	testenv.WaitFor(t, 20*time.Second, "refusals in the audit log", func() bool {
		counts = auditCounts(t, s.Admin)
		return counts["badToken invalid token"] > 0 && counts["read.account NOT_FOUND"] > 0 &&
			counts["getMutation METHOD_NOT_ALLOWED"] > 0 && counts["websocket UNAUTHENTICATED"] > 0
	})
	if n := counts["badToken invalid token"]; n > 6 {
		t.Fatalf("40 bad tokens from one IP wrote %d audit events, want at most the per-source burst", n)
	}
	// The cross-tenant read once, and the missing account not at all.
	if counts["read.account NOT_FOUND"] != 1 || counts["read.field NOT_FOUND"] != 0 {
		t.Fatalf("one refused read and one missing account audited as %v", counts)
	}

	// One request of 500 aliased mutations of another tenant's account:
	// a bounded number of audit events, the rest counted as suppressed.
	evs := auditSince(t, s.Store(), "")
	last := evs[len(evs)-1].ID
	var q strings.Builder
	q.WriteString("mutation($i:ID!){")
	for i := range 500 {
		fmt.Fprintf(&q, "s%d:suspendAccount(id:$i){id} ", i)
	}
	q.WriteString("}")
	if r := post(t, s.URL(), map[string]string{"Authorization": "Bearer " + tn.resB.Token()}, q.String(),
		map[string]any{"i": tn.a1.ID}); r.code() != "NOT_FOUND" {
		t.Fatalf("500 aliased suspendAccount of another tenant's account: %+v", r.Errors)
	}
	if a, err := s.Admin.Account(ctx, tn.a1.ID); err != nil || a.Suspended {
		t.Fatalf("the refused mutations suspended the account: %+v %v", a, err)
	}
	written := 0
	for _, ev := range auditSince(t, s.Store(), last) {
		if ev.Action == "suspendAccount" {
			written++
		}
	}
	if written == 0 || written > 6 {
		t.Fatalf("500 refused mutations wrote %d audit events, want 1 to the per-source burst", written)
	}
	if n := suppressed(t, s, "refusedMutation"); n < float64(500-written) {
		t.Fatalf("suppressed refusedMutation events = %g, want at least %d", n, 500-written)
	}
	// 40 refused, at most 5 written: at least 35 counted.
	if n := suppressed(t, s, "badToken"); n < 35 {
		t.Fatalf("suppressed badToken events = %g, want at least 35", n)
	}
}

// suppressed reads npanel_audit_suppressed_total for kind from /metrics.
func suppressed(t *testing.T, s *testenv.Server, kind string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.Admin.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	prefix := `npanel_audit_suppressed_total{kind="` + kind + `"} `
	for _, l := range strings.Split(readAll(t, resp), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			var n float64
			if _, err := fmt.Sscanf(v, "%g", &n); err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			return n
		}
	}
	return 0
}

// Finding 11: introspection for signed-in callers, /metrics behind a
// token, errors capped, 413 for a large body.
func TestAPIExposureLimits(t *testing.T) {
	const metricsToken = "scrape-token-0123456789abcdefghijklmnop"
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.MetricsToken = metricsToken })
	ctx := testenv.Context(t)
	const intro = `{__schema{types{name}}}`
	if r := post(t, s.URL(), nil, intro, nil); r.code() != "UNAUTHENTICATED" || strings.Contains(string(r.Data), "Account") {
		t.Fatalf("anonymous introspection: %s %+v", r.Data, r.Errors)
	}
	if r := post(t, s.URL(), map[string]string{"Authorization": "Bearer " + s.Admin.Token()}, intro, nil); len(r.Errors) > 0 || !strings.Contains(string(r.Data), "Account") {
		t.Fatalf("signed-in introspection: %+v", r.Errors)
	}
	open := testenv.StartServer(t, func(c *controlplane.Config) { c.PublicIntrospection = true })
	if r := post(t, open.URL(), nil, intro, nil); len(r.Errors) > 0 {
		t.Fatalf("introspection with --public-introspection: %+v", r.Errors)
	}

	if _, err := s.Admin.CreateReseller(ctx, "scraper", resellerPassword, 1, 100, nil, ""); err != nil {
		t.Fatal(err)
	}
	res := login(t, s, "scraper", resellerPassword)
	for _, tc := range []struct {
		bearer string
		want   int
	}{{"", 401}, {"garbage", 401}, {res.Token(), 403}, {s.Admin.Token(), 200}, {metricsToken, 200}} {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/metrics", nil)
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != tc.want || (tc.want == 200) != strings.Contains(body, "npanel_leader") {
			t.Fatalf("/metrics with bearer %.8q: %d, want %d", tc.bearer, resp.StatusCode, tc.want)
		}
	}

	// A 340 KB document of unknown fields: a short error list.
	var q strings.Builder
	q.WriteString("{")
	for i := 0; q.Len() < 340_000; i++ {
		fmt.Fprintf(&q, " f%d", i)
	}
	q.WriteString("}")
	r := post(t, s.URL(), map[string]string{"Authorization": "Bearer " + s.Admin.Token()}, q.String(), nil)
	if len(r.Errors) == 0 || len(r.Errors) > 21 || r.size > 64<<10 {
		t.Fatalf("340 KB query: %d errors, %d bytes of response", len(r.Errors), r.size)
	}
	// ... refused by the parser's token limit, before validation walks it.
	if !strings.Contains(r.Errors[0].Message, "token limit") {
		t.Fatalf("340 KB query: %q, want the parser's token limit", r.Errors[0].Message)
	}
	// Under the token limit, a document with thousands of errors.
	q.Reset()
	q.WriteString("{")
	for i := range 3000 {
		fmt.Fprintf(&q, " f%d", i)
	}
	q.WriteString("}")
	r = post(t, s.URL(), map[string]string{"Authorization": "Bearer " + s.Admin.Token()}, q.String(), nil)
	if len(r.Errors) != 21 || r.size > 16<<10 {
		t.Fatalf("3000 unknown fields: %d errors, %d bytes, want 20 and a count", len(r.Errors), r.size)
	}

	// Over the body limit: 413, not INTERNAL; whether the client declares
	// the length (and waits for 100 Continue, as curl does for large
	// bodies) or streams it chunked.
	big := append([]byte(`{"query":"{me{name}}","variables":{"x":"`), bytes.Repeat([]byte("a"), 2<<20)...)
	big = append(big, `"}}`...)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: 30 * time.Second}}
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(big)
		if chunked {
			// One byte over the limit: the server stops reading there.
			body = io.MultiReader(bytes.NewReader(big[:1<<20+1]))
		}
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/graphql", body)
		req.Header.Set("Content-Type", "application/json")
		if !chunked {
			req.Header.Set("Expect", "100-continue")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("large body (chunked %v): %v", chunked, err)
		}
		text := readAll(t, resp)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(text, "REQUEST_TOO_LARGE") {
			t.Fatalf("large body (chunked %v): HTTP %d %s", chunked, resp.StatusCode, text)
		}
	}
}
