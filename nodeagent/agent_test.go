package nodeagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

func fixedFacts() (*agentpb.NodeFacts, error) {
	return &agentpb.NodeFacts{Os: "test OS", Arch: "amd64", Cpus: 1}, nil
}

func TestNewValidatesConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no servers", Config{DataDir: dir, JoinToken: "x"}, "no servers"},
		{"server without port", Config{Servers: []string{"gw"}, DataDir: dir, JoinToken: "x"}, "not host:port"},
		{"no data dir", Config{Servers: []string{"gw:1"}, JoinToken: "x"}, "no data directory"},
		{"negative concurrency", Config{Servers: []string{"gw:1"}, DataDir: dir, Concurrency: -1}, "negative"},
		{"wildcard gossip", Config{Servers: []string{"gw:1"}, DataDir: dir, GossipListen: "0.0.0.0:7946"}, "must be the IP"},
		{"gossip hostname", Config{Servers: []string{"gw:1"}, DataDir: dir, GossipListen: "node1:7946"}, "must be the IP"},
		{"no identity, no token", Config{Servers: []string{"gw:1"}, DataDir: dir}, "no join token"},
		{"garbage token", Config{Servers: []string{"gw:1"}, DataDir: dir, JoinToken: "garbage"}, "join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// The whole path: enrol with a token, connect, apply a task once, answer its
// re-send from the journal, ignore a re-send while in flight, fail bad tasks.
func TestEnrolAndTaskDeduplication(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, err := ca.NewJoinToken("node-1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Version: "v-test", Logger: log})
	if a.NodeName() != "node-1" {
		t.Fatalf("NodeName = %q", a.NodeName())
	}
	a.waitReady(t)
	if !a.Connected() {
		t.Fatal("ready but not connected")
	}

	// The identity is on disk, for root alone (issue 23, finding 6).
	for name, mode := range map[string]os.FileMode{keyFile: 0o600, certFile: 0o600, rootFile: 0o600, IdentityFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, IdentityFile))
	var idf identityFileContent
	if err := json.Unmarshal(raw, &idf); err != nil || idf.Node != "node-1" {
		t.Fatalf("identity.json = %s, %v", raw, err)
	}
	assertNoTemps(t, dir)

	s := gw.nextStream(t)
	if s.node != "node-1" || s.hello.GetAgentVersion() != "v-test" {
		t.Fatalf("stream node %q hello %v", s.node, s.hello)
	}
	// Default facts come from platform.Detect.
	if f := s.hello.GetFacts(); f.GetCpus() == 0 || f.GetArch() == "" || f.GetDiskBytes() == 0 {
		t.Fatalf("facts %v", f)
	}
	waitFor(t, "heartbeats", func() bool { return s.heartbeats.Load() >= 2 })

	// Same task twice, the second after the first finished.
	s.send(pingTask("t1", "hello", 0))
	first := s.result(t)
	if first.GetStatus() != agentpb.TaskStatus_TASK_STATUS_SUCCEEDED || first.GetTaskId() != "t1" || first.GetGeneration() != 3 {
		t.Fatalf("result %v", first)
	}
	if pr := first.GetPing(); pr.GetPayload() != "hello" || pr.GetNode() != "node-1" {
		t.Fatalf("ping result %v", first)
	}
	s.send(pingTask("t1", "hello", 0))
	second := s.result(t)
	if second.String() != first.String() {
		t.Fatalf("re-sent task answered with %v, want the journaled %v", second, first)
	}
	if n := a.appliedCount(t, "ping", "succeeded"); n != 1 {
		t.Fatalf("applied %v times, want 1", n)
	}
	if n := metricValue(t, a.metrics.duplicates); n != 1 {
		t.Fatalf("duplicates = %v, want 1", n)
	}

	// A re-send while the task is still applying is ignored: one result.
	s.send(pingTask("t2", "slow", 300), pingTask("t2", "slow", 300))
	if r := s.result(t); r.GetTaskId() != "t2" {
		t.Fatalf("result %v", r)
	}
	// Bad tasks fail, with the reason, and are journaled like the rest.
	s.send(pingTask("t3", strings.Repeat("x", 300), 0))
	r := s.result(t)
	if r.GetTaskId() != "t3" || r.GetStatus() != agentpb.TaskStatus_TASK_STATUS_FAILED || !strings.HasPrefix(r.GetError(), "invalid input: payload is 300 bytes") ||
		r.GetReason() != agentpb.ErrorReason_ERROR_REASON_INVALID {
		t.Fatalf("oversize ping: %v", r)
	}
	s.send(&agentpb.Task{Id: "t4"})
	r = s.result(t)
	if r.GetStatus() != agentpb.TaskStatus_TASK_STATUS_FAILED || !strings.Contains(r.GetError(), "no action") ||
		r.GetReason() != agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED {
		t.Fatalf("empty task: %v", r)
	}
	s.send(&agentpb.Task{Id: "t4"})
	if r := s.result(t); r.GetError() != "no known action: task carries no action" || r.GetReason() != agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED {
		t.Fatalf("re-sent empty task: %v", r)
	}
	s.noResult(t) // the in-flight duplicate of t2 produced nothing
	if n := metricValue(t, a.metrics.duplicates); n != 3 {
		t.Fatalf("duplicates = %v, want 3", n)
	}
	if n := a.appliedCount(t, "unknown", "failed"); n != 1 {
		t.Fatalf("unknown failed = %v, want 1", n)
	}
	if n := a.appliedCount(t, "ping", "failed"); n != 1 {
		t.Fatalf("ping failed = %v, want 1", n)
	}
	if n := metricValue(t, a.metrics.applySeconds.WithLabelValues("ping", "succeeded").(prometheus.Histogram)); n != 2 {
		t.Fatalf("apply observations = %v, want 2 (invalid input is never applied)", n)
	}
	if n := metricValue(t, a.metrics.inFlight); n != 0 {
		t.Fatalf("tasks in flight = %v after every result came back", n)
	}
	if v := metricValue(t, a.metrics.certExpiry); v < float64(time.Now().Add(time.Hour).Unix()) {
		t.Fatalf("cert expiry metric %v", v)
	}
	if v := metricValue(t, a.metrics.connected); v != 1 {
		t.Fatalf("connected metric %v", v)
	}

	if err := a.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if a.Connected() {
		t.Fatal("connected after Run returned")
	}
}

// After the stream drops the agent reconnects; a task re-sent on the new
// stream is answered from the journal, and a task that was in flight when its
// stream dropped reports on the stream that is current when it finishes.
func TestReconnectAfterStreamDrop(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(), Logger: log, Facts: fixedFacts})
	a.waitReady(t)

	s1 := gw.nextStream(t)
	s1.send(pingTask("t1", "a", 0))
	want := s1.result(t)

	close(s1.drop)
	s2 := gw.nextStream(t)
	waitFor(t, "connected", a.Connected)
	s2.send(pingTask("t1", "a", 0))
	if got := s2.result(t); got.String() != want.String() {
		t.Fatalf("after reconnect: %v, want journaled %v", got, want)
	}

	// In flight across a drop: the gateway re-sends it on the next stream
	// (ignored there as in flight) and must still get its result.
	s2.send(pingTask("t2", "slow", 500))
	waitFor(t, "t2 in flight", func() bool { return a.inflight("t2") })
	close(s2.drop)
	s3 := gw.nextStream(t)
	s3.send(pingTask("t2", "slow", 500))
	if r := s3.result(t); r.GetTaskId() != "t2" || r.GetStatus() != agentpb.TaskStatus_TASK_STATUS_SUCCEEDED {
		t.Fatalf("t2 result %v", r)
	}
	if n := a.appliedCount(t, "ping", "succeeded"); n != 2 {
		t.Fatalf("applied %v, want 2", n)
	}

	// A gateway restart (all connections gone) is survived as well.
	gw.restart()
	s4 := gw.nextStream(t)
	s4.send(pingTask("t1", "a", 0))
	if got := s4.result(t); got.String() != want.String() {
		t.Fatalf("after gateway restart: %v", got)
	}
	if enrolls := gw.enrolls.Load(); enrolls != 1 {
		t.Fatalf("%d enrolments, want 1", enrolls)
	}
}

