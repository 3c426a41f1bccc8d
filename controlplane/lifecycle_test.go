package controlplane_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// testUsername returns a name under the reserved test prefix and removes
// that user from the machine at cleanup, whatever happens in the test.
func testUsername(t testing.TB) string {
	t.Helper()
	name := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, name)
	return name
}

func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

func shadowLocked(t *testing.T, user string) bool {
	t.Helper()
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) > 1 && f[0] == user {
			return strings.HasPrefix(f[1], "!")
		}
	}
	t.Fatalf("%s not in /etc/shadow", user)
	return false
}

// The whole lifecycle on a real agent that creates, locks and removes a real
// Linux user, watched through the accountEvents subscription.
func TestAccountLifecycle(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/useradd")
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1")
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 10*time.Second, "web-1 READY", func() bool { return nodeStatus(t, s, "web-1") == "READY" })
	mustPlan(t, s.Admin, "basic", 100)
	user := testUsername(t)

	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Admin.Subscribe(ctx, `subscription($id:ID!){accountEvents(id:$id){status reason}}`, map[string]any{"id": acct.ID})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	waitStatus := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case raw, ok := <-events:
				if !ok {
					t.Fatalf("subscription ended waiting for %s; saw %v", want, seen)
				}
				var ev struct{ AccountEvents struct{ Status string } }
				if err := json.Unmarshal(raw, &ev); err != nil {
					t.Fatal(err)
				}
				seen = append(seen, ev.AccountEvents.Status)
				if ev.AccountEvents.Status == want {
					return
				}
				if ev.AccountEvents.Status == "FAILED" {
					a, _ := s.Admin.Account(ctx, acct.ID)
					t.Fatalf("account FAILED: %+v", a)
				}
			case <-timeout:
				t.Fatalf("no %s within 30s; saw %v", want, seen)
			}
		}
	}

	waitStatus("ACTIVE")
	if got := strings.Join(seen, ","); got != "PENDING,SCHEDULED,PROVISIONING,ACTIVE" {
		t.Errorf("transitions %s", got)
	}
	if !testenv.HasUser(user) {
		t.Fatalf("user %s not created", user)
	}
	home := filepath.Join(ag.Config.Prefix, "home", user)
	if fi, err := os.Stat(filepath.Join(home, "public_html")); err != nil || !fi.IsDir() {
		t.Fatalf("home skeleton missing: %v", err)
	}
	if err := os.WriteFile(filepath.Join(home, "public_html", "index.html"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	if _, err := s.Admin.AccountAction(ctx, "suspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus("SUSPENDED")
	if !shadowLocked(t, user) {
		t.Error("suspended account's user is not locked")
	}
	if _, err := s.Admin.AccountAction(ctx, "unsuspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus("ACTIVE")
	if shadowLocked(t, user) {
		t.Error("unsuspended account's user is still locked")
	}

	if _, err := s.Admin.AccountAction(ctx, "deleteAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus("DELETED")
	if testenv.HasUser(user) {
		t.Error("deleted account's user still exists")
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("home still there: %v", err)
	}
	archives, _ := filepath.Glob(filepath.Join(ag.Config.Prefix, "var/lib/npanel/backups", user+"-*.tar.gz"))
	if len(archives) != 1 {
		t.Errorf("home archive: %v", archives)
	}
	// The name, the domain and the reseller's usage are free again.
	if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "basic"}); err != nil {
		t.Errorf("re-creating a deleted account's name: %v", err)
	}
	if a, err := s.Admin.Account(ctx, acct.ID); err != nil || a != nil {
		t.Errorf("deleted account still readable: %+v, %v", a, err)
	}
}
