package controlplane_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
	"github.com/npanel/npanel/protos/agentpb"
)

// gatewayClient dials the test server's gateway as an agent would, with
// cert as the client certificate (nil: none).
func gatewayClient(t *testing.T, s *testenv.Server, cert *tls.Certificate) agentpb.AgentGatewayClient {
	t.Helper()
	host, _, _ := net.SplitHostPort(s.Config.AgentListen)
	cfg := pki.AgentTLSConfig(host, s.CA().Root(), func() (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	})
	return testenv.DialGateway(t, s.Config.AgentListen, cfg)
}

func enrollClient(t *testing.T, s *testenv.Server) agentpb.AgentGatewayClient {
	return enrollClientB(t, s)
}

func enrollClientB(t testing.TB, s *testenv.Server) agentpb.AgentGatewayClient {
	t.Helper()
	host, _, _ := net.SplitHostPort(s.Config.AgentListen)
	return testenv.DialGateway(t, s.Config.AgentListen, pki.EnrollClientTLSConfig(host, s.CA().RootFingerprint(), nil))
}

func wantCode(t *testing.T, what string, err error, codes ...codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want refusal", what)
	}
	got := status.Code(err)
	for _, c := range codes {
		if got == c {
			return
		}
	}
	t.Fatalf("%s: code %s (%v), want one of %v", what, got, err, codes)
}

