package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// The cPanel import controller against a real server, the test playing
// the node: it answers analyze_cpanel_backup with a canned report (its
// hashes sealed to the node's key, as the agent seals them) and
// import_cpanel_backup with a canned result, and every ensure as
// succeeded. The agent's side is proved by the end-to-end test.

type cpanelNode struct {
	name string
	st   *store.Store
	pub  []byte

	mu       sync.Mutex
	report   *agentpb.CpanelReport
	result   *agentpb.ImportCpanelBackupResult
	hold     map[string]bool // action names not answered for now
	imports  []*agentpb.ImportCpanelBackupAction
	analyzed int
}

func startCpanelNode(t *testing.T, s *testenv.Server, st *store.Store, name string) *cpanelNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.FakeNode(t, name, nil, 100, 100_000)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := st.UpdateNodeState(ctx, name, func(ns *store.NodeState) bool { ns.PublicKey = pub; return true }); err != nil {
		t.Fatal(err)
	}
	n := &cpanelNode{name: name, st: st, pub: pub, hold: map[string]bool{}}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tasks, _, err := st.PendingTasks(ctx, name)
			if err != nil {
				continue
			}
			for _, task := range tasks {
				res := n.respond(task)
				if res == nil {
					continue
				}
				res.TaskId, res.Generation, res.FinishedUnixNano = task.GetId(), task.GetGeneration(), time.Now().UnixNano()
				if res.Status == agentpb.TaskStatus_TASK_STATUS_UNSPECIFIED {
					res.Status = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
				}
				_, _ = st.CompleteTask(ctx, name, res, store.NewAuditEvent("node:"+name, "test", "", "", ""))
			}
		}
	}()
	return n
}

func (n *cpanelNode) setHold(action string, on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hold[action] = on
}

func (n *cpanelNode) respond(task *agentpb.Task) *agentpb.TaskResult {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch a := task.GetAction().(type) {
	case *agentpb.Task_AnalyzeCpanelBackup:
		if n.hold["analyze"] {
			return nil
		}
		n.analyzed++
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_AnalyzeCpanelBackup{AnalyzeCpanelBackup: &agentpb.AnalyzeCpanelBackupResult{Report: n.report}}}
	case *agentpb.Task_ImportCpanelBackup:
		if n.hold["import"] {
			return nil
		}
		n.imports = append(n.imports, a.ImportCpanelBackup)
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_ImportCpanelBackup{ImportCpanelBackup: n.result}}
	case *agentpb.Task_EnsureZone:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: a.EnsureZone.GetZone(), Kind: "Master", Serial: 1, Changed: true}}}
	case *agentpb.Task_EnsureDatabase:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Database{Database: &agentpb.DatabaseResult{Name: a.EnsureDatabase.GetName()}}}
	case *agentpb.Task_EnsureDatabaseUser:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_DatabaseUser{DatabaseUser: &agentpb.DatabaseUserResult{Name: a.EnsureDatabaseUser.GetName()}}}
	case *agentpb.Task_EnsureMailDomain:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailDomain{MailDomain: &agentpb.MailDomainResult{Domain: a.EnsureMailDomain.GetDomain()}}}
	case *agentpb.Task_EnsureMailbox:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Mailbox{Mailbox: &agentpb.MailboxResult{Address: a.EnsureMailbox.GetAddress()}}}
	}
	return &agentpb.TaskResult{}
}

