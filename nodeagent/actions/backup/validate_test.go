package backup

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

func TestHomePath(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"", ".", true},
		{".", ".", true},
		{"public_html", "public_html", true},
		{"public_html/", "public_html", true},
		{"a/./b", "a/b", true},
		{"mail/example.com/info", "mail/example.com/info", true},
		{"a b/ü.txt", "a b/ü.txt", true},
		{"/etc/passwd", "", false},
		{"..", "", false},
		{"a/../../etc", "", false},
		{"a/..", "", false},
		{"a\x00b", "", false},
		{"a\nb", "", false},
		{"*.php", "", false},
		{"a[1]", "", false},
		{`a\b`, "", false},
	} {
		got, err := homePath(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("homePath(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// FuzzHomePath: an accepted path stays inside the home, is clean and
// relative, and carries no pattern or control character.
func FuzzHomePath(f *testing.F) {
	for _, s := range []string{"", ".", "public_html/index.php", "../x", "/abs", "a/../b", "a//b/", "mail/d/l", "*", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := homePath(s)
		if err != nil {
			return
		}
		if got != path.Clean(got) || strings.HasPrefix(got, "/") || strings.ContainsAny(got, "*?[\\\x00\n") {
			t.Fatalf("homePath(%q) = %q", s, got)
		}
		for _, c := range strings.Split(got, "/") {
			if c == ".." {
				t.Fatalf("homePath(%q) = %q escapes", s, got)
			}
		}
		if j := filepath.Join("/home/u", got); j != "/home/u" && !strings.HasPrefix(j, "/home/u/") {
			t.Fatalf("homePath(%q) = %q joins to %q", s, got, j)
		}
	})
}

func sealedRepo(kind agentpb.BackupTargetKind) *agentpb.BackupRepository {
	return &agentpb.BackupRepository{
		Target: "t1", Kind: kind, Username: "alice", SealedPassword: seal(agentpb.BackupPasswordSealContext("alice"), "pw"),
		SftpAddress: "backup1.example.net:2222", SftpUser: "node1", SftpHostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ",
		S3Endpoint: "https://s3.example.net", S3Bucket: "bkt", S3Prefix: "npanel/x", S3AccessKeyId: "AKID",
		SealedS3SecretKey: seal(agentpb.BackupS3SecretSealContext("t1"), "s3secret"),
	}
}

func TestValidateRepository(t *testing.T) {
	for _, k := range []agentpb.BackupTargetKind{agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL, agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE, agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3} {
		if err := validateRepository(sealedRepo(k), false); err != nil {
			t.Errorf("%v: %v", k, err)
		}
	}
	bad := []func(r *agentpb.BackupRepository){
		func(r *agentpb.BackupRepository) { r.Username = "../root" },
		func(r *agentpb.BackupRepository) { r.Username = "npttest" }, // test names only in tests
		func(r *agentpb.BackupRepository) { r.SealedPassword = nil },
		func(r *agentpb.BackupRepository) { r.Kind = agentpb.BackupTargetKind_BACKUP_TARGET_KIND_UNSPECIFIED },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.S3Endpoint = "ftp://x" },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.S3Endpoint = "https://x/path" },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.S3Bucket = "A/B" },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.S3Prefix = "a/../b" },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.S3AccessKeyId = "a b" },
		func(r *agentpb.BackupRepository) { r.Kind = 3; r.SealedS3SecretKey = nil },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpAddress = "host" },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpUser = "-oProxyCommand=x" },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpUser = "a b" },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpHostKey = "ssh-rsa AAAA" },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpHostKey = "ssh-ed25519 AAAA x" },
		func(r *agentpb.BackupRepository) { r.Kind = 2; r.SftpAddress = "-oProxyCommand=x:22" },
	}
	for i, mut := range bad {
		r := sealedRepo(agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL)
		mut(r)
		if err := validateRepository(r, false); err == nil {
			t.Errorf("case %d accepted: %v", i, r)
		}
	}
}

