package controlplane_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/internal/testenv/s3"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
)

// Disaster recovery from S3: an account of web-1 with files, a database
// with rows, a database user and a zone record is backed up to a real S3
// server (SeaweedFS). Then web-1 is gone: its data is destroyed, its
// agent stopped, the node removed and the account's Linux user deleted
// (both agents share this machine). The whole account is restored onto
// web-2 and everything is compared with what was backed up; the S3
// secret key and the repository password are nowhere in etcd in clear.
func TestBackupDisasterRecoveryS3(t *testing.T) {
	requireBackupE2E(t)
	s3srv := s3.Start(t)
	// Every log line of the server and the agents, and every API response
	// body, is kept to be searched for the repository password.
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Logger = logger })
	withLog := func(c *nodeagent.Config) { c.Logger = logger }
	ag1 := s.StartAgent(t, "web-1", testenv.WithModules(t, "web", "db", "dns"), withLog)
	ag2 := s.StartAgent(t, "web-2", testenv.WithModules(t, "web", "db", "dns"), withLog)
	api := s.Admin.HTTPClient()
	api.Transport = &recordingTransport{next: api.Transport, to: logs}
	ctx := testenv.Context(t)
	prof1 := agentProfile(t, ag1)
	prof2 := agentProfile(t, ag2)
	_, pgErr := os.Stat(prof1.DB().Postgres)
	withPG := pgErr == nil
	for _, n := range []string{"web-1", "web-2"} {
		testenv.WaitFor(t, 10*time.Second, n+" READY", func() bool { return nodeStatus(t, s, n) == "READY" })
		waitMariaDB(t, s, n)
		if withPG {
			waitService(t, s, n, "postgresql")
		}
	}
	gql := gqlOf(t, s)

	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "bk", DiskMB: 200, BandwidthMB: 1000, Domains: 2, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	var tgt struct{ CreateBackupTarget struct{ Name, Kind string } }
	gql(`mutation($in:CreateBackupTargetInput!){createBackupTarget(input:$in){name kind}}`, map[string]any{"in": map[string]any{
		"name": "s3", "kind": "S3", "endpoint": s3srv.Endpoint, "bucket": "npanel-test", "region": "us-east-1",
		"accessKeyId": s3srv.AccessKey, "secretAccessKey": s3srv.SecretKey,
	}}, &tgt)
	if tgt.CreateBackupTarget.Kind != "S3" {
		t.Fatalf("createBackupTarget: %+v", tgt)
	}
	gql(`mutation{setPlanBackup(plan:"bk",input:{target:"s3",keepDaily:7,enabled:false}){backup{target}}}`, nil, nil)

	username := testUsername(t)
	domain := username + ".example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: username, Domain: domain, Plan: "bk", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, acct.ID)
	if n := accountNode(t, s, acct.ID); n != "web-1" {
		t.Fatalf("account on %q, want web-1", n)
	}
	home1 := filepath.Join(prof1.HomeBase, username)
	files := map[string][]byte{
		"public_html/index.php":     []byte("<?php echo 'back from S3';\n"),
		"public_html/data/blob.bin": bytes.Repeat([]byte{9, 0, 7, 254, 255, 1}, 40_000),
	}
	writeHomeFiles(t, username, home1, files)
	socket1 := prof1.DB().MariaDBSocket
	db, err := s.Admin.CreateDatabase(ctx, acct.ID, "shop", "")
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.Admin.CreateDatabaseUser(ctx, acct.ID, "app", "", "")
	if err != nil || up.Password == nil {
		t.Fatalf("createDatabaseUser: %+v %v", up, err)
	}
	dbUser, password := up.User.Name, *up.Password
	if _, err := s.Admin.SetDatabasePrivileges(ctx, acct.ID, db.Name, dbUser, []string{"ALL"}); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(socket1, dbUser, password, db.Name,
		"CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT)",
		"INSERT INTO orders VALUES (1, 'anvil', 1), (2, 'rope', 12), (3, 'dynamite', 99)"); err != nil {
		t.Fatal(err)
	}
	wantRows := dbRows(t, socket1, dbUser, password, db.Name, "SELECT id, item, qty FROM orders ORDER BY id")
	// A PostgreSQL database with its own user and rows, where installed.
	var pgDB, pgUser, pgPassword string
	var wantPGRows []string
	if withPG {
		d, err := s.Admin.CreateDatabase(ctx, acct.ID, "ledger", "postgresql")
		if err != nil {
			t.Fatal(err)
		}
		pu, err := s.Admin.CreateDatabaseUser(ctx, acct.ID, "books", "", "postgresql")
		if err != nil || pu.Password == nil {
			t.Fatalf("createDatabaseUser postgresql: %+v %v", pu, err)
		}
		pgDB, pgUser, pgPassword = d.Name, pu.User.Name, *pu.Password
		if _, err := s.Admin.SetDatabasePrivileges(ctx, acct.ID, pgDB, pgUser, []string{"ALL"}); err != nil {
			t.Fatal(err)
		}
		pgExec(t, prof1, pgUser, pgPassword, pgDB, "CREATE TABLE entries (id int PRIMARY KEY, memo text)",
			"INSERT INTO entries VALUES (1, 'opening'), (2, 'rent'), (3, 'refund')")
		wantPGRows = pgRows(t, prof1, pgUser, pgPassword, pgDB, "SELECT id, memo FROM entries ORDER BY id")
	}
	gql(`mutation($z:String!){addRecord(zone:$z,record:{name:"dr",type:TXT,content:"\"survives web-1\"",ttl:300}){id}}`, map[string]any{"z": domain}, nil)
	// A certificate bought elsewhere, served by web-1's nginx.
	cert := installBought(t, s, domain)
	keyPEM, keyDER, leaf, serves := cert.keyPEM, cert.keyDER, cert.leaf, cert.servedAt
	testenv.WaitFor(t, time.Minute, "web-1 serves the installed certificate", func() bool { return serves(ag1.Config.HTTPSListen) })
	testenv.WaitFor(t, 30*time.Second, "the installed certificate ISSUED", func() bool {
		c, err := s.Store().GetCertificate(ctx, domain)
		return err == nil && c.Status.State == store.CertIssued && c.Status.ObservedGeneration == c.Generation
	})
	keyB64 := base64.StdEncoding.EncodeToString(keyDER)

	var created struct{ CreateBackup struct{ ID string } }
	start := time.Now()
	gql(`mutation($a:String!){createBackup(account:$a){id}}`, map[string]any{"a": username}, &created)
	id := created.CreateBackup.ID
	b := waitBackupGQL(t, s, id)
	if b.Status != "SUCCEEDED" {
		t.Fatalf("backup %s: %s (%v, error %v)", id, b.Status, b.Failed, b.Error)
	}
	t.Logf("backup to S3 took %s", time.Since(start))
	if !b.Contents.Files || !slices.Contains(b.Contents.Databases, db.Name) || !slices.Contains(b.Contents.Zones, domain) {
		t.Fatalf("backup contents: %+v", b.Contents)
	}

	// Neither the S3 secret key nor the repository password is in etcd
	// in clear (the password is read through the cluster's key-encryption
	// key, as the controller does).
	kekFile := s.Config.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(s.Config.DataDir, "kek") // the server's default
	}
	kek, err := pki.LoadKEK(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	repoPW, err := s.Store().BackupPassword(ctx, kek, username)
	if err != nil || len(repoPW) < 20 {
		t.Fatalf("repository password: %q %v", repoPW, err)
	}
	// Checked after the backup and again after the restore: neither
	// secret in any etcd value, server or agent log line, or API response.
	noSecrets := func(when string) {
		t.Helper()
		resp, err := s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if bytes.Contains(kv.Value, keyDER) || bytes.Contains(kv.Value, []byte(keyB64)) || bytes.Contains(kv.Value, []byte(keyPEM)) {
				t.Errorf("%s: etcd key %s holds the certificate's private key in clear", when, kv.Key)
			}
			if bytes.Contains(kv.Value, []byte(s3srv.SecretKey)) {
				t.Errorf("%s: etcd key %s holds the S3 secret key in clear", when, kv.Key)
			}
			if bytes.Contains(kv.Value, repoPW) {
				t.Errorf("%s: etcd key %s holds the repository password in clear", when, kv.Key)
			}
		}
		text := logs.String()
		if !strings.Contains(text, "level=INFO") || !strings.Contains(text, `"data"`) {
			t.Fatalf("%s: the logs and API responses were not captured (%d bytes)", when, len(text))
		}
		for _, secret := range []string{string(repoPW), s3srv.SecretKey, keyB64, keyPEM} {
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s: a secret is in the logs or an API response: ...%s...", when, text[max(0, i-200):i])
			}
		}
	}
	noSecrets("after the backup")

	// web-1 is gone, and so is everything it held: the home's files and
	// the table on its MariaDB (destroyed first, so that nothing but the
	// backup can bring them back), its agent and daemons, the node, and
	// the Linux user, which web-2 shares on this machine.
	if err := os.RemoveAll(filepath.Join(home1, "public_html")); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(socket1, dbUser, password, db.Name, "DROP TABLE orders"); err != nil {
		t.Fatal(err)
	}
	if withPG {
		pgExec(t, prof1, pgUser, pgPassword, pgDB, "DROP TABLE entries")
	}
	ag1.Stop()
	if err := s.Admin.RemoveNode(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("userdel", username).CombinedOutput(); err != nil {
		t.Fatalf("userdel %s: %v: %s", username, err, out)
	}

	var rs struct{ RestoreBackup struct{ ID string } }
	start = time.Now()
	gql(`mutation($in:RestoreBackupInput!){restoreBackup(input:$in){id}}`, map[string]any{"in": map[string]any{
		"backup": id, "what": "ALL", "into": "IN_PLACE", "node": "web-2"}}, &rs)
	r := waitRestoreGQL(t, s, rs.RestoreBackup.ID)
	if r.Status != "SUCCEEDED" {
		t.Fatalf("restore: %s (restored %v, failed %v, error %v)", r.Status, r.Restored, r.Failed, r.Error)
	}
	t.Logf("restore ALL onto web-2 took %s (restored %v)", time.Since(start), r.Restored)

	if n := accountNode(t, s, acct.ID); n != "web-2" {
		t.Fatalf("account on %q after the restore, want web-2", n)
	}
	waitAccountActive(t, s.Admin, acct.ID)
	home2 := filepath.Join(prof2.HomeBase, username)
	if home2 == home1 || prof2.DB().MariaDBSocket == socket1 {
		t.Fatalf("web-1 and web-2 share a home (%s) or a MariaDB (%s): the test proves nothing", home2, socket1)
	}
	owner, err := user.Lookup(username)
	if err != nil {
		t.Fatalf("the Linux user after the restore: %v", err)
	}
	for rel, want := range files {
		p := filepath.Join(home2, rel)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s on web-2: %d bytes, %v (want %d bytes, byte for byte)", rel, len(got), err, len(want))
		}
		if st, err := os.Stat(p); err != nil || strconv.Itoa(int(fileUID(st))) != owner.Uid {
			t.Errorf("%s on web-2 is not owned by %s (uid %s)", rel, username, owner.Uid)
		}
	}
	socket2 := prof2.DB().MariaDBSocket
	// The user logs in with its original password: its hash came back.
	if got := dbRows(t, socket2, dbUser, password, db.Name, "SELECT id, item, qty FROM orders ORDER BY id"); !slices.Equal(got, wantRows) {
		t.Fatalf("rows on web-2: %v, want %v", got, wantRows)
	}
	if withPG {
		// Its user logs in to web-2's PostgreSQL with its original
		// password, and the rows are back.
		if got := pgRows(t, prof2, pgUser, pgPassword, pgDB, "SELECT id, memo FROM entries ORDER BY id"); !slices.Equal(got, wantPGRows) {
			t.Fatalf("PostgreSQL rows on web-2: %v, want %v", got, wantPGRows)
		}
	}
	if !zoneHas(t, s, domain, "\"survives web-1\"") {
		t.Fatal("the record is not in the zone after the restore")
	}
	testenv.WaitFor(t, 30*time.Second, "web-2's PowerDNS serves the record", func() bool {
		return slices.Contains(txtAt(ag2.Config.DNSListen, "dr."+domain+"."), "survives web-1")
	})
	noSecrets("after the restore")
	// The installed certificate came back from the backup: web-2's nginx
	// serves the very leaf, and its record is ISSUED there.
	testenv.WaitFor(t, 30*time.Second, "web-2 serves the installed certificate", func() bool { return serves(ag2.Config.HTTPSListen) })
	c, err := s.Store().GetCertificate(ctx, domain)
	if err != nil || c.Node != "web-2" || c.Status.State != store.CertIssued || !c.Custom || c.Status.Serial != leaf.SerialNumber.Text(16) || c.Status.LastError != "" {
		t.Fatalf("the installed certificate after the restore: %+v, %v", c, err)
	}
	if !slices.Contains(r.Restored, "certificate:"+domain) {
		t.Fatalf("restored %v, want certificate:%s", r.Restored, domain)
	}
	// Nor does any file the agents keep (data dirs: journals, task
	// records; prefixes: configs, homes, backup areas) hold them in clear.
	for _, ag := range []*testenv.Agent{ag1, ag2} {
		for _, dir := range []string{ag.Config.DataDir, ag.Config.Prefix} {
			for _, p := range filesHolding(t, dir, []byte(s3srv.SecretKey), repoPW) {
				t.Errorf("%s: %s holds the S3 secret key or the repository password in clear", ag.Name, p)
			}
		}
	}
	dbs, err := s.Admin.Databases(ctx, acct.ID)
	wantDBs := 1
	if withPG {
		wantDBs = 2
	}
	if err != nil || len(dbs) != wantDBs || !slices.ContainsFunc(dbs, func(d client.Database) bool { return d.Name == db.Name && slices.Contains(d.Users, dbUser) }) {
		t.Fatalf("databases after the restore: %+v %v", dbs, err)
	}

	// The account's next backup, from web-2, goes to the same repository:
	// the plan's retention (the newest backup of each day) forgets the
	// first one, which only happens in the repository that holds it.
	gql(`mutation($a:String!){createBackup(account:$a){id}}`, map[string]any{"a": username}, &created)
	b = waitBackupGQL(t, s, created.CreateBackup.ID)
	if b.Status != "SUCCEEDED" {
		t.Fatalf("backup from web-2: %s (%v, error %v)", b.Status, b.Failed, b.Error)
	}
	var bl struct {
		Backups struct {
			Edges []struct {
				Node struct{ ID, Node, Status string }
			}
		}
	}
	gql(`query($a:String!){backups(account:$a){edges{node{id node status}}}}`, map[string]any{"a": username}, &bl)
	if len(bl.Backups.Edges) != 1 || bl.Backups.Edges[0].Node.ID != created.CreateBackup.ID || bl.Backups.Edges[0].Node.Node != "web-2" {
		t.Fatalf("backups after the recovery: %+v (want only the new one, of web-2: keepDaily keeps the newest of the day)", bl.Backups.Edges)
	}
}