func TestGatewaySecurity(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	declare := func(name string) string {
		tok, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}

	t.Run("no client certificate", func(t *testing.T) {
		c := gatewayClient(t, s, nil)
		_, err := testenv.OpenStream(ctx, c)
		wantCode(t, "connect", err, codes.Unauthenticated)
		_, err = c.Renew(ctx, &agentpb.RenewRequest{})
		wantCode(t, "renew", err, codes.Unauthenticated)
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		declare("foreign")
		m, err := ca.GenerateMaterial("other")
		if err != nil {
			t.Fatal(err)
		}
		other, err := ca.New(m, ca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := other.NewJoinToken("foreign", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := pki.NewKey()
		csr, _ := pki.NewNodeCSR(key, "foreign", nil)
		chain, _, err := other.Enroll(ctx, tok, csr, func(pki.JoinClaims) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
		for _, c := range chain {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		_, err = testenv.OpenStream(ctx, gatewayClient(t, s, cert))
		wantCode(t, "connect with foreign certificate", err, codes.Unavailable, codes.Unauthenticated)
		// The foreign CA's token is refused at enrolment too.
		_, err = testenv.EnrollNode(ctx, enrollClient(t, s), tok, "foreign")
		wantCode(t, "enrol with forged token", err, codes.Unauthenticated)
	})

	t.Run("join token is single use", func(t *testing.T) {
		tok := declare("reuse")
		if _, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok, "reuse"); err != nil {
			t.Fatalf("first use: %v", err)
		}
		_, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok, "reuse")
		wantCode(t, "second use", err, codes.PermissionDenied)
	})

	t.Run("token for another name", func(t *testing.T) {
		tok := declare("name-a")
		declare("name-b")
		_, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok, "name-b")
		wantCode(t, "CSR for another node", err, codes.InvalidArgument, codes.Unauthenticated)
		// The refused attempt did not burn the token.
		if _, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok, "name-a"); err != nil {
			t.Fatalf("rightful use after a refused one: %v", err)
		}
	})

	t.Run("garbage token", func(t *testing.T) {
		_, err := testenv.EnrollNode(ctx, enrollClient(t, s), "not-a-token", "x")
		wantCode(t, "garbage", err, codes.Unauthenticated)
	})

	t.Run("expired token", func(t *testing.T) {
		declare("late")
		tok, _, err := s.CA().NewJoinToken("late", nil, ca.MinJoinTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(ca.MinJoinTokenTTL + time.Second)
		_, err = testenv.EnrollNode(ctx, enrollClient(t, s), tok, "late")
		wantCode(t, "expired", err, codes.Unauthenticated)
	})

	t.Run("undeclared node", func(t *testing.T) {
		tok, _, err := s.CA().NewJoinToken("ghost", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		_, err = testenv.EnrollNode(ctx, enrollClient(t, s), tok, "ghost")
		wantCode(t, "undeclared", err, codes.PermissionDenied)
	})
}

func TestRemovedNodeIsRefused(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a")
	ctx := testenv.Context(t)
	cert := testenv.AgentCert(t, a)

	if err := s.Admin.RemoveNode(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "agent stream closed", func() bool { return !a.Connected() })
	c := gatewayClient(t, s, cert)
	_, err := testenv.OpenStream(ctx, c)
	wantCode(t, "connect after removal", err, codes.PermissionDenied)
	_, err = c.Renew(ctx, &agentpb.RenewRequest{})
	wantCode(t, "renew after removal", err, codes.PermissionDenied)

	// Re-adding the name issues a new identity; the old certificate stays
	// refused.
	tok, err := s.Admin.CreateJoinToken(ctx, "node-a", "127.0.0.1", []string{"WEB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok.Token, "node-a"); err != nil {
		t.Fatal(err)
	}
	_, err = testenv.OpenStream(ctx, gatewayClient(t, s, cert))
	wantCode(t, "old certificate after re-add", err, codes.PermissionDenied)
}

// A node sees only its own tasks and cannot report results for another's.
func TestNodeIsolation(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a")
	b := s.StartAgent(t, "node-b")
	ctx := testenv.Context(t)
	b.Stop()

	spec := &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "for b"}}}
	task, err := s.Store().EnqueueTask(ctx, "node-b", spec, "test", store.NewAuditEvent("test", "", "runNodeAction", "node-b", "ok"))
	if err != nil {
		t.Fatal(err)
	}

	// Node A, on its own stream, forges a result for B's task.
	a.Stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := testenv.OpenStream(sctx, gatewayClient(t, s, testenv.AgentCert(t, a)))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: &agentpb.TaskResult{
		TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
		Result: &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{Payload: "forged", Node: "node-b"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan *agentpb.ServerMessage, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if m.GetScrapeAuth() == nil { // every stream gets the scrape tokens
				received <- m
				return
			}
		}
	}()
	// Give the gateway time to (wrongly) act on the forgery or send B's
	// task to A; a heartbeat round trip proves the stream was processed.
	time.Sleep(time.Second)
	select {
	case m := <-received:
		t.Fatalf("node A received %v", m)
	default:
	}
	got, _, err := s.Store().GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.TaskPending {
		t.Fatalf("forged result accepted: %+v", got)
	}
	cancel()

	b.Start()
	testenv.WaitFor(t, 15*time.Second, "B's task done by B", func() bool {
		got, _, err := s.Store().GetTask(ctx, task.ID)
		return err == nil && got.Status == store.TaskSucceeded
	})
	got, _, _ = s.Store().GetTask(ctx, task.ID)
	if res, err := got.PingResult(); err != nil || res.GetNode() != "node-b" || res.GetPayload() == "forged" {
		t.Fatalf("result %v (%v), want B's own", res, err)
	}
}

// An agent older than the typed-result protocol is refused at Hello with a
// message saying to upgrade it, and never receives a task whose result it
// would send in a form the server cannot read.
func TestOldAgentProtocolRefused(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a")
	ctx := testenv.Context(t)
	cert := testenv.AgentCert(t, a)
	a.Stop()

	st, err := gatewayClient(t, s, cert).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: &agentpb.Hello{
		AgentVersion: "0.9.0", Facts: &agentpb.NodeFacts{Cpus: 1}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantCode(t, "hello without a protocol", err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("refusal does not say what to do: %v", err)
	}
	if _, err := testenv.OpenStream(ctx, gatewayClient(t, s, cert)); err != nil {
		t.Fatalf("a current agent after the refusal: %v", err)
	}
}
