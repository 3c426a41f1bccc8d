package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/oklog/ulid/v2"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/internal/testenv"
)

// wsConn is one graphql-transport-ws connection driven by hand, so that a
// test can open and close many subscriptions on it as an attacker would.
type wsConn struct {
	c *websocket.Conn
}

type wsMsg struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func signInWS(tb testing.TB, ctx context.Context, s *testenv.Server, token string) *wsConn {
	tb.Helper()
	c, _, err := dialWS(ctx, s)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	w := &wsConn{c: c}
	init := map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + token}}
	if err := wsjson.Write(ctx, c, init); err != nil {
		tb.Fatal(err)
	}
	if m := w.read(tb, ctx); m.Type != "connection_ack" {
		tb.Fatalf("connection_init answered %+v", m)
	}
	return w
}

func (w *wsConn) read(tb testing.TB, ctx context.Context) wsMsg {
	tb.Helper()
	for {
		var m wsMsg
		if err := wsjson.Read(ctx, w.c, &m); err != nil {
			tb.Fatalf("websocket read: %v", err)
		}
		if m.Type == "ping" {
			_ = wsjson.Write(ctx, w.c, map[string]string{"type": "pong"})
			continue
		}
		return m
	}
}

const eventsQuery = `subscription($id:ID!){accountEvents(id:$id){status}}`

func (w *wsConn) subscribe(tb testing.TB, ctx context.Context, id, account string) {
	tb.Helper()
	msg := map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": eventsQuery, "variables": map[string]any{"id": account}}}
	if err := wsjson.Write(ctx, w.c, msg); err != nil {
		tb.Fatal(err)
	}
}

func (w *wsConn) complete(tb testing.TB, ctx context.Context, id string) {
	tb.Helper()
	if err := wsjson.Write(ctx, w.c, map[string]any{"id": id, "type": "complete"}); err != nil {
		tb.Fatal(err)
	}
}

// waitError reads until the server refuses or ends subscription id (any,
// for "") with an error and returns its code: a refusal comes as a "next" carrying errors,
// an end as an "error" message.
func (w *wsConn) waitError(tb testing.TB, ctx context.Context, id string) string {
	tb.Helper()
	type gqlErr struct {
		Message    string                `json:"message"`
		Extensions struct{ Code string } `json:"extensions"`
	}
	for {
		m := w.read(tb, ctx)
		if id != "" && m.ID != id {
			continue
		}
		var errs []gqlErr
		switch m.Type {
		case "next":
			var r struct{ Errors []gqlErr }
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				tb.Fatalf("next payload %s: %v", m.Payload, err)
			}
			errs = r.Errors
		case "error":
			if err := json.Unmarshal(m.Payload, &errs); err != nil {
				tb.Fatalf("error payload %s: %v", m.Payload, err)
			}
		case "complete":
			if id != "" {
				tb.Fatalf("subscription %s completed without an error", id)
			}
		}
		if len(errs) > 0 {
			return errs[0].Extensions.Code
		}
	}
}

// tenantLoad is an account user on a server with a real agent, whose
// account has a database record on a node that never answers.
type tenantLoad struct {
	s       *testenv.Server
	user    *client.Client
	token   string
	account string
}

func setupTenantLoad(tb testing.TB) *tenantLoad {
	tb.Helper()
	s := testenv.StartServer(tb)
	ctx := testenv.Context(tb)
	// The account lands on the fake node, the only one when it is placed.
	s.FakeNode(tb, "n-fake", nil, 10, 10_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "basic", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 5, PHPVersions: []string{"8.2"}}); err != nil {
		tb.Fatal(err)
	}
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "tload", Domain: "tload.example.com", Plan: "basic"})
	if err != nil {
		tb.Fatal(err)
	}
	testenv.WaitFor(tb, 10*time.Second, "account placed", func() bool {
		a, err := s.Admin.Account(ctx, acct.ID)
		return err == nil && a != nil && a.Node != nil
	})
	// A database record, so that a databases() read has something to size.
	err = s.Store().ChangeDatabases(ctx, acct.ID, "test", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		return &store.DatabaseChange{Databases: []*store.Database{{Name: "tload_shop", Owner: "tload", Engine: "mariadb"}}}, nil
	}, store.AuditEvent{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Admin.CreateUser(ctx, "tloaduser", "correct horse battery staple", "tload"); err != nil {
		tb.Fatal(err)
	}
	user, token, err := client.New(s.URL(), "").Login(ctx, "tloaduser", "correct horse battery staple")
	if err != nil {
		tb.Fatal(err)
	}
	s.StartAgent(tb, "node-a")
	return &tenantLoad{s: s, user: user, token: token, account: acct.ID}
}