// A restarted agent needs no token and keeps its journal.
func TestRestartKeepsIdentityAndJournal(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	dir := t.TempDir()
	log, logs := newLogger(t)

	a1 := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a1.waitReady(t)
	s := gw.nextStream(t)
	s.send(pingTask("t1", "a", 0))
	want := s.result(t)
	// Held in flight while the agent stops: not journaled, so applied again
	// after the restart instead of being remembered as failed.
	s.send(pingTask("t2", "b", 10000))
	waitFor(t, "t2 in flight", func() bool { return a1.inflight("t2") })
	if err := a1.stop(t); err != nil {
		t.Fatal(err)
	}
	s.noResult(t)

	// The same (now used) token again: ignored, the stored identity is used.
	a2 := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a2.waitReady(t)
	if logs.count(slog.LevelInfo, "ignoring the join token") != 1 {
		t.Error("no log about the ignored token")
	}
	s2 := gw.nextStream(t)
	s2.send(pingTask("t1", "a", 0))
	if got := s2.result(t); got.String() != want.String() {
		t.Fatalf("after restart: %v, want %v", got, want)
	}
	s2.send(pingTask("t2", "b", 10))
	if r := s2.result(t); r.GetTaskId() != "t2" || r.GetStatus() != agentpb.TaskStatus_TASK_STATUS_SUCCEEDED {
		t.Fatalf("interrupted task after restart: %v", r)
	}
	if n := a2.appliedCount(t, "ping", "succeeded"); n != 1 {
		t.Fatalf("restarted agent applied %v tasks, want 1 (t2 only)", n)
	}
	if gw.enrolls.Load() != 1 {
		t.Fatalf("enrolled %d times", gw.enrolls.Load())
	}

	// Without a token it starts as well.
	if err := a2.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Servers: []string{gw.addr}, DataDir: dir}); err != nil {
		t.Fatalf("New without token on an enrolled node: %v", err)
	}
}

