package cpanel

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cpaneltest"
)

func TestParseCpUser(t *testing.T) {
	m := ParseCpUser([]byte("USER=bob\nDNS=example.com\r\nDNS1=addon.org\n#X=1\nbroken\nPLAN=a=b\n"))
	if m["USER"] != "bob" || m["DNS"] != "example.com" || m["DNS1"] != "addon.org" || m["PLAN"] != "a=b" || len(m) != 4 {
		t.Errorf("%v", m)
	}
}

func TestParseUserdata(t *testing.T) {
	m, err := ParseUserdataMain([]byte("---\nmain_domain: example.com\naddon_domains:\n  addon.org: addonorg.example.com\nparked_domains:\n  - parked.net\nsub_domains:\n  - addonorg.example.com\n  - blog.example.com\n"))
	if err != nil || m.MainDomain != "example.com" || m.AddonDomains["addon.org"] != "addonorg.example.com" || !slices.Equal(m.ParkedDomains, []string{"parked.net"}) || len(m.SubDomains) != 2 {
		t.Errorf("%+v %v", m, err)
	}
	if _, err := ParseUserdataMain([]byte("main_domain: [unclosed")); err == nil {
		t.Error("bad YAML accepted")
	}
	d, err := ParseUserdataDomain([]byte("documentroot: /home/bob/public_html\nhomedir: /home/bob\nserveralias: www.example.com\n"))
	if err != nil || d.DocumentRoot != "/home/bob/public_html" {
		t.Errorf("%+v %v", d, err)
	}
	for _, c := range []struct {
		root, want string
		ok         bool
	}{{"/home/bob/public_html", "public_html", true}, {"/home/bob/a/../b", "b", true}, {"/home/bob", "", false}, {"/var/www", "", false}, {"/home/bob/../alice/x", "", false}} {
		got, ok := relDocroot("bob", &UserdataDomain{DocumentRoot: c.root})
		if got != c.want || ok != c.ok {
			t.Errorf("relDocroot(%q) = %q %v", c.root, got, ok)
		}
	}
}

func TestParseMailFiles(t *testing.T) {
	if got := ParseMailPasswd([]byte("info:x:1:1::/home/b/mail/d/info:/home/b\n\nsales:x:1:1::/x:/y\n")); !slices.Equal(got, []string{"info", "sales"}) {
		t.Errorf("passwd %v", got)
	}
	sh := ParseMailShadow([]byte("info:$6$s$h:20000::::::\nlocked:!!:1\n"))
	if sh["info"] != "$6$s$h" || sh["locked"] != "!!" {
		t.Errorf("shadow %v", sh)
	}
	q := ParseMailQuota([]byte("info:1048576\nbad:x\n"))
	if q["info"] != 1048576 || len(q) != 1 {
		t.Errorf("quota %v", q)
	}
	for h, want := range map[string]string{"$6$a$b": "{SHA512-CRYPT}$6$a$b", "$1$a$b": "{MD5-CRYPT}$1$a$b", "$2y$10$x": "{BLF-CRYPT}$2y$10$x", "!!": "", "": "", "*": ""} {
		got, ok := DovecotHash(h)
		if got != want || ok != (want != "") {
			t.Errorf("DovecotHash(%q) = %q %v", h, got, ok)
		}
	}
}

func TestParseForwarders(t *testing.T) {
	fw, bad := ParseForwarders("example.com", []byte("team@example.com: a@x.org, b@y.org\n*: :fail: No Such User Here\npipe@example.com: |/home/bob/script.php\nmix@example.com: c@z.org,\"|/bin/x\"\nnocolon\n"))
	if len(fw) != 4 || !slices.Equal(bad, []int{5}) {
		t.Fatalf("%+v %v", fw, bad)
	}
	if fw[0].Source != "team@example.com" || !slices.Equal(fw[0].Destinations, []string{"a@x.org", "b@y.org"}) {
		t.Errorf("%+v", fw[0])
	}
	if fw[1].Source != "*@example.com" || len(fw[1].Destinations) != 0 || len(fw[1].Other) != 1 {
		t.Errorf("%+v", fw[1])
	}
	if len(fw[2].Destinations) != 0 || len(fw[3].Destinations) != 1 || len(fw[3].Other) != 1 {
		t.Errorf("%+v %+v", fw[2], fw[3])
	}
}