// churn opens and closes n subscriptions to the account, spread over conns
// websockets in turn, as fast as the server takes them.
func (l *tenantLoad) churn(tb testing.TB, ctx context.Context, conns, n int) {
	tb.Helper()
	for c := range conns {
		w := signInWS(tb, ctx, l.s, l.token)
		for i := range n / conns {
			id := fmt.Sprintf("c%d-%d", c, i)
			w.subscribe(tb, ctx, id, l.account)
			w.complete(tb, ctx, id)
		}
		// A round trip on the socket: every subscribe above has been
		// handled once the server answers one sent after them.
		w.subscribe(tb, ctx, "last", "no-such-account")
		w.waitError(tb, ctx, "last")
		w.c.CloseNow()
	}
}

func aliasedDatabases(n int) string {
	var b strings.Builder
	b.WriteString(`query($a:ID!){`)
	for i := range n {
		fmt.Fprintf(&b, "d%d: databases(account:$a){name sizeBytes live} ", i)
	}
	b.WriteString("}")
	return b.String()
}

// auditSince returns the audit events after the one with id after.
func auditSince(tb testing.TB, st *store.Store, after string) []store.AuditEvent {
	tb.Helper()
	var out []store.AuditEvent
	for {
		evs, next, more, err := st.ListAudit(context.Background(), store.AuditFilter{}, after, 1000)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, evs...)
		if !more {
			return out
		}
		after = next
	}
}