func TestEnrolRefusedIsFatal(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	gw.refuseEnroll.Store(true)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log})
	select {
	case <-a.done:
		if err := a.runErr; status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Run = %v, want PermissionDenied", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going after the token was refused")
	}
	if _, err := os.Stat(filepath.Join(dir, IdentityFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("identity written after a refused enrolment: %v", err)
	}
}

// A token that names another CA's root: the handshake pins the wrong
// fingerprint, which is retried (it looks like the network) until cancel.
func TestEnrolWrongRootNeverConnects(t *testing.T) {
	gw := startGateway(t, newTestCA(t, 0))
	other := newTestCA(t, 0)
	token, _, _ := other.NewJoinToken("node-1", nil, time.Minute)
	log, logs := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(), Logger: log})
	waitFor(t, "failed enrol attempts", func() bool { return logs.count(slog.LevelWarn, "enrol failed") >= 2 })
	if gw.enrolls.Load() != 0 {
		t.Fatal("Enroll reached a server whose root the token does not pin")
	}
	if err := a.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
}

func TestFailoverToSecondServer(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{dead, gw.addr}, JoinToken: token, DataDir: t.TempDir(), Logger: log, Facts: fixedFacts})
	a.waitReady(t)
	s := gw.nextStream(t)
	s.send(pingTask("t1", "", 0))
	s.result(t)
}

// A fenced node keeps retrying, logs the refusal once, and comes back by
// itself when it is admitted again.
func TestRefusedStreamRetriesAndRecovers(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	log, logs := newLogger(t)
	dir := t.TempDir()
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a.waitReady(t)
	s := gw.nextStream(t)

	gw.refuseConnect.Store(true)
	close(s.drop)
	waitFor(t, "disconnected", func() bool { return !a.Connected() })
	// Several refused attempts happen at the test's 300 ms cap...
	waitFor(t, "refused attempts", func() bool {
		return logs.count(slog.LevelDebug, "still refuses") >= 3
	})
	// ...but only the first refusal is an error record.
	if n := logs.count(slog.LevelError, "refuses this node"); n != 1 {
		t.Fatalf("%d refusal errors logged, want 1", n)
	}
	gw.refuseConnect.Store(false)
	gw.nextStream(t)
	waitFor(t, "reconnected", a.Connected)
	if logs.count(slog.LevelInfo, "accepts this node again") != 1 {
		t.Fatal("no log about the node being accepted again")
	}
}