func TestParseAutoresponder(t *testing.T) {
	s, b := ParseAutoresponder([]byte("From: \"Info\" <info@example.com>\r\nSubject: Away\r\nContent-Type: text/plain\r\n\r\nBack soon.\r\nBye\r\n"))
	if s != "Away" || b != "Back soon.\nBye\n" {
		t.Errorf("%q %q", s, b)
	}
}

func TestParseGrants(t *testing.T) {
	in := "-- comment\n" +
		"GRANT USAGE ON *.* TO 'bob'@'localhost' IDENTIFIED BY PASSWORD '*0123456789ABCDEF0123456789ABCDEF01234567';\n" +
		"GRANT USAGE ON *.* TO 'bob_u'@'localhost' IDENTIFIED BY PASSWORD '*" + strings.Repeat("A", 40) + "';\n" +
		"GRANT ALL PRIVILEGES ON `bob\\_wp`.* TO 'bob_u'@'localhost';\n" +
		"GRANT SELECT, INSERT ON `bob\\_shop`.* TO 'bob_u'@'127.0.0.1';\n" +
		"CREATE USER 'bob_v'@'%' IDENTIFIED VIA mysql_native_password USING '*" + strings.Repeat("B", 40) + "';\n" +
		"GRANT USAGE ON *.* TO 'old'@'localhost' IDENTIFIED BY PASSWORD '0123456789abcdef';\n" +
		"DROP TABLE x;\n"
	users, bad := ParseGrants([]byte(in))
	if !slices.Equal(bad, []int{8}) || len(users) != 4 {
		t.Fatalf("users %d bad %v", len(users), bad)
	}
	u := users[1]
	if u.User != "bob_u" || u.Hash != "*"+strings.Repeat("A", 40) || !slices.Equal(u.Hosts, []string{"localhost", "127.0.0.1"}) {
		t.Errorf("%+v", u)
	}
	if !slices.Equal(u.Grants["bob_wp"], []string{"ALL PRIVILEGES"}) || !slices.Equal(u.Grants["bob_shop"], []string{"SELECT", "INSERT"}) {
		t.Errorf("grants %v", u.Grants)
	}
	if users[2].Hash != "*"+strings.Repeat("B", 40) || users[3].Hash != "0123456789abcdef" {
		t.Errorf("hashes %q %q", users[2].Hash, users[3].Hash)
	}
}

func TestSplitPEM(t *testing.T) {
	pemData, err := cpaneltest.CertificatePEM("example.com")
	if err != nil {
		t.Fatal(err)
	}
	// Issuer first, then the key, then the leaf: the leaf (the key's)
	// must still come out first.
	var blocks [][]byte
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, pem.EncodeToMemory(b))
	}
	reordered := bytes.Join([][]byte{blocks[2], blocks[0], blocks[1]}, nil)
	for _, in := range [][]byte{pemData, reordered} {
		p, err := SplitPEM(in)
		if err != nil {
			t.Fatal(err)
		}
		if p.Key == nil || len(p.Certs) != 2 || p.Leaf.Subject.CommonName != "example.com" {
			t.Fatalf("%+v", p)
		}
		if !bytes.Equal(p.Certs[0], pemBlockOf(t, p.Leaf.Raw)) {
			t.Error("leaf not first")
		}
	}
	if _, err := SplitPEM([]byte("junk")); err == nil {
		t.Error("junk accepted")
	}
}