func (n *cpanelNode) seal(t *testing.T, secret, context string) []byte {
	t.Helper()
	b, err := pki.SealDER(n.pub, []byte(secret), context)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cannedReport is what the agent would report of a small cPanel account.
func cannedReport(t *testing.T, n *cpanelNode) *agentpb.CpanelReport {
	item := func(kind, name string, d agentpb.ImportDisposition, note string) *agentpb.CpanelItem {
		return &agentpb.CpanelItem{Kind: kind, Name: name, Disposition: d, Note: note, Entry: "cpmove-cpjoe/" + kind}
	}
	imp, adapt, skip := agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT, agentpb.ImportDisposition_IMPORT_DISPOSITION_ADAPT, agentpb.ImportDisposition_IMPORT_DISPOSITION_SKIP
	return &agentpb.CpanelReport{
		Username: "cpjoe", Layout: "backup", MainDomain: "joe.example.com", Plan: "default", FidelityPercent: 90,
		Items: []*agentpb.CpanelItem{
			item("domain", "joe.example.com", imp, ""),
			item("addon_domain", "shop-joe.example.org", imp, ""),
			item("parked_domain", "joealias.example.org", imp, ""),
			item("zone", "joe.example.com", imp, ""),
			item("mailbox", "info@joe.example.com", imp, ""),
			item("database", "cpjoe_wp", imp, ""),
			item("database_user", "cpjoe_wpuser", imp, ""),
			item("certificate", "joe.example.com", imp, ""),
			item("files", "homedir", adapt, "public_html/.htaccess:3: RewriteCond %{HTTP_COOKIE} is not taken by nginx"),
			item("cron", "0 * * * * php cron.php", imp, ""),
			item("ftp_account", "ftpjoe", skip, "nPanel serves no FTP"),
		},
		Domains: []*agentpb.CpanelDomain{
			{Domain: "joe.example.com", Kind: "main", Docroot: "public_html"},
			{Domain: "shop-joe.example.org", Kind: "addon", Docroot: "public_html/shop"},
			{Domain: "joealias.example.org", Kind: "parked", AliasOf: "joe.example.com"},
		},
		Zones: []*agentpb.CpanelZone{{Name: "joe.example.com", Text: "$ORIGIN joe.example.com.\n$TTL 300\n@ IN A 192.0.2.10\nlegacy IN A 192.0.2.11\n"}},
		Mailboxes: []*agentpb.CpanelMailbox{{Address: "info@joe.example.com", QuotaBytes: 100 << 20, Messages: 2, Bytes: 4096,
			SealedPasswordHash: n.seal(t, "{SHA512-CRYPT}$6$salt$hash", agentpb.MailPasswordHashSealContext("info@joe.example.com"))}},
		Forwarders:     []*agentpb.CpanelForwarder{{Source: "sales@joe.example.com", Destinations: []string{"info@joe.example.com"}}, {Source: "*@joe.example.com", Destinations: []string{":fail:"}}},
		Autoresponders: []*agentpb.CpanelAutoresponder{{Address: "info@joe.example.com", Subject: "Away", Body: "Back on Monday."}},
		Databases:      []*agentpb.CpanelDatabase{{Name: "cpjoe_wp", Bytes: 2048}},
		DatabaseUsers: []*agentpb.CpanelDatabaseUser{{Name: "cpjoe_wpuser",
			SealedPasswordHash: n.seal(t, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", agentpb.DatabasePasswordHashSealContext("cpjoe_wpuser")),
			Grants:             []*agentpb.CpanelGrant{{Database: "cpjoe_wp", Privileges: []string{"ALL"}}}}},
		Certificates: []*agentpb.CpanelCertificate{cannedCertificate(t, n, "joe.example.com")},
		Crons:        []*agentpb.CpanelCron{{Schedule: "0 * * * *", Command: "php cron.php"}},
	}
}

// cannedCertificate is the node's report of an archive's certificate for
// domain: its chain (signed by cpaneltest's CA, which the test trusts), its
// key as PKCS#8 DER sealed to the node for installCertificate.
func cannedCertificate(t *testing.T, n *cpanelNode, domain string) *agentpb.CpanelCertificate {
	t.Helper()
	t.Cleanup(validate.SetCertificateRoots(cpaneltest.CertificateRoots()))
	all, err := cpaneltest.CertificatePEM(domain)
	if err != nil {
		t.Fatal(err)
	}
	var key, chain []byte
	for rest := all; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" {
			key = b.Bytes
		} else {
			chain = append(chain, pem.EncodeToMemory(b)...)
		}
	}
	return &agentpb.CpanelCertificate{Domain: domain, CertificatePem: string(chain), SealedPrivateKey: n.seal(t, string(key), agentpb.CertificateKeySealContext(domain))}
}

func cannedFill() *agentpb.ImportCpanelBackupResult {
	return &agentpb.ImportCpanelBackupResult{Files: 12, Bytes: 40960, Items: []*agentpb.CpanelItem{
		{Kind: "files", Name: "homedir", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT},
		{Kind: "cron", Name: "0 * * * * php cron.php", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT},
	}}
}

