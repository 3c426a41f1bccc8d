package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

// An account user of one name lives on an in-process agent (the host's
// user database) and on an isolated agent (its own) with different homes;
// the isolated agent's useradd and userdel never reach the host's.
func TestIsolatedAgentHasOwnUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: agents create Linux users")
	}
	s := testenv.StartServer(t)
	host := s.StartAgent(t, "host-node")
	prof, err := platform.DetectProfile(host.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	// hostUser makes a user in the host's database by the account action,
	// as the in-process agent runs it.
	hostUser := func(name string) string {
		t.Helper()
		testenv.RemoveUserAtCleanup(t, name)
		ensure := account.NewModule(nil, nil, nil).NewEnsure(&agentpb.EnsureAccountAction{Username: name})
		ensure.AllowTestUsernames()
		if err := ensure.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := ensure.Apply(testenv.Context(t), &actions.Env{Node: host.Name, Profile: prof, DataDir: host.Config.DataDir, Logger: testenv.Logger()}); err != nil {
			t.Fatalf("host user %s: %v", name, err)
		}
		home, ok := testenv.HostUser(name)
		if !ok || !strings.HasPrefix(home, host.Config.Prefix+"/") {
			t.Fatalf("host user %s: home %q, present %v; want under %s", name, home, ok, host.Config.Prefix)
		}
		return home
	}

	// The host holds the user before the isolated agent starts, as a
	// migration's source does before its target: the isolated agent must
	// not see it (it would refuse a user whose home is not under its own
	// prefix), nor a user the host gains later.
	user := testenv.TestUsername()
	hostHome := hostUser(user)
	own := s.StartIsolatedAgent(t, "own-node")
	// After the start, which may build the npanel binary first.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	later := testenv.TestUsername()
	hostUser(later)
	for _, name := range []string{user, later} {
		if _, ok := own.User(name); ok {
			t.Fatalf("the isolated agent sees the host's %s", name)
		}
	}
	if _, ok := own.User("www-data"); !ok {
		t.Error("the isolated agent lacks the host's system user www-data")
	}

	// The same name on the isolated node, through the control plane.
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "basic", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "basic", Node: own.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitAccount(ctx, t, s, acct.ID, "ACTIVE")
	ownHome, ok := own.User(user)
	if !ok || !strings.HasPrefix(ownHome, own.Config.Prefix+"/") {
		t.Fatalf("isolated user %s: home %q, present %v; want under %s", user, ownHome, ok, own.Config.Prefix)
	}
	if fi, err := os.Stat(ownHome); err != nil || !fi.IsDir() {
		t.Errorf("isolated user's home %s: %v", ownHome, err)
	}
	if h, _ := testenv.HostUser(user); h != hostHome {
		t.Errorf("host user's home changed to %q", h)
	}

	// A restarted agent keeps its own /etc.
	own.Stop()
	own.Start()
	own.WaitReady()
	if h, ok := own.User(user); !ok || h != ownHome {
		t.Errorf("after a restart the isolated user's home is %q (present %v), want %s", h, ok, ownHome)
	}

	// Deleting the account runs userdel in the isolated agent: the host's
	// user of the same name stays.
	if _, err := s.Admin.AccountAction(ctx, "deleteAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "isolated user removed", func() bool {
		_, ok := own.User(user)
		return !ok
	})
	if h, ok := testenv.HostUser(user); !ok || h != hostHome {
		t.Errorf("host user after the isolated delete: home %q, present %v", h, ok)
	}
	// useradd's side files (the backup passwd-) went to the agent's own
	// /etc, not the host's.
	if _, err := os.Stat(filepath.Join(own.Etc, "passwd-")); err != nil {
		t.Errorf("useradd's backup is not in the isolated /etc: %v", err)
	}
	own.Stop()
	if own.Running() {
		t.Error("isolated agent still running after Stop")
	}
}

func waitAccount(ctx context.Context, t *testing.T, s *testenv.Server, id, want string) {
	t.Helper()
	last := ""
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if a, err := s.Admin.Account(ctx, id); err == nil && a != nil {
			if last = a.Status; last == want {
				return
			}
		}
	}
	t.Fatalf("account %s not %s after 40s (last %s)", id, want, last)
}