func TestValidateActions(t *testing.T) {
	m := NewModule(nil, nil, nil, 0)
	repo := sealedRepo(agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL)
	ok := []interface{ Validate() error }{
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "01HX-a", Repository: repo, Databases: []*agentpb.BackupDatabase{mariaDB("alice_shop"), pgDB("alice_shop")}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com", Text: "x"}, {Name: "shop.example.com", Error: "no primary"}}}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "public_html"}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB("alice_shop"), DatabaseInto: "alice_shop2"}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB("alice_shop"), InPlace: true}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX, Mailbox: "info@example.com"}),
		m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "b1", Repository: repo}),
		m.NewForgetBackup(&agentpb.ForgetBackupAction{All: true, Repository: repo}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Certificates: []*agentpb.BackupCertificate{{Site: "example.com", ChainPem: []byte("x")}}}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, CertificateSites: []string{"example.com", "shop.example.com"}}),
	}
	for i, a := range ok {
		if err := a.Validate(); err != nil {
			t.Errorf("ok %d: %v", i, err)
		}
	}
	bad := []interface{ Validate() error }{
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "a/b", Repository: repo}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Databases: []*agentpb.BackupDatabase{mariaDB("bob_shop")}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Databases: []*agentpb.BackupDatabase{mariaDB("alice_shop"), mariaDB("alice_shop")}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Databases: []*agentpb.BackupDatabase{{Name: "alice_shop", Engine: "oracle"}}}),
		// Zone files: a name that is no canonical domain (it becomes a tag
		// and a path), twice the same zone, neither or both of text and
		// error, an oversized file.
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "../etc", Text: "x"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "a.example,npanel-kind=files", Text: "x"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "Example.com", Text: "x"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com", Text: "x"}, {Name: "example.com", Text: "y"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com", Text: "x", Error: "y"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com", Text: strings.Repeat("x", 4<<20+1)}}}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "../bob"}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB("alice_shop")}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB("alice_shop"), DatabaseInto: "bob_shop"}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX, Mailbox: "not an address"}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_ZONE}),
		m.NewForgetBackup(&agentpb.ForgetBackupAction{Repository: repo}),
		m.NewForgetBackup(&agentpb.ForgetBackupAction{BackupId: "b1", All: true, Repository: repo}),
		m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "b1"}),
		// Certificates: a site that is no canonical domain, one twice, a
		// chain empty or too large; sites named outside a whole-account
		// restore.
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Certificates: []*agentpb.BackupCertificate{{Site: "../etc", ChainPem: []byte("x")}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Certificates: []*agentpb.BackupCertificate{{Site: "a.com", ChainPem: []byte("x")}, {Site: "a.com", ChainPem: []byte("y")}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Certificates: []*agentpb.BackupCertificate{{Site: "a.com"}}}),
		m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "b1", Repository: repo, Certificates: []*agentpb.BackupCertificate{{Site: "a.com", ChainPem: make([]byte, 1<<20)}}}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, CertificateSites: []string{"A.com"}}),
		m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "b1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_ZONE, CertificateSites: []string{"a.com"}}),
	}
	for i, a := range bad {
		if err := a.Validate(); err == nil {
			t.Errorf("bad %d accepted", i)
		}
	}
}

// TestSFTPArgv pins the repository and ssh command a NODE target builds:
// a fixed ssh path, the node's key only, the pinned host key, no prompts.
func TestSFTPArgv(t *testing.T) {
	r := sealedRepo(agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE)
	loc, opts := sftpLocation(r, "web1", "/var/lib/npanel/backup/id_ed25519", "/var/lib/npanel/backup/known_hosts-1")
	if loc != "sftp:node1@backup1.example.net:/web1/alice" {
		t.Fatalf("location %q", loc)
	}
	want := []string{"-o", "sftp.command=/usr/bin/ssh -i /var/lib/npanel/backup/id_ed25519 -p 2222 -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/var/lib/npanel/backup/known_hosts-1 node1@backup1.example.net -s sftp"}
	if !slices.Equal(opts, want) {
		t.Fatalf("options\n%q\nwant\n%q", opts, want)
	}
	r.SftpAddress = "[::1]:22"
	if loc, _ := sftpLocation(r, "web1", "k", "h"); loc != "sftp:node1@[::1]:/web1/alice" {
		t.Fatalf("IPv6 location %q", loc)
	}
}

