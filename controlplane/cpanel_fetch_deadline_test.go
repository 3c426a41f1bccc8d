package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/testenv"
)

// A fetch whose task has not finished long after its creation (the node
// lost it, or is gone) is failed and its task, with the sealed
// credentials, forgotten; the account can then be fetched again.
func TestCpanelFetchDeadline(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	tok, err := s.Admin.CreateJoinToken(ctx, "fdead-1", "127.0.0.1", []string{"WEB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok.Token, "fdead-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.OpenStream(ctx, gatewayClient(t, s, cert)); err != nil {
		t.Fatal(err)
	}
	controlplane.MoveFetchClockForTest(t, 4*time.Hour)
	pw, fp := "pw-1", "SHA256:"+strings.Repeat("D", 43)
	in := client.CpanelServerInput{Node: "fdead-1", Host: "old.example.com", User: "root", Password: &pw, HostKeyFingerprint: &fp}
	var f *client.CpanelFetch
	testenv.WaitFor(t, 10*time.Second, "fetch accepted (the node's key known)", func() bool {
		f, err = s.Admin.FetchCpanelBackup(ctx, in, "bob", "")
		return err == nil
	})
	testenv.WaitFor(t, 10*time.Second, "the stuck fetch failed", func() bool {
		cur, err := s.Admin.CpanelFetch(ctx, f.ID)
		return err == nil && cur.Status == "FAILED" && cur.Error != nil && strings.Contains(*cur.Error, "did not finish")
	})
	if _, err := s.Admin.FetchCpanelBackup(ctx, in, "bob", ""); err != nil {
		t.Fatalf("bob again after the stuck fetch failed: %v", err)
	}
}
