package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// npanel ctl import through the real binary against a server in the test
// process, the test answering the node's analysis: the report printed
// with each item's disposition and note and the fidelity, an import
// started, shown and listed, -o json, and exit 2 with a message for bad
// input (the CLI's own checks and the server's INVALID_INPUT).
func TestImportCLI(t *testing.T) {
	s := testenv.StartServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.FakeNode(t, "n1", nil, 100, 100_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "im", DiskMB: 100, BandwidthMB: 100, Domains: 2, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	st := s.Store()
	rep := &agentpb.CpanelReport{Username: "cpcli", Layout: "cpmove", MainDomain: "cpcli.example.com", FidelityPercent: 75,
		Items: []*agentpb.CpanelItem{
			{Kind: "domain", Name: "cpcli.example.com", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT},
			{Kind: "files", Name: "homedir", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_ADAPT, Note: "public_html/.htaccess:12: RewriteCond %{HTTP_COOKIE}"},
			{Kind: "ftp_account", Name: "ftpuser", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_SKIP, Note: "no FTP"},
		}}
	go func() {
		for ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			tasks, _, err := st.PendingTasks(ctx, "n1")
			if err != nil {
				continue
			}
			for _, task := range tasks {
				if task.GetAnalyzeCpanelBackup() == nil {
					continue
				}
				_, _ = st.CompleteTask(ctx, "n1", &agentpb.TaskResult{TaskId: task.GetId(), Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
					Result: &agentpb.TaskResult_AnalyzeCpanelBackup{AnalyzeCpanelBackup: &agentpb.AnalyzeCpanelBackupResult{Report: rep}}},
					store.NewAuditEvent("node:n1", "test", "", "", ""))
			}
		}
	}()
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=" + s.URL()}
	if out, code := run(t, env, testenv.AdminPassword, "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	ok := func(want []string, args ...string) string {
		t.Helper()
		out, code := run(t, env, "", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Fatalf("%v: want %q in: %s", args, w, out)
			}
		}
		return out
	}
	ok([]string{"Fidelity:", "75%", "files", "ADAPT", "htaccess:12", "ftp_account", "SKIP", "no FTP"},
		"ctl", "import", "analyze", "--node", "n1", "cpmove-cpcli.tar.gz")
	out := ok(nil, "ctl", "-o", "json", "import", "cpanel", "--node", "n1", "--owner", "admin", "--plan", "im", "cpmove-cpcli.tar.gz")
	var im client.CpanelImport
	if err := json.Unmarshal([]byte(out), &im); err != nil || im.ID == "" {
		t.Fatalf("import -o json: %v: %s", err, out)
	}
	ok([]string{im.ID, "n1:cpmove-cpcli.tar.gz"}, "ctl", "import", "show", im.ID)
	ok([]string{im.ID, "cpmove-cpcli.tar.gz"}, "ctl", "import", "list")
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"analyze", "cpmove-x.tar.gz"}, "--node is required"},
		{[]string{"analyze", "--node", "n1", "/etc/passwd.tar.gz"}, "relative"},
		{[]string{"analyze", "--node", "n1", "../x.tar.gz"}, "clean path"},
		{[]string{"analyze", "--node", "n1", "x.zip"}, ".tar.gz"},
		{[]string{"cpanel", "--node", "n1", "--plan", "im", "x.tgz"}, "--owner is required"},
		{[]string{"cpanel", "--node", "n1", "--owner", "admin", "--plan", "nope", "x.tgz"}, "no plan"},
		{[]string{"cpanel", "--node", "nonode", "--owner", "admin", "--plan", "im", "x.tgz"}, "no node"},
		{[]string{"frobnicate"}, "unknown command"},
	} {
		out, code := run(t, env, "", append([]string{"ctl", "import"}, bad.args...)...)
		if code != 2 || !strings.Contains(out, bad.want) {
			t.Errorf("import %v: exit %d, want 2 with %q: %s", bad.args, code, bad.want, out)
		}
	}
}