// TestTenantCannotStallTaskDelivery is issue 23's finding 2 as an attack:
// an account user opens and closes thousands of accountEvents
// subscriptions and sends a databases() query with 400 aliases. Afterwards
// a ping still makes the round trip to a node, no goroutine is left
// behind, and the reads wrote no task and no audit event. The caps hold:
// a connection and a user over theirs are refused with QUOTA_EXCEEDED.
func TestTenantCannotStallTaskDelivery(t *testing.T) {
	l := setupTenantLoad(t)
	ctx := testenv.Context(t)
	st := l.s.Store()
	if task, err := l.s.Admin.Ping(ctx, "node-a", "before", 20); err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping before the load: %+v %v", task, err)
	}
	tasksBefore, err := st.CountTasksBy(ctx, "tloaduser")
	if err != nil {
		t.Fatal(err)
	}
	seen := auditSince(t, st, "")
	lastAudit := seen[len(seen)-1].ID
	goroutinesBefore := runtime.NumGoroutine()

	l.churn(t, ctx, 4, 4000)

	// One request, 400 reads of the account's databases.
	var out map[string][]client.Database
	if err := l.user.Do(ctx, aliasedDatabases(400), map[string]any{"a": l.account}, &out); err != nil {
		t.Fatalf("aliased databases: %v", err)
	}
	if len(out) != 400 || len(out["d0"]) != 1 || out["d0"][0].Name != "tload_shop" {
		t.Fatalf("aliased databases answered %d fields: %+v", len(out), out["d0"])
	}

	// The caps: 50 on one socket, then 200 for the user in all. All four
	// sockets come from 127.0.0.1: each holds its own 50, the cap being
	// per socket, not per client address.
	var socks []*wsConn
	for c := range 4 {
		w := signInWS(t, ctx, l.s, l.token)
		defer w.c.CloseNow()
		socks = append(socks, w)
		for i := range graph.MaxSubscriptionsPerConnection {
			w.subscribe(t, ctx, fmt.Sprintf("cap%d-%d", c, i), l.account)
		}
		if c == 0 {
			// Subscriptions on a socket start concurrently: whichever
			// comes last is refused.
			w.subscribe(t, ctx, "over-conn", l.account)
			if code := w.waitError(t, ctx, ""); code != "QUOTA_EXCEEDED" {
				t.Errorf("subscription over the connection cap: %s", code)
			}
		}
		want := (c + 1) * graph.MaxSubscriptionsPerConnection
		testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d subscriptions live on %d sockets", want, c+1), func() bool {
			return l.s.Subscriptions() == want
		})
	}
	if n := l.s.Subscriptions(); n != graph.MaxSubscriptionsPerUser {
		t.Fatalf("%d subscriptions live on 4 full sockets, want the user's cap %d", n, graph.MaxSubscriptionsPerUser)
	}
	extra := signInWS(t, ctx, l.s, l.token)
	extra.subscribe(t, ctx, "over-user", l.account)
	if code := extra.waitError(t, ctx, "over-user"); code != "QUOTA_EXCEEDED" {
		t.Errorf("subscription over the user cap: %s", code)
	}
	extra.c.CloseNow()
	for _, w := range socks {
		w.c.Close(websocket.StatusNormalClosure, "")
	}

	tasksAfter, err := st.CountTasksBy(ctx, "tloaduser")
	if err != nil {
		t.Fatal(err)
	}
	if tasksAfter != tasksBefore {
		t.Errorf("the reads wrote %d tasks", tasksAfter-tasksBefore)
	}
	for _, ev := range auditSince(t, st, lastAudit) {
		if ev.Actor == "tloaduser" {
			t.Errorf("the reads wrote an audit event: %+v", ev)
		}
	}

	// Task delivery is unharmed: a ping makes the round trip in seconds.
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	task, err := l.s.Admin.Ping(pctx, "node-a", "after", 10)
	if err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping after the load: %+v %v (after %s)", task, err, time.Since(start))
	}
	t.Logf("ping after the load: %s", time.Since(start))

	// Nothing is left behind.
	testenv.WaitFor(t, 30*time.Second, "subscriptions ended", func() bool { return l.s.Subscriptions() == 0 })
	const slack = 30 // the ping's connection, timers, the agent's idle work
	var now int
	testenv.WaitFor(t, 60*time.Second, "goroutines back to where they were", func() bool {
		now = runtime.NumGoroutine()
		return now <= goroutinesBefore+slack
	})
	t.Logf("goroutines: %d before, %d after", goroutinesBefore, now)
}

// A task the gateway cannot send (here a queue entry that does not decode,
// standing for a wedged queue watch) turns its node SUSPECT with the
// reason once it has waited TaskStallAfter, and READY again once it is
// gone, while heartbeats and the lease say all is well.
func TestStalledDeliveryTurnsNodeSuspect(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.TaskStallAfter = time.Second })
	s.StartAgent(t, "node-a")
	ctx := testenv.Context(t)
	st := s.Store()
	status := func() (store.NodeStatus, string) {
		v, err := st.GetNode(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		return v.State.Status, v.State.StatusReason
	}
	testenv.WaitFor(t, 20*time.Second, "node-a READY", func() bool { s, _ := status(); return s == store.NodeReady })

	// Written raw: the store itself never writes what it cannot decode.
	key := "/npanel/queue/node-a/" + ulid.Make().String()
	if _, err := s.RawEtcd(t).Put(ctx, key, "\xff not a task"); err != nil {
		t.Fatal(err)
	}
	var reason string
	testenv.WaitFor(t, 30*time.Second, "node-a SUSPECT", func() bool {
		var s store.NodeStatus
		s, reason = status()
		return s == store.NodeSuspect
	})
	if !strings.Contains(reason, "task delivery stalled") {
		t.Errorf("reason: %q", reason)
	}
	t.Logf("SUSPECT: %s", reason)

	if _, err := s.RawEtcd(t).Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "node-a READY again", func() bool {
		s, r := status()
		return s == store.NodeReady && r == ""
	})
	if task, err := s.Admin.Ping(ctx, "node-a", "after", 20); err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping: %+v %v", task, err)
	}
}
