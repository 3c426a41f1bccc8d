package controlplane_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"database/sql"
	"encoding/pem"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/validate"
)

// cPanel import end to end: synthetic archives in both layouts (old
// cpmove with homedir.tar, current backup-... with homedir/), built by
// cpaneltest into a real agent's import area, are analyzed and imported
// through the API; then the real daemons serve what the archive held:
// nginx/PHP the site (index.php), the add-on and the parked domain,
// PowerDNS the zone, Dovecot the mailbox's messages to its cPanel
// password, MariaDB the rows to the database user's old password, and
// the cron spool holds the user's crontab.
func TestCpanelImportE2E(t *testing.T) {
	requireBackupE2E(t)
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/sbin/exim4", "/usr/sbin/dovecot", "/usr/sbin/mariadbd"} {
		testenv.RequireDaemon(t, d)
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1", testenv.WithModules(t, "web", "dns", "db", "mail"))
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 120*time.Second, "web-1's daemons running", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "web-1")
		running := map[string]bool{}
		for _, sv := range svcs {
			running[sv.Name] = sv.State == "RUNNING"
		}
		return err == nil && running["nginx"] && running["mariadb"] && running["exim"] && running["dovecot"]
	})
	if _, err := s.Admin.UpdateNode(ctx, "web-1", client.NodeUpdate{Roles: []string{"WEB", "DNS", "MAIL", "DB"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "cp", DiskMB: 20000, BandwidthMB: 1000, Domains: 10, Mailboxes: 5, Databases: 3, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	prof, err := platform.DetectProfile(ag.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	// The archives' certificates are signed by cpaneltest's CA: trusted
	// by the node that checks them and the API that installs them (one
	// process here).
	t.Cleanup(validate.SetCertificateRoots(cpaneltest.CertificateRoots()))
	// PostgreSQL where the node has it: the archives then carry a
	// PostgreSQL database (pg_dump's tar format) and its user.
	_, pgErr := os.Stat(prof.DB().Postgres)
	withPG := pgErr == nil
	if withPG {
		testenv.WaitFor(t, 90*time.Second, "postgresql running", func() bool {
			svcs, _, err := s.Admin.Services(ctx, "web-1")
			return err == nil && slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == "postgresql" && sv.State == "RUNNING" })
		})
	}
	area := prof.Cpanel().ImportDir
	if err := os.MkdirAll(area, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup} {
		// Made by the parent: its Linux user outlives the subtest, as
		// the account does (the node's PHP pools name every account's).
		username := testUsername(t)
		t.Run(layout, func(t *testing.T) {
			// The archive's cPanel user is the account's (a test name):
			// a database user keeps its password only under its own name.
			o := cpanelOptions(layout, username)
			o.Databases[0].Definers = true
			if withPG {
				o.PgDatabases = []cpaneltest.PgDatabase{{Name: username + "_shop", User: username + "_shopper", Password: "pg-secret-1"}}
			}
			archive := cpaneltest.Build(t, area, o)
			rel := filepath.Base(archive)
			rep, err := s.Admin.AnalyzeCpanelBackup(ctx, "web-1", rel)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Username != o.User || rep.MainDomain != o.MainDomain || rep.Layout != layout || rep.FidelityPercent == 0 {
				t.Fatalf("analysis: %+v", rep)
			}
			im, err := s.Admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "web-1", Path: rel, Owner: "admin", Plan: "cp"})
			if err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 4*time.Minute, "import "+im.ID+" finished", func() bool {
				cur, err := s.Admin.CpanelImport(ctx, im.ID)
				if err != nil {
					t.Fatal(err)
				}
				im = cur
				return im.Finished()
			})
			for _, it := range im.Items {
				t.Logf("%-14s %-40s %-7s %s", it.Kind, it.Name, it.Disposition, it.Note)
			}
			if im.Status != "DONE" {
				t.Errorf("import %s: %s", im.Status, deref(im.Error))
			}
			if im.Account == nil {
				t.Fatal("no account")
			}
			// The site, the add-on and the parked domain.
			addr := ag.Config.HTTPListen
			for host, want := range map[string]string{
				o.MainDomain:          "hello from " + o.MainDomain,
				o.Addons[0].Domain:    "<h1>" + o.Addons[0].Domain + "</h1>",
				o.Parked[0]:           "hello from " + o.MainDomain,
				"www." + o.MainDomain: "hello from " + o.MainDomain,
			} {
				testenv.WaitFor(t, 30*time.Second, host+" answers", func() bool {
					code, body, _ := get(t, addr, host, "/")
					return code == 200 && strings.Contains(body, want)
				})
			}
			// The zone, from the node's PowerDNS, pointing at the node.
			testenv.WaitFor(t, 30*time.Second, o.MainDomain+" MX served", func() bool {
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(o.MainDomain), dns.TypeMX)
				in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, ag.Config.DNSListen)
				return err == nil && len(in.Answer) > 0
			})
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(o.MainDomain), dns.TypeA)
			in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, ag.Config.DNSListen)
			if err != nil || len(in.Answer) == 0 || strings.Contains(in.Answer[0].String(), "192.0.2.10") {
				t.Errorf("A %s: %v %v (want the node's address, not the old server's)", o.MainDomain, in, err)
			}
			// The mailbox, with its cPanel password, holding its messages.
			box := o.Mailboxes[0]
			msgs := -1
			testenv.WaitFor(t, 30*time.Second, box.Address+" logs in", func() bool {
				// Dovecot may be reloading: a refused handshake is tried again.
				c, err := imapclient.DialTLS(ag.Config.IMAPSListen, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
				if err != nil {
					return false
				}
				defer c.Close()
				if err := c.Login(box.Address, box.Password).Wait(); err != nil {
					return false
				}
				// On this connection: the node's Dovecot takes one login
				// of a user at a time from one address.
				sel, err := c.Select("INBOX", nil).Wait()
				if err != nil {
					t.Fatalf("select INBOX of %s: %v", box.Address, err)
				}
				msgs = int(sel.NumMessages)
				_ = c.Logout().Wait()
				return true
			})
			if msgs != box.Messages {
				t.Errorf("%s holds %d messages, want %d", box.Address, msgs, box.Messages)
			}
			// The database, renamed, to its user's old password.
			db := o.Databases[0]
			newDB := username + strings.TrimPrefix(db.Name, o.User)
			newUser := username + strings.TrimPrefix(db.User, o.User)
			rows := dbRows(t, prof.DB().MariaDBSocket, newUser, db.Password, newDB, "SELECT id, v, 0 FROM items ORDER BY id")
			if len(rows) != db.Rows {
				t.Errorf("%s as %s: %v, want %d rows", newDB, newUser, rows, db.Rows)
			}
			// Its view, procedure and trigger (DEFINER the cPanel user)
			// work for the user's new name; root's view is not root's.
			if udb, err := sql.Open("mysql", newUser+":"+db.Password+"@unix("+prof.DB().MariaDBSocket+")/"+newDB+"?timeout=5s"); err != nil {
				t.Error(err)
			} else {
				var n int
				var who string
				if _, err := udb.Exec("CALL add_item(1000)"); err != nil {
					t.Errorf("CALL add_item as %s: %v", newUser, err)
				} else if err := udb.QueryRow("SELECT (SELECT COUNT(*) FROM items_v WHERE id = 1000) + (SELECT COUNT(*) FROM audit WHERE id = 1000)").Scan(&n); err != nil || n != 2 {
					t.Errorf("view and trigger after CALL: %d %v", n, err)
				}
				if err := udb.QueryRow("SELECT u FROM root_v").Scan(&who); err != nil || !strings.HasPrefix(who, newUser+"@") {
					t.Errorf("root_v runs as %q %v", who, err)
				}
				udb.Close()
			}
			// The PostgreSQL database, to its user's old password (a SCRAM
			// hash from psql_users.sql): the rows, the view, the function.
			for _, pdb := range o.PgDatabases {
				q := url.Values{"host": {prof.DB().PgSocketDir}, "port": {strconv.Itoa(prof.DB().PgPort)}, "user": {pdb.User},
					"password": {pdb.Password}, "dbname": {pdb.Name}, "sslmode": {"disable"}, "connect_timeout": {"10"}}
				conn, err := pgx.Connect(ctx, "postgres:///?"+q.Encode())
				if err != nil {
					t.Errorf("connect to %s as %s: %v", pdb.Name, pdb.User, err)
					continue
				}
				var n, fn int
				if err := conn.QueryRow(ctx, "SELECT COUNT(*), public.item_count() FROM public.items_v").Scan(&n, &fn); err != nil || n != cpaneltest.PgTarRows || fn != n {
					t.Errorf("%s as %s: %d rows, item_count %d, %v", pdb.Name, pdb.User, n, fn, err)
				}
				conn.Close(ctx)
			}
			// The cron job.
			tab, err := os.ReadFile(filepath.Join(prof.Cpanel().CronSpoolDir, username))
			if err != nil || !strings.Contains(string(tab), "cron.php") {
				t.Errorf("crontab of %s: %q %v", username, tab, err)
			}
			// The report, from the account.
			got, err := s.Admin.AccountImport(ctx, *im.Account)
			if err != nil || got == nil || got.ID != im.ID {
				t.Fatalf("account's import: %+v %v", got, err)
			}
			if !slices.ContainsFunc(got.Items, func(it client.CpanelItem) bool {
				return it.Kind == "certificate" && it.Name == o.MainDomain && it.Disposition == "IMPORT" && strings.Contains(it.Note, "ACME takes over its renewal")
			}) {
				t.Errorf("the certificate is not reported imported: %+v", got.Items)
			}
			// nginx serves the archive's certificate for the main domain
			// (and its www name) over HTTPS: a TLS client with SNI, the
			// leaf compared byte for byte with the archive's.
			want := archiveLeaf(t, archive, o.MainDomain)
			roots := cpaneltest.CertificateRoots()
			for _, name := range []string{o.MainDomain, "www." + o.MainDomain} {
				var served []byte
				testenv.WaitFor(t, 60*time.Second, name+" served over HTTPS with the archive's certificate", func() bool {
					c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ag.Config.HTTPSListen,
						&tls.Config{ServerName: name, RootCAs: roots})
					if err != nil {
						return false
					}
					defer c.Close()
					served = c.ConnectionState().PeerCertificates[0].Raw
					return bytes.Equal(served, want)
				})
			}
			crt, err := s.Admin.Certificate(ctx, o.MainDomain)
			if err != nil || crt == nil || !crt.Custom || !crt.AutoRenew || crt.Status != "ISSUED" {
				t.Errorf("certificate record of %s: %+v %v (want installed, ISSUED, renewed by ACME)", o.MainDomain, crt, err)
			}
		})
	}
}

