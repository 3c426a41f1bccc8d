package controlplane_test

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/testenv"
)

// A join token made for an earlier record of a node (removed, then
// declared again with another address) enrols nothing: its certificate
// would name the old address, which may be another node's now.
func TestEnrollStaleTokenAddress(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	old, err := s.Admin.CreateJoinToken(ctx, "stale-1", "127.0.0.1", []string{"WEB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Admin.RemoveNode(ctx, "stale-1"); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Admin.CreateJoinToken(ctx, "stale-1", "127.0.0.2", []string{"WEB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.EnrollNode(ctx, enrollClient(t, s), old.Token, "stale-1"); err == nil || !strings.Contains(err.Error(), "another address") {
		t.Fatalf("enrolment with the old record's token: %v, want refused", err)
	}
	if _, err := testenv.EnrollNode(ctx, enrollClient(t, s), cur.Token, "stale-1"); err != nil {
		t.Fatalf("enrolment with the current token: %v", err)
	}
}
