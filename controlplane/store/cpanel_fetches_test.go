package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestCpanelFetchOneAtATimePerAccount: concurrent fetches of one account
// from one server by one node: exactly one is created; once it has ended
// the account can be fetched again; another account is not held up.
func TestCpanelFetchOneAtATimePerAccount(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, store.NewAuditEvent("test", "", "createNode", "n1", "ok")); err != nil {
		t.Fatal(err)
	}
	create := func(account string) (*store.Fetch, error) {
		f := &store.Fetch{ID: store.NewImportID(time.Now()), Node: "n1", Host: "old.example.com", Port: 22, User: "root",
			Account: account, Path: "fetched/x/cpmove-" + account + ".tar.gz", CreatedBy: "test"}
		spec := &agentpb.Task{Action: &agentpb.Task_FetchCpanelBackup{FetchCpanelBackup: &agentpb.FetchCpanelBackupAction{Account: account, Path: f.Path}}}
		return f, s.CreateFetch(ctx, f, spec, store.AuditEvent{})
	}
	const n = 8
	var (
		mu       sync.Mutex
		won      []*store.Fetch
		refusals int
		wg       sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := create("bob")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, f)
			case errors.Is(err, store.ErrConflict):
				refusals++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || refusals != n-1 {
		t.Fatalf("%d created, %d refused; want 1 and %d", len(won), refusals, n-1)
	}
	if _, err := create("alice"); err != nil {
		t.Fatalf("another account: %v", err)
	}
	if _, err := s.UpdateFetch(ctx, won[0].ID, func(f *store.Fetch) error { f.Status = store.FetchRunning; return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	if _, err := create("bob"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("bob while RUNNING: %v, want a conflict", err)
	}
	if _, err := s.UpdateFetch(ctx, won[0].ID, func(f *store.Fetch) error { f.Status = store.FetchFailed; return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	if _, err := create("bob"); err != nil {
		t.Fatalf("bob after the first ended: %v", err)
	}
}