// cpanelOptions is cpaneltest's archive with one of everything for the
// cPanel user user, its domains named after the layout so that both
// imports coexist.
// archiveLeaf returns the DER of the leaf certificate of domain in a
// cPanel archive (apache_tls/DOMAIN: the key, the leaf, its issuer).
func archiveLeaf(t *testing.T, archive, domain string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no apache_tls/%s in %s: %v", domain, archive, err)
		}
		if !strings.HasSuffix(h.Name, "apache_tls/"+domain) {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				t.Fatalf("apache_tls/%s holds no certificate", domain)
			}
			if blk.Type == "CERTIFICATE" {
				return blk.Bytes // the leaf comes first (cpaneltest writes it so)
			}
		}
	}
}

func cpanelOptions(layout, user string) cpaneltest.Options {
	o := cpaneltest.Default(layout)
	for i := range o.Databases {
		o.Databases[i].Name = user + strings.TrimPrefix(o.Databases[i].Name, o.User)
		o.Databases[i].User = user + strings.TrimPrefix(o.Databases[i].User, o.User)
	}
	o.User = user
	o.Certificate = true
	main := layout + "-cp.example.com"
	rename := func(s string) string {
		s = strings.ReplaceAll(s, "example.com", main)
		s = strings.ReplaceAll(s, "addon.org", layout+"-addon.example.org")
		return strings.ReplaceAll(s, "parked.net", layout+"-parked.example.net")
	}
	o.MainDomain = main
	for i := range o.Addons {
		o.Addons[i].Domain, o.Addons[i].Docroot = rename(o.Addons[i].Domain), rename(o.Addons[i].Docroot)
	}
	for i := range o.Parked {
		o.Parked[i] = rename(o.Parked[i])
	}
	for i := range o.Subs {
		o.Subs[i].Domain = rename(o.Subs[i].Domain)
	}
	for i := range o.Mailboxes {
		o.Mailboxes[i].Address = rename(o.Mailboxes[i].Address)
	}
	fw := map[string][]cpaneltest.Forwarder{}
	for d, fs := range o.Forwarders {
		for i := range fs {
			fs[i].Source = rename(fs[i].Source)
		}
		fw[rename(d)] = fs
	}
	o.Forwarders = fw
	for i := range o.Autoresp {
		o.Autoresp[i].Address = rename(o.Autoresp[i].Address)
	}
	return o
}
