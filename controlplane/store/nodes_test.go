package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// TestGetNodesMatchesGetNode: the batch read returns, for more nodes than
// one transaction holds, exactly what GetNode returns for each (spec, state
// and liveness), and leaves out names that are not nodes.
func TestGetNodesMatchesGetNode(t *testing.T) {
	cli := testenv.EtcdClient(t, testenv.StartEtcd(t))
	s := store.New(cli)
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "addNode", "", "ok")
	var names []string
	for i := range 100 {
		name := fmt.Sprintf("n%03d", i)
		names = append(names, name)
		if err := s.CreateNode(ctx, store.Node{Name: name, Address: fmt.Sprintf("192.0.2.%d", i+1), Roles: []string{"web"}}, audit); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := s.UpdateNodeState(ctx, name, func(st *store.NodeState) bool {
				st.AgentVersion, st.EnrolledAt = "v1", time.Unix(int64(i), 0).UTC()
				return true
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names[:10] {
		if err := s.MarkAlive(ctx, name, "r1", lease.ID); err != nil {
			t.Fatal(err)
		}
	}

	got, err := s.GetNodes(ctx, append([]string{"missing-a"}, append(names, "missing-b")...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(names) {
		t.Errorf("GetNodes returned %d nodes, want %d", len(got), len(names))
	}
	for _, name := range names {
		want, err := s.GetNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("%s: GetNodes %+v, GetNode %+v", name, got[name], want)
		}
	}
	if !got["n000"].Alive || got["n050"].Alive || got["n003"].State.AgentVersion != "v1" {
		t.Errorf("liveness or state not joined: n000 %+v, n050 %+v, n003 %+v", got["n000"], got["n050"], got["n003"])
	}
	if empty, err := s.GetNodes(ctx, nil); err != nil || len(empty) != 0 {
		t.Errorf("GetNodes(nil) = %v, %v", empty, err)
	}
}
