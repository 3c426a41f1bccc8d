package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
	"github.com/npanel/npanel/protos/agentpb"
)

// wantRPC fails unless err is a gRPC error with one of codes.
func wantRPC(t *testing.T, what string, err error, cs ...codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %v", what, cs)
	}
	got := status.Code(err)
	for _, c := range cs {
		if got == c {
			return
		}
	}
	t.Fatalf("%s: code %s (%v), want one of %v", what, got, err, cs)
}

// foreignCert is a node certificate for name issued by a CA of its own.
func foreignCert(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	m, err := ca.GenerateMaterial("other")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.New(m, ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := other.NewJoinToken(name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	csr, _ := pki.NewNodeCSR(key, name, nil)
	chain, _, err := other.Enroll(context.Background(), tok, csr, func(pki.JoinClaims) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		cert.Certificate = append(cert.Certificate, x.Raw)
	}
	return cert
}

// declare declares a node (role BACKUP) and returns its join token.
func (c *cluster) declare(t *testing.T, name string) string {
	t.Helper()
	tok, err := c.admin.CreateJoinToken(context.Background(), name, "127.0.0.1", []string{"BACKUP"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// connectRefused is a vector opening an agent stream with a certificate
// that must not be accepted.
func connectRefused(name, attempt string, cert func(t *testing.T, c *cluster) *tls.Certificate, cs ...codes.Code) vector {
	return vector{name: name, attempt: attempt, refusal: "the stream is refused (" + codesString(cs) + ")",
		run: func(t *testing.T, c *cluster) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := testenv.OpenStream(ctx, c.gatewayClient(t, cert(t, c)))
			wantRPC(t, "connect", err, cs...)
		}}
}

// enrollRefused is a vector enrolling with a token that must not be
// accepted.
func enrollRefused(name, attempt string, token func(t *testing.T, c *cluster) (tok, node string), cs ...codes.Code) vector {
	return vector{name: name, attempt: attempt, refusal: "enrolment refused (" + codesString(cs) + "); no certificate issued",
		run: func(t *testing.T, c *cluster) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tok, node := token(t, c)
			_, err := testenv.EnrollNode(ctx, c.enrollClient(t), tok, node)
			wantRPC(t, "enrol", err, cs...)
		}}
}

func parallel(v vector) vector {
	v.parallel = true
	return v
}

func codesString(cs []codes.Code) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.String())
	}
	return strings.Join(s, " or ")
}