type cpanelEnv struct {
	s    *testenv.Server
	st   *store.Store
	node *cpanelNode
}

func newCpanelEnv(t *testing.T) *cpanelEnv {
	t.Helper()
	etcd := testenv.StartEtcd(t)
	s := testenv.StartServer(t, testenv.WithEtcd(etcd))
	// The test's own client: the node keeps answering across restarts.
	st := store.New(testenv.EtcdClient(t, etcd))
	e := &cpanelEnv{s: s, st: st, node: startCpanelNode(t, s, st, "web-1")}
	e.node.report, e.node.result = cannedReport(t, e.node), cannedFill()
	if _, err := s.Admin.CreatePlan(context.Background(), client.Plan{Name: "web", DiskMB: 1000, BandwidthMB: 1000, Domains: 5,
		Mailboxes: 3, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *cpanelEnv) waitImport(t *testing.T, id, what string, cond func(im *store.Import) bool) *store.Import {
	t.Helper()
	var got *store.Import
	testenv.WaitFor(t, 60*time.Second, id+": "+what, func() bool {
		im, err := e.st.GetImport(context.Background(), id)
		if err != nil {
			return false
		}
		got = im
		return cond(im)
	})
	return got
}

func finished(im *store.Import) bool { return im.Status.Finished() }

func itemOf(items []store.ImportItem, kind, name string) *store.ImportItem {
	for i := range items {
		if items[i].Kind == kind && items[i].Name == name {
			return &items[i]
		}
	}
	return nil
}

func TestCpanelImportController(t *testing.T) {
	e := newCpanelEnv(t)
	ctx := context.Background()
	im, err := e.s.Admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "web-1", Path: "cpmove-cpjoe.tar.gz", Owner: "admin", Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitImport(t, im.ID, "finished", finished)
	if got.Status != store.ImportDone {
		t.Fatalf("import %s: %s", got.Status, got.Error)
	}
	a, _, err := e.st.GetAccount(ctx, got.Account)
	if err != nil {
		t.Fatal(err)
	}
	if a.Username != "cpjoe" || a.Domain != "joe.example.com" || a.Owner != "admin" || a.Plan != "web" || a.PinnedNode != "web-1" || a.Node != "web-1" {
		t.Fatalf("account: %+v", a)
	}
	if i := a.SiteIndex("shop-joe.example.org"); i < 0 || a.Sites[i].Docroot != "public_html/shop" || a.Sites[i].AliasOf != "" {
		t.Errorf("add-on site: %+v", a.Sites)
	}
	if i := a.SiteIndex("joealias.example.org"); i < 0 || a.Sites[i].AliasOf != "joe.example.com" {
		t.Errorf("parked domain: %+v", a.Sites)
	}
	z, _, err := e.st.GetZone(ctx, "joe.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(z.Records, func(r store.ZoneRecord) bool { return r.Name == "legacy.joe.example.com." && r.Content == "192.0.2.11" }) {
		t.Errorf("zone records: %+v", z.Records)
	}
	mail, err := e.st.GetMail(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	box := mail.Mailboxes["info@joe.example.com"]
	if box == nil || !bytes.Equal(box.SealedPasswordHash, e.node.report.Mailboxes[0].SealedPasswordHash) || box.SealedPassword != nil ||
		box.PasswordGeneration == 0 || box.Node != "web-1" || box.QuotaMB != 100 || box.Autoresponder == nil || box.Autoresponder.Subject != "Away" {
		t.Errorf("mailbox: %+v", box)
	}
	if d := mail.Domains["joe.example.com"]; d == nil || !slices.Equal(d.Aliases["sales"], []string{"info@joe.example.com"}) || d.CatchAll != ":fail:" {
		t.Errorf("mail domain: %+v", d)
	}
	dbs, err := e.st.GetDatabases(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := dbs.Databases["cpjoe_wp"]; d == nil {
		t.Errorf("database cpjoe_wp missing: %v", dbs.Databases)
	}
	u := dbs.Users["cpjoe_wpuser"]
	if u == nil || !bytes.Equal(u.SealedPasswordHash, e.node.report.DatabaseUsers[0].SealedPasswordHash) || u.SealedPassword != nil ||
		u.GrantIndex("cpjoe_wp") < 0 {
		t.Errorf("database user: %+v", u)
	}
	// The certificate, installed as installCertificate installs one, by
	// the importing admin from the import.
	crt, err := e.st.GetCertificate(ctx, "joe.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !crt.Custom || !crt.AutoRenew || crt.Node != "web-1" || crt.Account != a.ID || crt.CustomChainPEM != e.node.report.Certificates[0].CertificatePem {
		t.Errorf("certificate: %+v", crt)
	}
	if evs, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: "installCertificate", Target: "joe.example.com"}, "", 10); err != nil ||
		!slices.ContainsFunc(evs, func(ev store.AuditEvent) bool {
			return ev.Actor == "admin" && ev.Source == "import/"+im.ID && ev.Result == "ok"
		}) {
		t.Errorf("installCertificate audit: %+v %v", evs, err)
	}
	e.node.mu.Lock()
	fills := slices.Clone(e.node.imports)
	e.node.mu.Unlock()
	if len(fills) != 1 {
		t.Fatalf("%d import tasks, want 1", len(fills))
	}
	f := fills[0]
	if f.GetUsername() != "cpjoe" || f.GetPath() != "cpmove-cpjoe.tar.gz" || !f.GetFiles() || !f.GetCron() ||
		!slices.Equal(f.GetMailboxes(), []string{"info@joe.example.com"}) || f.GetDatabases()["cpjoe_wp"] != "cpjoe_wp" {
		t.Errorf("import task: %v", f)
	}
	// The report: the analysis with what the import did.
	for _, w := range []struct{ kind, name, disp, note string }{
		{"certificate", "joe.example.com", "IMPORT", "ACME takes over its renewal"},
		{"database", "cpjoe_wp", "IMPORT", ""},
		{"database_user", "cpjoe_wpuser", "IMPORT", ""},
		{"files", "homedir", "ADAPT", "RewriteCond"},
		{"ftp_account", "ftpjoe", "SKIP", "FTP"},
		{"mailbox", "info@joe.example.com", "IMPORT", ""},
		{"parked_domain", "joealias.example.org", "IMPORT", ""},
		{"zone", "joe.example.com", "ADAPT", "point at the node's 127.0.0.1"},
	} {
		it := itemOf(got.Items, w.kind, w.name)
		if it == nil || it.Disposition != w.disp || !strings.Contains(it.Note, w.note) {
			t.Errorf("report item %s %s: %+v, want %s (%q)", w.kind, w.name, it, w.disp, w.note)
		}
	}
	// Reachable from the account, with no secret in the API's answer.
	ci, err := e.s.Admin.AccountImport(ctx, a.ID)
	if err != nil || ci == nil || ci.ID != im.ID || ci.Status != "DONE" || ci.Report == nil || ci.Report.Username != "cpjoe" {
		t.Fatalf("account's import: %+v %v", ci, err)
	}
	js, _ := json.Marshal(ci)
	for _, secret := range [][]byte{e.node.report.Mailboxes[0].SealedPasswordHash, e.node.report.DatabaseUsers[0].SealedPasswordHash} {
		if bytes.Contains(js, secret) || strings.Contains(string(js), "SHA512") {
			t.Fatal("the API's import shows a sealed hash")
		}
	}
	// Audited.
	evs, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: "importCpanelBackup"}, "", 10)
	if err != nil || len(evs) != 1 {
		t.Errorf("importCpanelBackup audit: %d %v", len(evs), err)
	}
	evs, _, _, err = e.st.ListAudit(ctx, store.AuditFilter{Action: "createAccount"}, "", 10)
	if err != nil || len(evs) != 1 || evs[0].Actor != "admin" || evs[0].Target != "cpjoe" {
		t.Errorf("createAccount audit: %+v %v", evs, err)
	}
}