// With a short-lived certificate the agent renews at two thirds of its life,
// persists the new chain, and uses it for new connections.
func TestCertificateRenewal(t *testing.T) {
	ca := newTestCA(t, 3*time.Second)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a.waitReady(t)
	gw.nextStream(t)
	firstChain, _ := os.ReadFile(filepath.Join(dir, certFile))
	firstExpiry := metricValue(t, a.metrics.certExpiry)

	waitFor(t, "two renewals", func() bool { return gw.renewals.Load() >= 2 })
	chain, _ := os.ReadFile(filepath.Join(dir, certFile))
	if bytes.Equal(chain, firstChain) {
		t.Fatal("renewed chain not persisted")
	}
	if metricValue(t, a.metrics.certExpiry) <= firstExpiry {
		t.Fatal("expiry metric not updated")
	}
	// The first certificate has expired by now; a new stream only works with
	// a renewed one.
	waitFor(t, "first certificate expired", func() bool { return time.Now().Unix() > int64(firstExpiry) })
	gw.restart()
	s := gw.nextStream(t)
	s.send(pingTask("t1", "", 0))
	s.result(t)
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	// Renewal happened at ~2 s intervals, not in a loop.
	if n := gw.renewals.Load(); n > 10 {
		t.Fatalf("%d renewals in a few seconds: renewing in a loop", n)
	}
}

// Without renewal the certificate expires and Run reports it.
func TestCertificateExpiryIsFatal(t *testing.T) {
	ca := newTestCA(t, 2*time.Second)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a.waitReady(t)
	gw.stop() // no renewal possible from now on
	select {
	case <-a.done:
		if err := a.runErr; !errors.Is(err, ErrCertificateExpired) {
			t.Fatalf("Run = %v, want ErrCertificateExpired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not report the expired certificate")
	}
	// A restart without a token is refused up front.
	if _, err := New(Config{Servers: []string{gw.addr}, DataDir: dir}); !errors.Is(err, ErrCertificateExpired) {
		t.Fatalf("New on an expired identity = %v", err)
	}
	// With a new token the node enrols again, with a new key.
	oldKey, _ := os.ReadFile(filepath.Join(dir, keyFile))
	gw.restart()
	token2, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	a2 := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token2, DataDir: dir, Logger: log, Facts: fixedFacts})
	a2.waitReady(t)
	if gw.enrolls.Load() != 2 {
		t.Fatalf("%d enrolments, want 2", gw.enrolls.Load())
	}
	if newKey, _ := os.ReadFile(filepath.Join(dir, keyFile)); bytes.Equal(newKey, oldKey) {
		t.Fatal("key not replaced on re-enrolment")
	}
}