func TestParseCron(t *testing.T) {
	lines, bad := ParseCron([]byte("# c\nMAILTO=\"a@b\"\nSHELL=/bin/bash\n*/5 * * * * /usr/bin/php /home/bob/x.php\n@daily  /home/bob/y\n0 3 * * mon\tcmd with\ttabs\nnot a cron line\n* * *\n"))
	if !slices.Equal(bad, []int{7, 8}) || len(lines) != 5 {
		t.Fatalf("%+v %v", lines, bad)
	}
	if !lines[0].Env || lines[2].Schedule != "*/5 * * * *" || lines[2].Command != "/usr/bin/php /home/bob/x.php" || lines[3].Schedule != "@daily" || lines[3].Command != "/home/bob/y" {
		t.Errorf("%+v", lines)
	}
	if lines[4].Schedule != "0 3 * * mon" || lines[4].Command != "cmd with\ttabs" {
		t.Errorf("%+v", lines[4])
	}
}

func TestParseHtaccess(t *testing.T) {
	in := "# BEGIN WordPress\n<IfModule mod_rewrite.c>\nRewriteEngine On\nRewriteBase /\nRewriteRule ^index\\.php$ - [L]\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteCond %{REQUEST_FILENAME} !-d\nRewriteRule . /index.php [L]\n</IfModule>\n" +
		"Options -Indexes\nDirectoryIndex index.php index.html\nRewriteRule ^a$ /b [R=301]\nphp_flag display_errors off\nDeny from all\nAuthType Basic\nHeader set X-A b\n"
	got := ParseHtaccess([]byte(in))
	var lines []int
	for _, i := range got {
		lines = append(lines, i.Line)
	}
	if !slices.Equal(lines, []int{12, 13, 14, 15, 16}) {
		t.Errorf("lines %v: %+v", lines, got)
	}
	if !strings.Contains(got[2].Why, "access control") {
		t.Errorf("%+v", got[2])
	}
}

func TestParseProftpd(t *testing.T) {
	if got := ParseProftpd([]byte("bob:$6$x:1:1::/home/bob:/bin/bash\nup@example.com:h:1:1:bob:/home/bob/up:/bin/ftpsh\n")); !slices.Equal(got, []string{"bob", "up@example.com"}) {
		t.Errorf("%v", got)
	}
}

// Fuzz targets: no input may panic a parser. Their seed corpora are in
// testdata/fuzz (go test -run TestWriteFuzzCorpus with
// NPANEL_WRITE_FUZZ_CORPUS=1 writes them again).

func FuzzParsers(f *testing.F) {
	f.Add(uint8(0), []byte("USER=bob\nDNS=example.com\n"))
	f.Add(uint8(1), []byte("main_domain: example.com\naddon_domains:\n  a.org: aorg.example.com\n"))
	f.Add(uint8(2), []byte("info:$6$s$h:20000::::::\n"))
	f.Add(uint8(3), []byte("team@example.com: a@x.org, |/bin/x\n*: :fail: no\n"))
	f.Add(uint8(4), []byte("GRANT ALL PRIVILEGES ON `bob\\_wp`.* TO 'bob_u'@'localhost' IDENTIFIED BY PASSWORD '*AB';\n"))
	f.Add(uint8(5), []byte("*/5 * * * * /bin/true\n@daily x\nA=b\n"))
	f.Add(uint8(6), []byte("RewriteRule ^a$ /b [R=301]\n<IfModule x>\n"))
	f.Add(uint8(7), []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add(uint8(8), []byte("Subject: x\n\nbody"))
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		switch kind % 10 {
		case 0:
			ParseCpUser(b)
		case 1:
			_, _ = ParseUserdataMain(b)
			_, _ = ParseUserdataDomain(b)
		case 2:
			ParseMailPasswd(b)
			ParseMailShadow(b)
			ParseMailQuota(b)
		case 3:
			ParseForwarders("example.com", b)
		case 4:
			ParseGrants(b)
		case 5:
			ParseCron(b)
		case 6:
			ParseHtaccess(b)
		case 7:
			_, _ = SplitPEM(b)
		case 8:
			ParseAutoresponder(b)
		case 9:
			ParseProftpd(b)
		}
	})
}