// TestCpanelImportResumes restarts the server while the import waits for
// the node's analysis and again while it waits for the fill: the new term
// picks the import up where it was, one account, one fill.
func TestCpanelImportResumes(t *testing.T) {
	e := newCpanelEnv(t)
	ctx := context.Background()
	e.node.setHold("analyze", true)
	e.node.setHold("import", true)
	im, err := e.s.Admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "web-1", Path: "backup-1.1.2026_cpjoe.tar.gz", Owner: "admin", Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitImport(t, im.ID, "analyzing", func(im *store.Import) bool { return im.Status == store.ImportAnalyzing && im.TaskID != "" })
	e.s.Restart()
	e.node.setHold("analyze", false)
	e.waitImport(t, im.ID, "filling", func(im *store.Import) bool { return im.Status == store.ImportFilling })
	e.s.Restart()
	e.node.setHold("import", false)
	got := e.waitImport(t, im.ID, "finished", finished)
	if got.Status != store.ImportDone {
		t.Fatalf("import %s: %s", got.Status, got.Error)
	}
	e.node.mu.Lock()
	analyzed, fills := e.node.analyzed, len(e.node.imports)
	e.node.mu.Unlock()
	if analyzed != 1 || fills != 1 {
		t.Errorf("%d analyses, %d fills; want one each", analyzed, fills)
	}
	a, _, err := e.st.GetAccount(ctx, got.Account)
	if err != nil || a.Username != "cpjoe" {
		t.Fatalf("account: %+v %v", a, err)
	}
	evs, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: "createAccount"}, "", 10)
	if err != nil || len(evs) != 1 {
		t.Errorf("%d accounts created: %v", len(evs), err)
	}
}

