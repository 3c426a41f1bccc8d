package controlplane_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// On an external etcd the cluster query reports every member as it is: a
// member added but not started, the same member running (healthy, not the
// leader), then stopped (unhealthy, with the reason), while the query
// keeps answering for the others.
func TestClusterStatusExternalEtcdMembers(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	s := testenv.StartServer(t, testenv.WithEtcd(etcd))
	ctx := testenv.Context(t)
	cli := testenv.EtcdClient(t, etcd)

	member := func(st *client.ClusterStatus, name string) *client.EtcdMember {
		for i, m := range st.Etcd.Members {
			if m.Name == name {
				return &st.Etcd.Members[i]
			}
		}
		return nil
	}
	status := func() *client.ClusterStatus {
		t.Helper()
		st, err := s.Admin.ClusterStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := status()
	if st.Etcd.Embedded || len(st.Etcd.Members) != 1 {
		t.Fatalf("etcd = %+v, want one external member", st.Etcd)
	}
	if m := st.Etcd.Members[0]; !m.Healthy || !m.Leader || m.Name != "test-etcd" || m.Version == nil || m.DBSizeBytes == nil ||
		len(m.ClientURLs) != 1 || m.ClientURLs[0] != etcd.Endpoints[0] {
		t.Fatalf("member = %+v", m)
	}

	// A learner does not count for quorum: the cluster stays writable
	// whatever happens to it.
	peer := url.URL{Scheme: "http", Host: testenv.FreeAddr(t)}
	added, err := cli.MemberAddAsLearner(ctx, []string{peer.String()})
	if err != nil {
		t.Fatal(err)
	}
	st = status()
	var unstarted *client.EtcdMember
	for i, m := range st.Etcd.Members {
		if m.Name == "" {
			unstarted = &st.Etcd.Members[i]
		}
	}
	if len(st.Etcd.Members) != 2 || unstarted == nil || unstarted.Healthy || !unstarted.Learner || unstarted.Error == nil ||
		!strings.Contains(*unstarted.Error, "not started") {
		t.Fatalf("unstarted member: %+v in %+v", unstarted, st.Etcd.Members)
	}

	cfg := embed.NewConfig()
	cfg.Name = "learner"
	cfg.Dir = t.TempDir()
	cu := url.URL{Scheme: "https", Host: testenv.FreeAddr(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: etcd.TLS.ServerCert, KeyFile: etcd.TLS.ServerKey,
		TrustedCAFile: etcd.TLS.CA, ClientCertAuth: true}
	var initial []string
	for _, m := range added.Members {
		name := m.Name
		if m.ID == added.Member.ID {
			name = cfg.Name
		}
		for _, p := range m.PeerURLs {
			initial = append(initial, name+"="+p)
		}
	}
	cfg.InitialCluster = strings.Join(initial, ",")
	cfg.ClusterState = embed.ClusterStateFlagExisting
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start learner: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			e.Close()
			<-e.Server.StopNotify()
		}
	}
	t.Cleanup(stop)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("learner not ready")
	}
	testenv.WaitFor(t, 30*time.Second, "learner healthy", func() bool {
		m := member(status(), "learner")
		return m != nil && m.Healthy && !m.Leader && m.Learner && m.Version != nil && len(m.ClientURLs) == 1 && m.ClientURLs[0] == cu.String()
	})

	stop()
	testenv.WaitFor(t, 30*time.Second, "stopped learner unhealthy", func() bool {
		st := status()
		m, leader := member(st, "learner"), member(st, "test-etcd")
		return m != nil && !m.Healthy && m.Error != nil && *m.Error != "" && m.Version == nil && m.DBSizeBytes == nil &&
			leader != nil && leader.Healthy && leader.Leader
	})
	if err := s.Admin.Do(ctx, `{cluster{leader}}`, nil, nil); err != nil {
		t.Fatalf("cluster query with a member down: %v", err)
	}
}
