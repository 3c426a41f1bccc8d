package cpanel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// testKey is the "node" key secrets are sealed to in these tests.
var testKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

func testSeal(plain []byte, context string) ([]byte, error) {
	return pki.Seal(&testKey.PublicKey, plain, context)
}

func analyzeFile(t testing.TB, p string, lim Limits) (*agentpb.CpanelReport, error) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	return AnalyzeArchive(f, st.Size(), lim, testSeal, "")
}

func findItem(r *agentpb.CpanelReport, kind, name string) *agentpb.CpanelItem {
	for _, it := range r.Items {
		if it.Kind == kind && it.Name == name {
			return it
		}
	}
	return nil
}

func TestAnalyzeLayouts(t *testing.T) {
	// The archive's certificate is signed by cpaneltest's CA: trusted here.
	t.Cleanup(validate.SetCertificateRoots(cpaneltest.CertificateRoots()))
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup} {
		t.Run(layout, func(t *testing.T) {
			o := cpaneltest.Default(layout)
			o.Extra["psql/cpuser_pg.tar"] = "tar"
			o.Extra["pgsql/cpuser_pg2.sql"] = "SELECT 1;\n"
			o.Extra["nonsense/thing"] = "?"
			p := cpaneltest.Build(t, t.TempDir(), o)
			r, err := analyzeFile(t, p, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Username != "cpuser" || r.Layout != layout || r.MainDomain != "example.com" || r.Plan != "gold" || r.ContactEmail != "owner@example.net" {
				t.Errorf("header: user %q layout %q main %q plan %q contact %q", r.Username, r.Layout, r.MainDomain, r.Plan, r.ContactEmail)
			}
			want := []struct {
				kind, name string
				d          agentpb.ImportDisposition
			}{
				{"domain", "example.com", dImport},
				{"addon_domain", "addon.org", dImport},
				{"parked_domain", "parked.net", dImport},
				{"sub_domain", "blog.example.com", dImport},
				{"zone", "example.com", dImport},
				{"zone", "addon.org", dImport},
				{"zone", "parked.net", dImport},
				{"mailbox", "info@example.com", dImport},
				{"mailbox", "sales@addon.org", dImport},
				{"forwarder", "team@example.com", dImport},
				{"forwarder", "*@example.com", dImport},
				{"autoresponder", "info@example.com", dImport},
				{"database", "cpuser_wp", dImport},
				{"database_user", "cpuser_wpuser", dImport},
				{"database_user", "cpuser", dSkip},
				{"certificate", "example.com", dImport},
				{"ftp_account", "uploads@example.com", dSkip},
				{"ftp_account", "cpuser", dSkip},
				{"files", "homedir", dImport},
				{"files", "public_html/.htaccess:11", dAdapt},
				{"files", "public_html/.htaccess:12", dAdapt},
				{"files", "public_html/.htaccess:13", dAdapt},
				{"other", ".ssh/authorized_keys", dSkip},
				{"other", "bandwidth", dSkip},
				{"other", "logs", dSkip},
				{"other", "version", dSkip},
				{"other", "nonsense", dSkip},
				// No user of the archive is granted them (psql_grants.sql).
				{"database", "cpuser_pg", dSkip},
				{"database", "cpuser_pg2", dSkip},
			}
			for _, w := range want {
				it := findItem(r, w.kind, w.name)
				if it == nil {
					t.Errorf("no item %s %s", w.kind, w.name)
					continue
				}
				if it.Disposition != w.d {
					t.Errorf("%s %s: %v (%s), want %v", w.kind, w.name, it.Disposition, it.Note, w.d)
				}
			}
			if it := findItem(r, "files", "public_html/.htaccess:11"); it != nil && !strings.Contains(it.Note, "public_html/.htaccess:11: RewriteCond %{HTTP_COOKIE}") {
				t.Errorf("htaccess note %q", it.Note)
			}
			crons := 0
			for _, it := range r.Items {
				if it.Kind == "cron" {
					crons++
				}
				if it.Kind == "files" && strings.Contains(it.Name, ".htaccess:") {
					if n := it.Name; strings.HasSuffix(n, ":2") || strings.HasSuffix(n, ":4") || strings.HasSuffix(n, ":8") {
						t.Errorf("WordPress front controller line reported: %s", it.Note)
					}
				}
			}
			if crons != 2 || len(r.Crons) != 2 {
				t.Errorf("%d cron items, %d crons, want 2", crons, len(r.Crons))
			}
			// Domains and their document roots.
			got := map[string]string{}
			for _, d := range r.Domains {
				got[d.Domain] = d.Kind + ":" + d.Docroot + ":" + d.AliasOf
			}
			for dom, w := range map[string]string{"example.com": "main:public_html:", "addon.org": "addon:addon.org:", "parked.net": "parked::example.com", "blog.example.com": "sub:public_html/blog:"} {
				if got[dom] != w {
					t.Errorf("domain %s = %q, want %q", dom, got[dom], w)
				}
			}
			if len(r.Domains) != 4 {
				t.Errorf("domains %v", got)
			}
			// Secrets: sealed to the node, for the right purpose only.
			for _, m := range r.Mailboxes {
				h, err := pki.Unseal(testKey, m.SealedPasswordHash, agentpb.MailPasswordHashSealContext(m.Address))
				if err != nil {
					t.Fatalf("%s: %v", m.Address, err)
				}
				var pw string
				for _, mb := range o.Mailboxes {
					if mb.Address == m.Address {
						pw = mb.Password
					}
				}
				if !strings.HasPrefix(string(h), "{SHA512-CRYPT}$6$") || !strings.Contains(string(h), strings.Split(cpaneltest.SHA512Crypt(pw, strings.Split(string(h), "$")[2]), "$")[3]) {
					t.Errorf("%s: hash %s does not match its password", m.Address, h)
				}
				if _, err := pki.Unseal(testKey, m.SealedPasswordHash, agentpb.MailPasswordHashSealContext("other@example.com")); err == nil {
					t.Error("hash opens for another address")
				}
			}
			if len(r.Mailboxes) != 2 || r.Mailboxes[0].Messages+r.Mailboxes[1].Messages != 4 {
				t.Errorf("mailboxes %v", r.Mailboxes)
			}
			for _, m := range r.Mailboxes {
				if m.Address == "info@example.com" && m.QuotaBytes != 1<<30 {
					t.Errorf("quota %d", m.QuotaBytes)
				}
			}
			if len(r.DatabaseUsers) != 1 {
				t.Fatalf("db users %v", r.DatabaseUsers)
			}
			u := r.DatabaseUsers[0]
			h, err := pki.Unseal(testKey, u.SealedPasswordHash, agentpb.DatabasePasswordHashSealContext(u.Name))
			if err != nil || string(h) != cpaneltest.MySQLNativeHash("db-secret-3") {
				t.Errorf("db user hash %s %v", h, err)
			}
			if len(u.Grants) != 1 || u.Grants[0].Database != "cpuser_wp" || u.Grants[0].Privileges[0] != "ALL PRIVILEGES" {
				t.Errorf("grants %v", u.Grants)
			}
			if len(r.Certificates) != 1 || !strings.HasPrefix(r.Certificates[0].CertificatePem, "-----BEGIN CERTIFICATE") || strings.Count(r.Certificates[0].CertificatePem, "BEGIN CERTIFICATE") != 2 {
				t.Errorf("certificates %v", r.Certificates)
			}
			if k, err := pki.Unseal(testKey, r.Certificates[0].SealedPrivateKey, agentpb.CertificateKeySealContext("example.com")); err != nil {
				t.Errorf("key: %v", err)
			} else if _, err := x509.ParsePKCS8PrivateKey(k); err != nil {
				t.Errorf("key is not PKCS#8 DER: %v", err)
			}
			// No secret in clear anywhere in the report.
			clear := fmt.Sprint(r)
			for _, s := range []string{"$6$", "*" + strings.TrimPrefix(cpaneltest.MySQLNativeHash("db-secret-3"), "*"), "PRIVATE KEY"} {
				if strings.Contains(clear, s) {
					t.Errorf("report holds %q in clear", s)
				}
			}
			if r.FidelityPercent == 0 || r.FidelityPercent >= 100 {
				t.Errorf("fidelity %d", r.FidelityPercent)
			}
			if r.HomeFiles == 0 || r.ArchiveBytes == 0 {
				t.Errorf("home files %d archive bytes %d", r.HomeFiles, r.ArchiveBytes)
			}
			if testing.Verbose() {
				for _, it := range r.Items {
					t.Logf("%-14s %-30s %-28s %s", it.Kind, it.Name, it.Disposition, it.Note)
				}
				t.Logf("fidelity %d%%", r.FidelityPercent)
			}
		})
	}
}

func TestAnalyzeHostile(t *testing.T) {
	for _, kind := range cpaneltest.HostileKinds {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			p, entry := cpaneltest.Hostile(t, dir, kind)
			_, err := analyzeFile(t, p, Limits{MinUncompressed: 64 << 20})
			var ee *EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("not refused with an entry error: %v", err)
			}
			if !strings.HasPrefix(ee.Entry, entry) || !strings.Contains(err.Error(), entry) {
				t.Errorf("error %q names %q, want %q", err, ee.Entry, entry)
			}
			t.Log(err)
		})
	}
}