// TestCpanelImportPartial: an item the API refuses and an item the node
// fails to fill make the import PARTIAL, each named with why.
func TestCpanelImportPartial(t *testing.T) {
	e := newCpanelEnv(t)
	ctx := context.Background()
	e.node.report.Forwarders = append(e.node.report.Forwarders, &agentpb.CpanelForwarder{Source: "bad@joe.example.com", Destinations: []string{"not an address"}})
	e.node.result.Failed = []*agentpb.BackupItemFailure{{Item: "mailbox:info@joe.example.com", Error: "maildir: short read"}}
	// Renamed: the databases and users follow the new name, the user with
	// its hash (the analysis sealed it under that name).
	im, err := e.s.Admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "web-1", Path: "cpmove-cpjoe.tar.gz", Owner: "admin", Plan: "web", Username: new("joe1")})
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitImport(t, im.ID, "finished", finished)
	if got.Status != store.ImportPartial {
		t.Fatalf("import %s (%s), want PARTIAL", got.Status, got.Error)
	}
	if it := itemOf(got.Items, "forwarder", "bad@joe.example.com"); it == nil || it.Disposition != "FAILED" || it.Note == "" {
		t.Errorf("refused forwarder: %+v", it)
	}
	if it := itemOf(got.Items, "mailbox", "info@joe.example.com"); it == nil || it.Disposition != "FAILED" || !strings.Contains(it.Note, "short read") {
		t.Errorf("failed mailbox: %+v", it)
	}
	if it := itemOf(got.Items, "database", "cpjoe_wp"); it == nil || it.Disposition != "ADAPT" || !strings.Contains(it.Note, "imported as joe1_wp") {
		t.Errorf("renamed database: %+v", it)
	}
	if it := itemOf(got.Items, "database_user", "cpjoe_wpuser"); it == nil || it.Disposition != "ADAPT" || !strings.Contains(it.Note, "imported as joe1_wpuser") {
		t.Errorf("renamed database user: %+v", it)
	}
	dbs, err := e.st.GetDatabases(ctx, got.Account)
	if err != nil {
		t.Fatal(err)
	}
	if u := dbs.Users["joe1_wpuser"]; u == nil || u.SealedPasswordHash == nil || u.GrantIndex("joe1_wp") < 0 {
		t.Errorf("renamed user: %+v", u)
	}
	e.node.mu.Lock()
	fill := e.node.imports[len(e.node.imports)-1]
	e.node.mu.Unlock()
	if fill.GetDatabases()["cpjoe_wp"] != "joe1_wp" || fill.GetUsername() != "joe1" {
		t.Errorf("fill of the renamed account: %v", fill)
	}
	ci, err := e.s.Admin.CpanelImport(ctx, im.ID)
	if err != nil || ci.Status != "PARTIAL" {
		t.Fatalf("cpanelImport: %+v %v", ci, err)
	}
}