func gatewayVectors() []vector {
	ctx := context.Background()
	vs := []vector{
		connectRefused("no client certificate", "an agent stream without a client certificate",
			func(*testing.T, *cluster) *tls.Certificate { return nil }, codes.Unauthenticated, codes.Unavailable),
		connectRefused("certificate from another CA", "a node certificate for node-a issued by another CA",
			func(t *testing.T, c *cluster) *tls.Certificate { return foreignCert(t, "node-a") }, codes.Unauthenticated, codes.Unavailable),
		connectRefused("certificate of another CA for an undeclared node", "a foreign CA's certificate for a name the cluster never declared",
			func(t *testing.T, c *cluster) *tls.Certificate { return foreignCert(t, "ghost") }, codes.Unauthenticated, codes.Unavailable),
		connectRefused("removed node's certificate", "node-d enrols, is removed, and connects with its certificate",
			func(t *testing.T, c *cluster) *tls.Certificate {
				cert := c.enrollNode(t, "node-d")
				if err := c.admin.RemoveNode(ctx, "node-d"); err != nil {
					t.Fatal(err)
				}
				return cert
			}, codes.PermissionDenied),
		connectRefused("removed and re-added node's old certificate", "node-e enrols, is removed and declared again; its old certificate connects",
			func(t *testing.T, c *cluster) *tls.Certificate {
				cert := c.enrollNode(t, "node-e")
				if err := c.admin.RemoveNode(ctx, "node-e"); err != nil {
					t.Fatal(err)
				}
				c.enrollNode(t, "node-e")
				return cert
			}, codes.PermissionDenied),
		{name: "renew without certificate", attempt: "Renew with no client certificate", refusal: "Unauthenticated",
			run: func(t *testing.T, c *cluster) {
				_, err := c.gatewayClient(t, nil).Renew(ctx, &agentpb.RenewRequest{})
				wantRPC(t, "renew", err, codes.Unauthenticated, codes.Unavailable)
			}},
		{name: "renew with foreign certificate", attempt: "Renew with another CA's certificate for node-a", refusal: "Unauthenticated or Unavailable",
			run: func(t *testing.T, c *cluster) {
				_, err := c.gatewayClient(t, foreignCert(t, "node-a")).Renew(ctx, &agentpb.RenewRequest{})
				wantRPC(t, "renew", err, codes.Unauthenticated, codes.Unavailable)
			}},
		{name: "renew issues only the caller's name", attempt: "node-b renews and hopes for a certificate naming another node",
			refusal: "the renewed certificate names node-b only", run: func(t *testing.T, c *cluster) {
				resp, err := c.gatewayClient(t, c.nodeBCert).Renew(ctx, &agentpb.RenewRequest{})
				if err != nil {
					t.Fatal(err)
				}
				chain := resp.GetCertificateChain()
				if len(chain) == 0 {
					t.Fatal("no chain")
				}
				x, err := x509.ParseCertificate(chain[0])
				if err != nil {
					t.Fatal(err)
				}
				if x.Subject.CommonName != "node-b" || len(x.DNSNames) > 1 || len(x.DNSNames) == 1 && x.DNSNames[0] != "node-b" {
					t.Fatalf("renewed certificate: CN %q SANs %v", x.Subject.CommonName, x.DNSNames)
				}
			}},
		enrollRefused("reused join token", "a join token used a second time",
			func(t *testing.T, c *cluster) (string, string) {
				tok := c.declare(t, "node-f")
				if _, err := testenv.EnrollNode(ctx, c.enrollClient(t), tok, "node-f"); err != nil {
					t.Fatal(err)
				}
				return tok, "node-f"
			}, codes.PermissionDenied),
		enrollRefused("join token for another node", "node-g's join token with a CSR naming node-h",
			func(t *testing.T, c *cluster) (string, string) {
				tok := c.declare(t, "node-g")
				c.declare(t, "node-h")
				return tok, "node-h"
			}, codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied),
		enrollRefused("join token naming an enrolled node", "node-i's token with a CSR naming node-a, which is enrolled",
			func(t *testing.T, c *cluster) (string, string) { return c.declare(t, "node-i"), "node-a" },
			codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied),
		enrollRefused("garbage join token", "a join token that is no token",
			func(*testing.T, *cluster) (string, string) { return "not-a-token", "node-x" }, codes.Unauthenticated, codes.InvalidArgument),
		enrollRefused("empty join token", "an empty join token",
			func(*testing.T, *cluster) (string, string) { return "", "node-x" }, codes.Unauthenticated, codes.InvalidArgument),
		enrollRefused("join token of another CA", "a join token signed by another CA for a declared node",
			func(t *testing.T, c *cluster) (string, string) {
				c.declare(t, "node-j")
				m, err := ca.GenerateMaterial("other")
				if err != nil {
					t.Fatal(err)
				}
				other, err := ca.New(m, ca.Options{})
				if err != nil {
					t.Fatal(err)
				}
				tok, _, err := other.NewJoinToken("node-j", nil, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				return tok, "node-j"
			}, codes.Unauthenticated),
		enrollRefused("join token for an undeclared node", "a validly signed token for a node never declared",
			func(t *testing.T, c *cluster) (string, string) {
				tok, _, err := c.s.CA().NewJoinToken("ghost", nil, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				return tok, "ghost"
			}, codes.PermissionDenied),
		enrollRefused("join token of a removed node", "a token issued for node-k, used after node-k was removed",
			func(t *testing.T, c *cluster) (string, string) {
				tok := c.declare(t, "node-k")
				if err := c.admin.RemoveNode(ctx, "node-k"); err != nil {
					t.Fatal(err)
				}
				return tok, "node-k"
			}, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound),
		parallel(enrollRefused("expired join token", "a join token used after it expired",
			func(t *testing.T, c *cluster) (string, string) {
				c.declare(t, "node-l")
				tok, _, err := c.s.CA().NewJoinToken("node-l", nil, ca.MinJoinTokenTTL)
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(ca.MinJoinTokenTTL + time.Second) // the token's own clock: no way to poll expiry
				return tok, "node-l"
			}, codes.Unauthenticated)),
		{name: "enrol with a garbage CSR", attempt: "a valid token with a CSR that is not DER", refusal: "InvalidArgument; the token is not burnt",
			run: func(t *testing.T, c *cluster) {
				tok := c.declare(t, "node-m")
				_, err := c.enrollClient(t).Enroll(ctx, &agentpb.EnrollRequest{JoinToken: tok, Csr: []byte("garbage")})
				wantRPC(t, "enrol", err, codes.InvalidArgument, codes.Unauthenticated)
				if _, err := testenv.EnrollNode(ctx, c.enrollClient(t), tok, "node-m"); err != nil {
					t.Fatalf("rightful enrolment after the refused one: %v", err)
				}
			}},
		{name: "enrol with an oversized CSR", attempt: "an enrolment request of 8 MB", refusal: "ResourceExhausted before any work",
			run: func(t *testing.T, c *cluster) {
				_, err := c.enrollClient(t).Enroll(ctx, &agentpb.EnrollRequest{JoinToken: "x", Csr: make([]byte, 8<<20)})
				wantRPC(t, "enrol", err, codes.ResourceExhausted)
			}},
		{name: "oversized stream message", attempt: "node-b sends a 8 MB hello on its stream", refusal: "ResourceExhausted; the gateway keeps serving",
			run: func(t *testing.T, c *cluster) {
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				st, err := c.gatewayClient(t, c.nodeBCert).Connect(sctx)
				if err != nil {
					t.Fatal(err)
				}
				_ = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: &agentpb.Hello{
					AgentVersion: strings.Repeat("x", 8<<20)}}})
				_, err = st.Recv()
				wantRPC(t, "recv", err, codes.ResourceExhausted, codes.InvalidArgument)
				if _, err := testenv.OpenStream(sctx, c.gatewayClient(t, c.nodeBCert)); err != nil {
					t.Fatalf("gateway after the oversized message: %v", err)
				}
			}},
		{name: "result before hello", attempt: "node-b sends a task result as its first message", refusal: "the stream is closed with an error",
			run: func(t *testing.T, c *cluster) {
				sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				st, err := c.gatewayClient(t, c.nodeBCert).Connect(sctx)
				if err != nil {
					t.Fatal(err)
				}
				_ = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: &agentpb.TaskResult{TaskId: "x", Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}}})
				m, err := st.Recv()
				if err == nil {
					t.Fatalf("stream answered %v", m)
				}
			}},
		{name: "other node's tasks", attempt: "node-b's stream waits for tasks while node-c has one pending",
			refusal: "node-b receives only its own task, never node-c's", run: func(t *testing.T, c *cluster) {
				forC := c.enqueuePing(t, "node-c", "for c")
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				st, err := testenv.OpenStream(sctx, c.gatewayClient(t, c.nodeBCert))
				if err != nil {
					t.Fatal(err)
				}
				forB := c.enqueuePing(t, "node-b", "for b")
				for {
					m, err := st.Recv()
					if err != nil {
						t.Fatalf("node-b never received its own task: %v", err)
					}
					if task := m.GetTask(); task != nil {
						if task.GetId() == forC {
							t.Fatal("node-b received node-c's task")
						}
						if task.GetId() == forB {
							return
						}
					}
				}
			}},
		{name: "result for other node's task", attempt: "node-b reports SUCCEEDED for node-c's pending task",
			refusal: "the task stays PENDING", run: func(t *testing.T, c *cluster) {
				forC := c.enqueuePing(t, "node-c", "forge me")
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				st, err := testenv.OpenStream(sctx, c.gatewayClient(t, c.nodeBCert))
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: &agentpb.TaskResult{
					TaskId: forC, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
					Result: &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{Payload: "forged", Node: "node-c"}}}}}); err != nil {
					t.Fatal(err)
				}
				// A result of node-b's own task sent after the forgery: once
				// it is recorded, the gateway has handled the forgery too.
				forB := c.enqueuePing(t, "node-b", "own")
				for {
					m, err := st.Recv()
					if err != nil {
						t.Fatal(err)
					}
					if m.GetTask().GetId() == forB {
						break
					}
				}
				if err := st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: &agentpb.TaskResult{
					TaskId: forB, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
					Result: &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{}}}}}); err != nil {
					t.Fatal(err)
				}
				waitTask(t, c, forB, store.TaskSucceeded)
				if got, _, err := c.s.Store().GetTask(ctx, forC); err != nil || got.Status != store.TaskPending {
					t.Fatalf("node-c's task after the forgery: %+v %v", got, err)
				}
			}},
		{name: "result for an unknown task", attempt: "node-b reports a result for a task id that does not exist",
			refusal: "ignored; the stream and the gateway keep working", run: func(t *testing.T, c *cluster) {
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				st, err := testenv.OpenStream(sctx, c.gatewayClient(t, c.nodeBCert))
				if err != nil {
					t.Fatal(err)
				}
				_ = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: &agentpb.TaskResult{
					TaskId: "../../cluster/secrets", Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}}})
				forB := c.enqueuePing(t, "node-b", "after unknown")
				for {
					m, err := st.Recv()
					if err != nil {
						t.Fatalf("stream broken by an unknown task id: %v", err)
					}
					if m.GetTask().GetId() == forB {
						return
					}
				}
			}},
		{name: "plaintext gRPC", attempt: "an agent stream over h2c without TLS", refusal: "no stream",
			run: func(t *testing.T, c *cluster) {
				cl := dialInsecure(t, c.s.Config.AgentListen)
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if _, err := testenv.OpenStream(sctx, cl); err == nil {
					t.Fatal("stream opened without TLS")
				}
			}},
		{name: "TLS 1.1", attempt: "a TLS handshake limited to TLS 1.1", refusal: "the handshake fails",
			run: func(t *testing.T, c *cluster) {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.s.Config.AgentListen,
					&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11, NextProtos: []string{"h2"}}) //nolint:gosec // the attacker's side
				if err == nil {
					conn.Close()
					t.Fatal("TLS 1.1 accepted")
				}
			}},
		{name: "HTTP/1.1 on the gateway port", attempt: "a plain HTTP GET on the agent port", refusal: "no HTTP answer with data",
			run: func(t *testing.T, c *cluster) {
				resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + c.s.Config.AgentListen + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						t.Fatal("HTTP 200 on the agent port")
					}
				}
			}},
	}
	vs = append(vs, validatorVectors()...)

	// Regression vectors of issue 23's findings are added here after their
	// fixes merge (they fail on the code this suite was written against):
	//   2  API load stalling task delivery; stalled nodes still READY
	//   11 the join token visible in the agent's argv
	return vs
}

