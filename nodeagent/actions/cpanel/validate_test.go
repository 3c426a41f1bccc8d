package cpanel

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestImportValidate(t *testing.T) {
	m := NewModule(nil, nil)
	ok := func() *agentpb.ImportCpanelBackupAction {
		return &agentpb.ImportCpanelBackupAction{Path: "cpmove-bob.tar.gz", Username: "alice", Files: true,
			Mailboxes: []string{"info@example.com"}, Databases: map[string]string{"bob_wp": "alice_wp"}, Cron: true}
	}
	if err := m.NewImport(ok()).Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*agentpb.ImportCpanelBackupAction){
		"path":          func(r *agentpb.ImportCpanelBackupAction) { r.Path = "../x.tar.gz" },
		"username":      func(r *agentpb.ImportCpanelBackupAction) { r.Username = "Root!" },
		"test username": func(r *agentpb.ImportCpanelBackupAction) { r.Username = "nptabc" },
		"mailbox":       func(r *agentpb.ImportCpanelBackupAction) { r.Mailboxes = []string{"not an address"} },
		"mailbox case":  func(r *agentpb.ImportCpanelBackupAction) { r.Mailboxes = []string{"Info@example.com"} },
		"mailbox twice": func(r *agentpb.ImportCpanelBackupAction) { r.Mailboxes = []string{"a@example.com", "a@example.com"} },
		"db of another": func(r *agentpb.ImportCpanelBackupAction) { r.Databases = map[string]string{"bob_wp": "carol_wp"} },
		"db source":     func(r *agentpb.ImportCpanelBackupAction) { r.Databases = map[string]string{"bob wp;": "alice_wp"} },
		"db target twice": func(r *agentpb.ImportCpanelBackupAction) {
			r.Databases = map[string]string{"bob_a": "alice_wp", "bob_b": "alice_wp"}
		},
		"db target no owner": func(r *agentpb.ImportCpanelBackupAction) { r.Databases = map[string]string{"bob_a": "alice"} },
	} {
		r := ok()
		mut(r)
		if err := m.NewImport(r).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	a := m.NewImport(&agentpb.ImportCpanelBackupAction{Path: "x.tar.gz", Username: "nptabc"})
	a.AllowTestUsernames()
	if err := a.Validate(); err != nil {
		t.Errorf("test user refused when allowed: %v", err)
	}
	if err := m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: "/etc/shadow.tar.gz"}).Validate(); err == nil {
		t.Error("analyze: absolute path accepted")
	}
}

// The analyze action seals to the key of the node's certificate in its
// data dir, and reads the archive through the import area only.
func TestAnalyzeAction(t *testing.T) {
	p := platform.Debian12(t.TempDir())
	area := p.Cpanel().ImportDir
	if err := os.MkdirAll(area, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node-test"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &testKey.PublicKey, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, nodeCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := &actions.Env{Node: "node-test", Logger: slog.New(slog.DiscardHandler), Profile: p, DataDir: dataDir}
	arch := cpaneltest.Build(t, area, cpaneltest.Default(cpaneltest.LayoutCpmove))
	m := NewModule(nil, nil)
	a := m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: filepath.Base(arch)})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Apply(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	r := out.(*agentpb.AnalyzeCpanelBackupResult).Report
	if r.Username != "cpuser" || len(r.Mailboxes) != 2 {
		t.Fatalf("report %v", r)
	}
	if _, err := pki.Unseal(testKey, r.Mailboxes[0].SealedPasswordHash, agentpb.MailPasswordHashSealContext(r.Mailboxes[0].Address)); err != nil {
		t.Errorf("not sealed to the node's key: %v", err)
	}
	// A symlink in the area pointing out is not followed.
	outside := cpaneltest.Build(t, t.TempDir(), cpaneltest.Default(cpaneltest.LayoutBackup))
	if err := os.Symlink(outside, filepath.Join(area, "link.tar.gz")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: "link.tar.gz"}).Apply(context.Background(), env); err == nil {
		t.Error("followed a symlink out of the import area")
	}
	if _, err := m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: "missing.tar.gz"}).Apply(context.Background(), env); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
		t.Errorf("missing archive: %v", err)
	}
	// Not an archive, or a truncated one: INVALID.
	raw, _ := os.ReadFile(arch)
	for name, data := range map[string][]byte{"junk.tar.gz": []byte("not gzip"), "cut.tar.gz": raw[:len(raw)/2]} {
		if err := os.WriteFile(filepath.Join(area, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: name}).Apply(context.Background(), env)
		if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_INVALID {
			t.Errorf("%s: %v (%v)", name, err, actions.ReasonOf(err))
		}
	}
}

func pemBlockOf(t testing.TB, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