// TestOpenRepositoryNode opens a NODE repository: the key is made once
// (0600, OpenSSH format), the known_hosts file pins the host key and is
// removed by cleanup.
func TestOpenRepositoryNode(t *testing.T) {
	m := NewModule(nil, nil, nil, 0)
	dir := t.TempDir()
	env := envFor(dir)
	repo, err := m.openRepository(env, sealedRepo(agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "backup", "id_ed25519")
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key %v %v", fi, err)
	}
	b, _ := os.ReadFile(key)
	if !strings.HasPrefix(string(b), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Fatal("key not in OpenSSH format")
	}
	var kh string
	for i, o := range repo.options {
		if i > 0 && strings.HasPrefix(o, "sftp.command=") {
			f := strings.Fields(o)
			for _, w := range f {
				if v, ok := strings.CutPrefix(w, "UserKnownHostsFile="); ok {
					kh = v
				}
			}
		}
	}
	khb, err := os.ReadFile(kh)
	if err != nil || string(khb) != "[backup1.example.net]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ\n" {
		t.Fatalf("known_hosts %q %v", khb, err)
	}
	if fi, _ := os.Stat(kh); fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts mode %v", fi.Mode())
	}
	repo.cleanup()
	if _, err := os.Stat(kh); !os.IsNotExist(err) {
		t.Fatal("known_hosts left behind")
	}
	pub1, _, _ := EnsureSSHKey(dir)
	pub2, _, _ := EnsureSSHKey(dir)
	if pub1 != pub2 || !strings.HasPrefix(pub1, "ssh-ed25519 ") {
		t.Fatalf("public key %q then %q", pub1, pub2)
	}
}

func TestS3Location(t *testing.T) {
	r := sealedRepo(agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3)
	r.S3Region = "eu-1"
	loc, opts := s3Location(r)
	if loc != "s3:https://s3.example.net/bkt/npanel/x/alice" || !slices.Equal(opts, []string{"-o", "s3.region=eu-1", "-o", "s3.bucket-lookup=path"}) {
		t.Fatalf("%q %q", loc, opts)
	}
	repo, err := NewModule(nil, nil, nil, 0).openRepository(envFor(t.TempDir()), r)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(repo.env, []string{"AWS_ACCESS_KEY_ID=AKID", "AWS_SECRET_ACCESS_KEY=s3secret"}) {
		t.Fatalf("env %q", repo.env)
	}
}

// TestProgressRateLimited: restic's status lines reach the hook at most
// about once a second.
func TestProgressRateLimited(t *testing.T) {
	m := NewModule(nil, nil, nil, 0)
	var got []*agentpb.BackupProgress
	m.Progress = func(p *agentpb.BackupProgress) { got = append(got, p) }
	f := m.progress("b1")
	for i := range 100 {
		f(backupStatus{FilesDone: uint64(i), TotalFiles: 100})
	}
	if len(got) != 1 || got[0].TaskId != "b1" || got[0].TotalFiles != 100 {
		t.Fatalf("%v", got)
	}
	if NewModule(nil, nil, nil, 0).progress("x") != nil {
		t.Fatal("a status callback without a hook")
	}
}

// TestConcurrencyLimit: a module admits at most its limit at once.
func TestConcurrencyLimit(t *testing.T) {
	m := NewModule(nil, nil, nil, 1)
	rel, err := m.acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := m.acquire(ctx); err == nil {
		t.Fatal("second slot granted over the limit")
	}
	rel()
	rel2, err := m.acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rel2()
}

func TestKeepBackups(t *testing.T) {
	day := func(d, h int) time.Time { return time.Date(2026, 12, d, h, 0, 0, 0, time.UTC) }
	bs := []backupAt{{id: "e", at: day(5, 1)}, {id: "d2", at: day(4, 2)}, {id: "d1", at: day(4, 1)}, {id: "c", at: day(3, 1)}, {id: "a", at: day(1, 1)}}
	keep := keepBackups(bs, &agentpb.BackupRetention{Daily: 3}, "e")
	var ids []string
	for _, b := range bs {
		if keep[b.id] {
			ids = append(ids, b.id)
		}
	}
	if !slices.Equal(ids, []string{"e", "d2", "c"}) {
		t.Fatalf("kept %v", ids)
	}
	if k := keepBackups(bs, &agentpb.BackupRetention{}, "e"); len(k) != len(bs) {
		t.Fatalf("all-zero policy kept %v", k)
	}
}