// FuzzWalk feeds arbitrary bytes as an archive: the walk and the report
// must fail cleanly or succeed, never panic, and never hand a path that
// leaves the tree to the collector.
func FuzzWalk(f *testing.F) {
	for _, s := range walkSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newCollector()
		_, _ = Walk(bytes.NewReader(b), int64(len(b)), Limits{MinUncompressed: 8 << 20, MaxEntries: 10_000}, func(e *Entry) error {
			if strings.HasPrefix(e.Path, "/") || slices.Contains(strings.Split(e.Path, "/"), "..") {
				t.Fatalf("entry %q leaves the tree", e.Path)
			}
			return c.visit(e)
		})
	})
}

func walkSeeds(tb testing.TB) [][]byte {
	dir := tb.TempDir()
	var out [][]byte
	o := cpaneltest.Default(cpaneltest.LayoutBackup)
	o.Databases = nil
	o.Certificate = false
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup} {
		o.Layout = layout
		b, err := os.ReadFile(cpaneltest.Build(tb, dir, o))
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	for _, k := range []string{cpaneltest.HostileDotDot, cpaneltest.HostileSymlink, cpaneltest.HostileHardlink, cpaneltest.HostileNestedOut} {
		p, _ := cpaneltest.Hostile(tb, tb.TempDir(), k)
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestWriteFuzzCorpus writes the seed corpora kept in testdata/fuzz.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("NPANEL_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set NPANEL_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(target, name string, vals ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n" + strings.Join(vals, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range walkSeeds(t) {
		write("FuzzWalk", fmt.Sprintf("seed-%d", i), "[]byte("+strconv.Quote(string(s))+")")
	}
	seeds := map[uint8][]string{
		0: {"USER=bob\nDNS=example.com\nDNS1=addon.org\nPLAN=gold\n", "=\n==\nX"},
		1: {"---\nmain_domain: example.com\naddon_domains:\n  addon.org: addonorg.example.com\nparked_domains:\n  - parked.net\nsub_domains:\n  - blog.example.com\n", "documentroot: /home/bob/public_html\n", "main_domain: [x"},
		2: {"info:$6$salt$hash:20000::::::\nsales:!!:1\n", "info:1048576\n"},
		3: {"team@example.com: a@x.org, b@y.org\n*: :fail: No Such User Here\np@example.com: |/bin/x\n"},
		4: {"GRANT USAGE ON *.* TO 'bob_u'@'localhost' IDENTIFIED BY PASSWORD '*0123456789ABCDEF0123456789ABCDEF01234567';\nGRANT ALL PRIVILEGES ON `bob\\_wp`.* TO 'bob_u'@'localhost';\n", "CREATE USER 'a\\'b'@'%' IDENTIFIED VIA mysql_native_password USING '*AB';\n"},
		5: {"MAILTO=\"a@b\"\n*/5 * * * * /usr/bin/php /home/bob/x.php\n@daily /x\n* * *\n"},
		6: {"RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteRule . /index.php [L]\nRewriteRule ^a$ /b [R=301]\nphp_value x 1\nDeny from all\n"},
		7: {"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		8: {"From: a@b\nSubject: Away\n\nBack soon.\n"},
		9: {"bob:$6$x:1001:1001::/home/bob:/bin/bash\nup@example.com:h:1:1:bob:/home/bob/up:/bin/ftpsh\n"},
	}
	if pemData, err := cpaneltest.CertificatePEM("example.com"); err == nil {
		seeds[7] = append(seeds[7], string(pemData))
	}
	for kind, ss := range seeds {
		for i, s := range ss {
			write("FuzzParsers", fmt.Sprintf("seed-%d-%d", kind, i), fmt.Sprintf("byte(%s)", strconv.QuoteRune(rune(kind))), "[]byte("+strconv.Quote(s)+")")
		}
	}
}
