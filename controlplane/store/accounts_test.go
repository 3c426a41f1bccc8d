package store_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// TestAccountHeadMatchesRecord: the head decoded from a stored record is the
// record's own Head, so that its JSON names cannot drift from Account's.
func TestAccountHeadMatchesRecord(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	a := &store.Account{ID: "01ACC", Username: "alice", Domain: "alice.test", Plan: "basic", Owner: "reseller1",
		Roles: []string{"web"}, Suspended: true, Deleted: true, Generation: 7, AppliedGeneration: 6,
		Node: "node-1", Status: store.AccountSuspended, Reason: "why", TaskID: "01TASK", Attempts: 2,
		Sites: []store.Site{{Domain: "alice.test"}}, CreatedAt: now, UpdatedAt: now}
	a.SetStatus(store.AccountDeleting, "", now)
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.DecodeAccountHead(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := a.Head(); got != want {
		t.Fatalf("head %+v, want %+v", got, want)
	}
	if _, err := store.DecodeAccountHead([]byte(`{"id":`)); err == nil {
		t.Error("truncated record decoded")
	}
}