// Two agents find each other through the seeds in Welcome, encrypted with the
// gateway's key; a key change recreates the pool member on the same port; a
// stopped agent drops out without a Leave.
func TestGossip(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	key := make([]byte, 32)
	rand.Read(key)
	gw.setGossipKey(key)

	var agents []*runningAgent
	var streams []*gwStream
	for _, node := range []string{"node-1", "node-2"} {
		token, _, _ := ca.NewJoinToken(node, nil, time.Minute)
		log, _ := newLogger(t)
		a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(),
			GossipListen: "127.0.0.1:0", Logger: log, Facts: fixedFacts})
		a.waitReady(t)
		s := gw.nextStream(t)
		host, port, err := net.SplitHostPort(s.hello.GetGossipAddress())
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("gossip address %q in Hello", s.hello.GetGossipAddress())
		}
		agents = append(agents, a)
		streams = append(streams, s)
	}
	members := func(a *runningAgent) int {
		a.mu.Lock()
		g := a.gsp
		a.mu.Unlock()
		return g.members()
	}
	waitFor(t, "both agents in one pool", func() bool { return members(agents[0]) == 2 && members(agents[1]) == 2 })

	// New key: both recreate their member on reconnect and meet again.
	key2 := make([]byte, 32)
	rand.Read(key2)
	gw.setGossipKey(key2)
	addrs := []string{streams[0].hello.GetGossipAddress(), streams[1].hello.GetGossipAddress()}
	for i, s := range streams {
		close(s.drop)
		s2 := gw.nextStream(t)
		if s2.hello.GetGossipAddress() != addrs[i] {
			t.Fatalf("gossip address changed from %s to %s", addrs[i], s2.hello.GetGossipAddress())
		}
	}
	waitFor(t, "pool with the new key", func() bool {
		a := agents[0]
		a.mu.Lock()
		g := a.gsp
		a.mu.Unlock()
		g.mu.Lock()
		defer g.mu.Unlock()
		return bytes.Equal(g.key, key2) && g.ml != nil && g.ml.NumMembers() == 2
	})

	if err := agents[1].stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stopped agent detected as gone", func() bool { return members(agents[0]) == 1 })
}

func TestApplyRecoversPanic(t *testing.T) {
	env := &actions.Env{Node: "n", Logger: discard()}
	_, err := apply(context.Background(), panicAction{}, env)
	if err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("apply = %v", err)
	}
}

type panicAction struct{}

func (panicAction) Name() string    { return "panic" }
func (panicAction) Validate() error { return nil }
func (panicAction) Apply(context.Context, *actions.Env) (proto.Message, error) {
	panic("boom")
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	prevStep := time.Duration(0)
	for i := range 10 {
		d := b.next()
		if d < b.cur/2 || d > b.cur {
			t.Fatalf("step %d: %v outside [%v, %v]", i, d, b.cur/2, b.cur)
		}
		if b.cur < prevStep || b.cur > 5*time.Second {
			t.Fatalf("step %d: cur %v", i, b.cur)
		}
		prevStep = b.cur
	}
	if b.cur != 5*time.Second {
		t.Fatalf("cap not reached: %v", b.cur)
	}
	b.reset()
	if d := b.next(); d > 200*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestRenewAt(t *testing.T) {
	now := time.Now()
	leaf := &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(3 * time.Second)}
	// Counted from NotBefore, a backdated 3 s certificate is due at once.
	if at := renewAt(leaf, time.Time{}); !at.Before(now) {
		t.Fatalf("loaded certificate: renew at %v, want already due", at)
	}
	// Counted from when it was obtained, it is due in 2 s.
	if at := renewAt(leaf, now); at.Sub(now) != 2*time.Second {
		t.Fatalf("obtained certificate: renew in %v, want 2s", at.Sub(now))
	}
}

func TestDataDirInUse(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, Facts: fixedFacts})
	a.waitReady(t)

	b, err := New(Config{Servers: []string{gw.addr}, DataDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "in use by another agent") {
		t.Fatalf("second Run on one data directory = %v", err)
	}
	if err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("Run called twice = %v", err)
	}
}

// With Concurrency 2, four 300 ms tasks need at least two rounds.
func TestConcurrencyBound(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(), Logger: log, Facts: fixedFacts, Concurrency: 2})
	a.waitReady(t)
	s := gw.nextStream(t)
	start := time.Now()
	s.send(pingTask("t1", "", 300), pingTask("t2", "", 300), pingTask("t3", "", 300), pingTask("t4", "", 300))
	seen := map[string]bool{}
	for range 4 {
		seen[s.result(t).GetTaskId()] = true
	}
	if len(seen) != 4 {
		t.Fatalf("results for %v", seen)
	}
	if took := time.Since(start); took < 600*time.Millisecond {
		t.Fatalf("4 tasks of 300 ms took %v with concurrency 2: more than 2 ran at once", took)
	}
}