// Backups to a backup node over SFTP: bk-1 runs the backup module (its
// own sshd); an account of web-1 is backed up to it through restic's
// SFTP backend, the repository lands in bk-1's backup area, encrypted,
// and a deleted file is restored from it byte for byte.
func TestBackupToBackupNodeOverSFTP(t *testing.T) {
	requireBackupE2E(t)
	if _, err := exec.LookPath("sshd"); err != nil {
		if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
			t.Skip("sshd is not installed")
		}
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1", testenv.WithModules(t, "web", "db", "dns"))
	bk := s.StartAgent(t, "bk-1", testenv.WithModules(t, "backup"))
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 10*time.Second, "web-1 READY", func() bool { return nodeStatus(t, s, "web-1") == "READY" })
	testenv.WaitFor(t, 10*time.Second, "bk-1 READY", func() bool { return nodeStatus(t, s, "bk-1") == "READY" })
	if _, err := s.Admin.UpdateNode(ctx, "bk-1", client.NodeUpdate{Roles: []string{"BACKUP"}}); err != nil {
		t.Fatal(err)
	}
	prof := agentProfile(t, ag)
	bkProf := agentProfile(t, bk)
	gql := gqlOf(t, s)

	gql(`mutation{createBackupTarget(input:{name:"bk",kind:NODE,node:"bk-1"}){name}}`, nil, nil)
	type target struct {
		Name, Kind                 string
		Node, SftpAddress, HostKey *string
		AccessError                *string
	}
	var tg target
	testenv.WaitFor(t, 60*time.Second, "bk-1 reports its SFTP access", func() bool {
		var out struct{ BackupTargets []target }
		gql(`{backupTargets{name kind node sftpAddress hostKey accessError}}`, nil, &out)
		for _, x := range out.BackupTargets {
			if x.Name == "bk" {
				tg = x
			}
		}
		return tg.SftpAddress != nil && *tg.SftpAddress != "" && tg.HostKey != nil && *tg.HostKey != ""
	})
	if tg.AccessError != nil && *tg.AccessError != "" {
		t.Fatalf("target access error: %s", *tg.AccessError)
	}
	if *tg.SftpAddress != bk.Config.SFTPListen {
		t.Errorf("target's SFTP address %q, the node listens on %q", *tg.SftpAddress, bk.Config.SFTPListen)
	}
	if !strings.HasPrefix(*tg.HostKey, "ssh-ed25519 ") {
		t.Errorf("host key %q", *tg.HostKey)
	}

	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "bk", DiskMB: 200, BandwidthMB: 1000, Domains: 2, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	gql(`mutation{setPlanBackup(plan:"bk",input:{target:"bk",keepDaily:7,enabled:false}){backup{target}}}`, nil, nil)
	username := testUsername(t)
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: username, Domain: username + ".example.com", Plan: "bk", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, acct.ID)
	home := filepath.Join(prof.HomeBase, username)
	marker := "npanel-cleartext-marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	files := map[string][]byte{
		"public_html/secret.txt": []byte(strings.Repeat(marker+"\n", 100)),
		"public_html/keep.txt":   []byte("stays\n"),
	}
	writeHomeFiles(t, username, home, files)

	var created struct{ CreateBackup struct{ ID string } }
	start := time.Now()
	gql(`mutation($a:String!){createBackup(account:$a){id}}`, map[string]any{"a": username}, &created)
	id := created.CreateBackup.ID
	b := waitBackupGQL(t, s, id)
	if b.Status != "SUCCEEDED" {
		t.Fatalf("backup %s: %s (%v, error %v)", id, b.Status, b.Failed, b.Error)
	}
	t.Logf("backup over SFTP took %s", time.Since(start))

	// The repository is in bk-1's area, <area>/<source node>/<account>,
	// and no file of it holds the marker in clear.
	repo := filepath.Join(bkProf.BackupNode().Area, "web-1", username)
	if _, err := os.Stat(filepath.Join(repo, "config")); err != nil {
		t.Fatalf("no restic repository at %s: %v", repo, err)
	}
	nfiles := 0
	if err := filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		nfiles++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(marker)) {
			t.Errorf("repository file %s holds the marker in clear", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if nfiles < 4 {
		t.Fatalf("the repository holds %d files", nfiles)
	}

	if err := os.Remove(filepath.Join(home, "public_html/secret.txt")); err != nil {
		t.Fatal(err)
	}
	var rs struct{ RestoreBackup struct{ ID string } }
	gql(`mutation($in:RestoreBackupInput!){restoreBackup(input:$in){id}}`, map[string]any{"in": map[string]any{
		"backup": id, "what": "FILES", "path": "public_html/secret.txt", "into": "IN_PLACE"}}, &rs)
	r := waitRestoreGQL(t, s, rs.RestoreBackup.ID)
	if r.Status != "SUCCEEDED" {
		t.Fatalf("restore: %s (restored %v, failed %v, error %v)", r.Status, r.Restored, r.Failed, r.Error)
	}
	for rel, want := range files {
		if got, err := os.ReadFile(filepath.Join(home, rel)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after the restore: %d bytes, %v (want %d bytes, byte for byte)", rel, len(got), err, len(want))
		}
	}

	// A second backup into the existing repository (restic's SFTP
	// backend opens it, does not init it again); the plan keeps the
	// newest of the day, so the first is forgotten.
	gql(`mutation($a:String!){createBackup(account:$a){id}}`, map[string]any{"a": username}, &created)
	b = waitBackupGQL(t, s, created.CreateBackup.ID)
	if b.Status != "SUCCEEDED" {
		t.Fatalf("second backup: %s (%v, error %v)", b.Status, b.Failed, b.Error)
	}
	testenv.WaitFor(t, 10*time.Second, "the first backup forgotten", func() bool {
		var out struct{ Backup *backupGQL }
		gql(`query($id:ID!){backup(id:$id){id}}`, map[string]any{"id": id}, &out)
		return out.Backup == nil
	})
	id = created.CreateBackup.ID

	// verifyBackup reads it back over SFTP; deleteBackup removes its
	// snapshots from bk-1, then the record.
	gql(`mutation($id:ID!){verifyBackup(id:$id){id}}`, map[string]any{"id": id}, nil)
	testenv.WaitFor(t, 120*time.Second, "backup verified", func() bool {
		var out struct{ Backup backupGQL }
		gql(`query($id:ID!){backup(id:$id){`+backupFields+`}}`, map[string]any{"id": id}, &out)
		if len(out.Backup.VerifyProblems) > 0 {
			t.Fatalf("verify problems: %v", out.Backup.VerifyProblems)
		}
		return out.Backup.Verified && out.Backup.VerifiedAt != nil
	})
	snaps := func() int {
		ents, err := os.ReadDir(filepath.Join(repo, "snapshots"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	if n := snaps(); n == 0 {
		t.Fatal("no snapshot in the repository")
	}
	gql(`mutation($id:ID!){deleteBackup(id:$id){id}}`, map[string]any{"id": id}, nil)
	testenv.WaitFor(t, 120*time.Second, "backup deleted", func() bool {
		var out struct{ Backup *backupGQL }
		gql(`query($id:ID!){backup(id:$id){id status error}}`, map[string]any{"id": id}, &out)
		if out.Backup != nil && out.Backup.Status == "FAILED" {
			t.Fatalf("deleteBackup: %+v", out.Backup)
		}
		return out.Backup == nil
	})
	if n := snaps(); n != 0 {
		t.Fatalf("%d snapshots left on bk-1 after deleteBackup", n)
	}
}

// recordingTransport copies every response body to a buffer as the client
// reads it.
type recordingTransport struct {
	next http.RoundTripper
	to   io.Writer
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(resp.Body, r.to), resp.Body}
	return resp, nil
}

func gqlOf(t *testing.T, s *testenv.Server) func(query string, vars map[string]any, out any) {
	return func(query string, vars map[string]any, out any) {
		t.Helper()
		if err := s.Admin.Do(context.Background(), query, vars, out); err != nil {
			t.Fatalf("%s: %v", query[:min(len(query), 60)], err)
		}
	}
}

func agentProfile(t *testing.T, ag *testenv.Agent) *platform.Profile {
	t.Helper()
	prof, err := platform.DetectProfile(ag.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return prof
}

func waitMariaDB(t *testing.T, s *testenv.Server, node string) {
	t.Helper()
	testenv.WaitFor(t, 90*time.Second, "mariadb running on "+node, func() bool {
		svcs, _, err := s.Admin.Services(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == "mariadb" && sv.State == "RUNNING" })
	})
}

// waitService waits until node reports service RUNNING.
func waitService(t *testing.T, s *testenv.Server, node, service string) {
	t.Helper()
	testenv.WaitFor(t, 90*time.Second, service+" running on "+node, func() bool {
		svcs, _, err := s.Admin.Services(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == service && sv.State == "RUNNING" })
	})
}

// pgConn connects to the PostgreSQL of the node with profile p.
func pgConn(t *testing.T, p *platform.Profile, user, password, db string) *pgx.Conn {
	t.Helper()
	q := url.Values{"host": {p.DB().PgSocketDir}, "port": {strconv.Itoa(p.DB().PgPort)}, "user": {user},
		"password": {password}, "dbname": {db}, "sslmode": {"disable"}, "connect_timeout": {"10"}}
	conn, err := pgx.Connect(context.Background(), "postgres:///?"+q.Encode())
	if err != nil {
		t.Fatalf("connect to postgresql as %s: %v", user, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func pgExec(t *testing.T, p *platform.Profile, user, password, db string, stmts ...string) {
	t.Helper()
	conn := pgConn(t, p, user, password, db)
	for _, q := range stmts {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// pgRows returns each row of q as its columns joined by "|".
func pgRows(t *testing.T, p *platform.Profile, user, password, db, q string) []string {
	t.Helper()
	rows, err := pgConn(t, p, user, password, db).Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// accountNode is the node the API shows the account on.
func accountNode(t *testing.T, s *testenv.Server, id string) string {
	t.Helper()
	var out struct {
		Account *struct{ Node *struct{ Name string } }
	}
	if err := s.Admin.Do(context.Background(), `query($id:ID!){account(id:$id){node{name}}}`, map[string]any{"id": id}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Account == nil || out.Account.Node == nil {
		return ""
	}
	return out.Account.Node.Name
}

// writeHomeFiles writes files under home, owned by username.
func writeHomeFiles(t *testing.T, username, home string, files map[string][]byte) {
	t.Helper()
	owner, err := user.Lookup(username)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	for rel, data := range files {
		p := filepath.Join(home, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(filepath.Dir(p), uid, gid)
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
}

// txtAt returns the TXT strings a DNS server answers for name.
func txtAt(server, name string) []string {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, server)
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range in.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, txt.Txt...)
		}
	}
	return out
}

// filesHolding returns the regular files under dir that contain any of
// needles.
func filesHolding(t *testing.T, dir string, needles ...[]byte) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) || os.IsPermission(err) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil // a socket's neighbour vanished, a file being rotated
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				out = append(out, p)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileUID(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}