// enqueuePing queues a ping for node as the API would and returns its id.
func (c *cluster) enqueuePing(t *testing.T, node, payload string) string {
	t.Helper()
	spec := &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: payload}}}
	task, err := c.s.Store().EnqueueTask(context.Background(), node, spec, "security", store.NewAuditEvent("security", "", "runNodeAction", node, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	return task.ID
}

func waitTask(t *testing.T, c *cluster, id string, want store.TaskStatus) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _, err := c.s.Store().GetTask(context.Background(), id)
		if err == nil && got.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: %+v %v, want %s", id, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dialInsecure(t *testing.T, addr string) agentpb.AgentGatewayClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentGatewayClient(conn)
}

// validatorVectors feed hostile typed requests to the allow-list, as the
// agent does with every task it receives: each must be refused by the
// action's Validate before anything on the host is touched.
func validatorVectors() []vector {
	okSite := func() *agentpb.Site {
		return &agentpb.Site{Domain: "shop.example.com", Docroot: "public_html", PhpVersion: "8.2"}
	}
	account := func(edit func(*agentpb.EnsureAccountAction)) *agentpb.Task {
		a := &agentpb.EnsureAccountAction{Username: "alice", Web: &agentpb.WebSpec{Sites: []*agentpb.Site{okSite()}}}
		edit(a)
		return &agentpb.Task{Action: &agentpb.Task_EnsureAccount{EnsureAccount: a}}
	}
	site := func(edit func(*agentpb.Site)) *agentpb.Task {
		return account(func(a *agentpb.EnsureAccountAction) { edit(a.Web.Sites[0]) })
	}
	zone := func(edit func(*agentpb.EnsureZoneAction)) *agentpb.Task {
		z := &agentpb.EnsureZoneAction{Zone: "example.com", Kind: agentpb.ZoneKind_ZONE_KIND_PRIMARY, Nameservers: []string{"ns1.example.com."},
			Records: []*agentpb.Record{{Name: "www.example.com.", Type: "A", Content: "192.0.2.1"}}}
		edit(z)
		return &agentpb.Task{Action: &agentpb.Task_EnsureZone{EnsureZone: z}}
	}
	record := func(r *agentpb.Record) *agentpb.Task {
		return zone(func(z *agentpb.EnsureZoneAction) { z.Records = []*agentpb.Record{r} })
	}
	dbUser := func(edit func(*agentpb.EnsureDatabaseUserAction)) *agentpb.Task {
		u := &agentpb.EnsureDatabaseUserAction{Name: "alice_web", Owner: "alice", Password: "Good-password-123", Hosts: []string{"localhost"},
			Grants: []*agentpb.DatabaseGrant{{Database: "alice_app", Privileges: []string{"SELECT"}}}}
		edit(u)
		return &agentpb.Task{Action: &agentpb.Task_EnsureDatabaseUser{EnsureDatabaseUser: u}}
	}
	ensureDB := func(name, owner string) *agentpb.Task {
		return &agentpb.Task{Action: &agentpb.Task_EnsureDatabase{EnsureDatabase: &agentpb.EnsureDatabaseAction{Name: name, Owner: owner}}}
	}
	cases := []struct {
		name string
		task *agentpb.Task
	}{
		{"ping payload over 256 bytes", &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: strings.Repeat("x", 257)}}}},
		{"ping delay over 10 s", &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{DelayMs: 3_600_000}}}},
		{"ping invalid UTF-8", &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "\xff\xfe"}}}},
		{"account root", account(func(a *agentpb.EnsureAccountAction) { a.Username = "root" })},
		{"account system user www-data", account(func(a *agentpb.EnsureAccountAction) { a.Username = "www-data" })},
		{"account traversal", account(func(a *agentpb.EnsureAccountAction) { a.Username = "../etc" })},
		{"account empty", account(func(a *agentpb.EnsureAccountAction) { a.Username = "" })},
		{"account shell", account(func(a *agentpb.EnsureAccountAction) { a.Username = "a;id" })},
		{"account option", account(func(a *agentpb.EnsureAccountAction) { a.Username = "-oroot" })},
		{"account test prefix on a production agent", account(func(a *agentpb.EnsureAccountAction) { a.Username = "nptabcdef" })},
		{"site domain semicolon", site(func(s *agentpb.Site) { s.Domain = "a.example.com;include /etc/passwd" })},
		{"site domain newline", site(func(s *agentpb.Site) { s.Domain = "a.example.com\nlisten 81" })},
		{"site domain brace", site(func(s *agentpb.Site) { s.Domain = "a.example.com}" })},
		{"site domain dollar", site(func(s *agentpb.Site) { s.Domain = "$host" })},
		{"site domain non-ASCII", site(func(s *agentpb.Site) { s.Domain = "bücher.example.com" })},
		{"site alias injection", site(func(s *agentpb.Site) { s.Aliases = []string{"www.example.com; root /"} })},
		{"site docroot parent", site(func(s *agentpb.Site) { s.Docroot = "../other" })},
		{"site docroot absolute", site(func(s *agentpb.Site) { s.Docroot = "/etc" })},
		{"site docroot newline", site(func(s *agentpb.Site) { s.Docroot = "public_html;\nroot /" })},
		{"site php version traversal", site(func(s *agentpb.Site) { s.PhpVersion = "../8.2" })},
		{"site php version injection", site(func(s *agentpb.Site) { s.PhpVersion = "8.2\nuser = root" })},
		{"site redirect CRLF", site(func(s *agentpb.Site) { s.RedirectTo = "https://x.example/\r\nX: y"; s.RedirectCode = 301 })},
		{"site redirect quote", site(func(s *agentpb.Site) { s.RedirectTo = `https://x.example/";return 200 "x`; s.RedirectCode = 301 })},
		{"site redirect scheme", site(func(s *agentpb.Site) { s.RedirectTo = "javascript:alert(1)"; s.RedirectCode = 301 })},
		{"site redirect code 200", site(func(s *agentpb.Site) { s.RedirectTo = "https://x.example/"; s.RedirectCode = 200 })},
		{"site duplicated domain", account(func(a *agentpb.EnsureAccountAction) { a.Web.Sites = append(a.Web.Sites, okSite()) })},
		{"delete account root", &agentpb.Task{Action: &agentpb.Task_DeleteAccount{DeleteAccount: &agentpb.DeleteAccountAction{Username: "root"}}}},
		{"delete account traversal", &agentpb.Task{Action: &agentpb.Task_DeleteAccount{DeleteAccount: &agentpb.DeleteAccountAction{Username: "../../"}}}},
		{"restart traversal", &agentpb.Task{Action: &agentpb.Task_RestartService{RestartService: &agentpb.RestartServiceAction{Name: "../nginx"}}}},
		{"restart injection", &agentpb.Task{Action: &agentpb.Task_RestartService{RestartService: &agentpb.RestartServiceAction{Name: "nginx;reboot"}}}},
		{"zone name traversal", zone(func(z *agentpb.EnsureZoneAction) { z.Zone = "../../etc" })},
		{"zone root", zone(func(z *agentpb.EnsureZoneAction) { z.Zone = "." })},
		{"zone kind unspecified", zone(func(z *agentpb.EnsureZoneAction) { z.Kind = agentpb.ZoneKind_ZONE_KIND_UNSPECIFIED })},
		{"zone without nameservers", zone(func(z *agentpb.EnsureZoneAction) { z.Nameservers = nil })},
		{"zone secondary injection", zone(func(z *agentpb.EnsureZoneAction) { z.Secondaries = []string{"127.0.0.1;evil"} })},
		{"zone secondary hostname", zone(func(z *agentpb.EnsureZoneAction) { z.Secondaries = []string{"evil.example.com"} })},
		{"record out of zone", record(&agentpb.Record{Name: "www.other.org.", Type: "A", Content: "192.0.2.1"})},
		{"record content newline", record(&agentpb.Record{Name: "x.example.com.", Type: "TXT", Content: "a\nb"})},
		{"record type SOA", record(&agentpb.Record{Name: "example.com.", Type: "SOA", Content: "a b 1 2 3 4 5"})},
		{"record type unknown", record(&agentpb.Record{Name: "x.example.com.", Type: "LUA", Content: "A \"os.execute('id')\""})},
		{"record CNAME at apex", record(&agentpb.Record{Name: "example.com.", Type: "CNAME", Content: "evil.example."})},
		{"record bad A", record(&agentpb.Record{Name: "x.example.com.", Type: "A", Content: "999.0.0.1"})},
		{"delete zone traversal", &agentpb.Task{Action: &agentpb.Task_DeleteZone{DeleteZone: &agentpb.DeleteZoneAction{Zone: "../x"}}}},
		{"delete zone empty", &agentpb.Task{Action: &agentpb.Task_DeleteZone{DeleteZone: &agentpb.DeleteZoneAction{Zone: ""}}}},
		{"secondary zone bad master", &agentpb.Task{Action: &agentpb.Task_SyncSecondaryZones{SyncSecondaryZones: &agentpb.SyncSecondaryZonesAction{
			Zones: []*agentpb.SecondaryZone{{Zone: "example.com", Masters: []string{"evil;host"}}}}}}},
		{"secondary zone bad name", &agentpb.Task{Action: &agentpb.Task_SyncSecondaryZones{SyncSecondaryZones: &agentpb.SyncSecondaryZonesAction{
			Zones: []*agentpb.SecondaryZone{{Zone: "a b", Masters: []string{"127.0.0.1"}}}}}}},
		{"rotate keys bad zone", &agentpb.Task{Action: &agentpb.Task_RotateZoneKeys{RotateZoneKeys: &agentpb.RotateZoneKeysAction{Zone: "x;y", Step: agentpb.RotateZoneKeysAction_STEP_PUBLISH}}}},
		{"rotate keys no step", &agentpb.Task{Action: &agentpb.Task_RotateZoneKeys{RotateZoneKeys: &agentpb.RotateZoneKeysAction{Zone: "example.com"}}}},
		{"refresh bad zone", &agentpb.Task{Action: &agentpb.Task_RefreshSecondaryZone{RefreshSecondaryZone: &agentpb.RefreshSecondaryZoneAction{Zone: "../x"}}}},
		{"check primaries bad zone", &agentpb.Task{Action: &agentpb.Task_CheckPrimaryZones{CheckPrimaryZones: &agentpb.CheckPrimaryZonesAction{
			Zones: []*agentpb.PrimaryZoneSerial{{Zone: "x\ny"}}}}}},
		{"database mysql", ensureDB("mysql", "alice")},
		{"database of another owner", ensureDB("bob_app", "alice")},
		{"database backtick", ensureDB("alice_a`b", "alice")},
		{"database wildcard", ensureDB("alice_%", "alice")},
		{"database charset injection", &agentpb.Task{Action: &agentpb.Task_EnsureDatabase{EnsureDatabase: &agentpb.EnsureDatabaseAction{
			Name: "alice_app", Owner: "alice", Charset: "utf8mb4; DROP DATABASE mysql"}}}},
		{"drop database information_schema", &agentpb.Task{Action: &agentpb.Task_DropDatabase{DropDatabase: &agentpb.DropDatabaseAction{Name: "information_schema", Owner: "alice"}}}},
		{"drop database of another owner", &agentpb.Task{Action: &agentpb.Task_DropDatabase{DropDatabase: &agentpb.DropDatabaseAction{Name: "bob_app", Owner: "alice"}}}},
		{"optimize mysql", &agentpb.Task{Action: &agentpb.Task_OptimizeDatabase{OptimizeDatabase: &agentpb.OptimizeDatabaseAction{Name: "mysql", Owner: "alice"}}}},
		{"database user root", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Name = "root" })},
		{"database user of another owner", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Name = "bob_web" })},
		{"database user quote", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Name = "alice_a'b" })},
		{"database user host wildcard", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Hosts = []string{"%"} })},
		{"database user host injection", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Hosts = []string{"localhost' IDENTIFIED BY 'x"} })},
		{"database user grant on mysql", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Database = "mysql" })},
		{"database user grant on another owner's", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Database = "bob_app" })},
		{"database user grant wildcard", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Database = "alice\\_%" })},
		{"database user privilege SUPER", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Privileges = []string{"SUPER"} })},
		{"database user privilege FILE", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Privileges = []string{"FILE"} })},
		{"database user privilege injection", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Grants[0].Privileges = []string{"SELECT ON *.* TO x"} })},
		{"database user password NUL", dbUser(func(u *agentpb.EnsureDatabaseUserAction) { u.Password = "Good-pass\x00word-123" })},
		{"drop database user root", &agentpb.Task{Action: &agentpb.Task_DropDatabaseUser{DropDatabaseUser: &agentpb.DropDatabaseUserAction{Name: "root", Owner: "alice"}}}},
		{"list databases traversal", &agentpb.Task{Action: &agentpb.Task_ListDatabases{ListDatabases: &agentpb.ListDatabasesAction{Username: "../x"}}}},
	}
	vs := []vector{
		{name: "task without an action", attempt: "a task whose action oneof is empty", refusal: "allowlist.ErrNoAction",
			run: func(t *testing.T, c *cluster) {
				if _, err := allowlist.New().FromTask(&agentpb.Task{Id: "x"}); !errors.Is(err, allowlist.ErrNoAction) {
					t.Fatalf("got %v", err)
				}
			}},
		{name: "task with an unknown action field", attempt: "a task carrying an action field number this agent does not know", refusal: "allowlist.ErrNoAction",
			run: func(t *testing.T, c *cluster) {
				task := &agentpb.Task{Id: "x"}
				// Field 999, varint 1: an action from a newer protocol.
				task.ProtoReflect().SetUnknown([]byte{0xb8, 0x3e, 0x01})
				if _, err := allowlist.New().FromTask(task); !errors.Is(err, allowlist.ErrNoAction) {
					t.Fatalf("got %v", err)
				}
			}},
		{name: "validators accept the baselines", attempt: "the unmodified requests the hostile cases start from",
			refusal: "each validates (so each hostile case is refused for its own change, not the baseline)",
			run: func(t *testing.T, c *cluster) {
				for _, task := range []*agentpb.Task{account(func(*agentpb.EnsureAccountAction) {}), zone(func(*agentpb.EnsureZoneAction) {}),
					dbUser(func(*agentpb.EnsureDatabaseUserAction) {}), ensureDB("alice_app", "alice")} {
					a, err := allowlist.New().FromTask(task)
					if err != nil {
						t.Fatal(err)
					}
					if err := a.Validate(); err != nil {
						t.Fatalf("baseline %s: %v", a.Name(), err)
					}
				}
			}},
	}
	for _, k := range cases {
		vs = append(vs, vector{name: "validate " + k.name, attempt: "a task whose typed request has " + k.name,
			refusal: "the action's Validate refuses it", run: func(t *testing.T, c *cluster) {
				a, err := allowlist.New().FromTask(k.task)
				if err != nil {
					return // not even an action
				}
				if err := a.Validate(); err == nil {
					t.Fatalf("%s validated", a.Name())
				}
			}})
	}
	return vs
}

func gatewayFindings() []vector { return nil }
