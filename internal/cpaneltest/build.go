// Package cpaneltest builds synthetic cPanel account archives for tests:
// well-formed ones in the two layouts cPanel writes (old cpmove-USER.tar.gz
// with a nested homedir.tar, current backup-...tar.gz with a homedir/
// directory) and hostile ones (entries that leave the tree, devices, an
// absurd size, a gzip bomb). Only tests import it.
package cpaneltest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Layouts.
const (
	LayoutCpmove = "cpmove" // cpmove-USER.tar.gz, homedir.tar inside
	LayoutBackup = "backup" // backup-M.D.YYYY_HH-MM-SS_USER.tar.gz, homedir/
)

// Domain is an add-on or sub domain with its own document root.
type Domain struct {
	Domain  string
	Docroot string // relative to the home
}

// Mailbox is a mail account with a known password.
type Mailbox struct {
	Address    string
	Password   string
	QuotaBytes uint64
	Messages   int
}

// Forwarder is a line of va/DOMAIN.
type Forwarder struct {
	Source       string // address or "*" for the domain's catch-all
	Destinations []string
}

// Autoresponder is a file of homedir/.autorespond.
type Autoresponder struct {
	Address, Subject, Body string
}

// Database is a MariaDB database with one user of its own.
type Database struct {
	Name     string // cPanel's full name (USER_suffix)
	User     string
	Password string
	Rows     int
	// Definers adds, as mariadb-dump writes them, a view items_v, a
	// procedure add_item(id) and a trigger filling audit, all with DEFINER
	// the database's user, and a view root_v with DEFINER root@localhost.
	Definers bool
}

// PgDatabase is a PostgreSQL database with one user of its own, in
// psql/NAME.tar, psql_users.sql and psql_grants.sql as pkgacct writes them.
type PgDatabase struct {
	Name     string // cPanel's full name (USER_suffix)
	User     string
	Password string // its hash (SCRAM-SHA-256, or md5 with MD5) is in psql_users.sql
	MD5      bool
	// Plain writes a plain SQL dump (pg_dump's default format) of Rows
	// rows; otherwise NAME.tar is pg_dump's tar format of a fixed database
	// (PgTarRows rows in items, a view items_v, a function item_count()).
	Plain bool
	Rows  int
}

// PgTarRows is the number of rows of items in the tar dump.
const PgTarRows = 3

//go:embed testdata/pgdump-shop.tar
var pgTarDump []byte

// Options say what an archive holds. Default() fills every field.
type Options struct {
	Layout     string
	User       string
	MainDomain string
	Plan       string
	Contact    string
	Addons     []Domain
	Parked     []string
	Subs       []Domain
	Mailboxes  []Mailbox
	Forwarders map[string][]Forwarder // by domain
	Autoresp   []Autoresponder
	Databases  []Database
	// PgDatabases are not in Default().
	PgDatabases []PgDatabase
	Cron        []string // crontab lines
	// Certificate adds apache_tls/MAINDOMAIN (key, leaf, chain).
	Certificate bool
	FTPAccounts []string
	// HtaccessExtra lines follow the WordPress block in public_html/.htaccess.
	HtaccessExtra []string
	// BigFileBytes adds homedir/public_html/big.bin of pseudo-random
	// (incompressible) bytes, for benchmarks; with BigFileText, of
	// pseudo-random text gzip shrinks about 2×.
	BigFileBytes int64
	BigFileText  bool
	// Extra top-level archive entries (path -> content) nPanel does not know.
	Extra map[string]string
	// SetuidFile, in the home, has mode 04755 and setgid 02000 in the
	// archive: an import must drop both bits.
	SetuidFile string
}

// Default returns Options for an archive with one of everything.
func Default(layout string) Options {
	return Options{
		Layout:     layout,
		User:       "cpuser",
		MainDomain: "example.com",
		Plan:       "gold",
		Contact:    "owner@example.net",
		Addons:     []Domain{{Domain: "addon.org", Docroot: "addon.org"}},
		Parked:     []string{"parked.net"},
		Subs:       []Domain{{Domain: "blog.example.com", Docroot: "public_html/blog"}},
		Mailboxes: []Mailbox{
			{Address: "info@example.com", Password: "info-secret-1", QuotaBytes: 1 << 30, Messages: 3},
			{Address: "sales@addon.org", Password: "sales-secret-2", Messages: 1},
		},
		Forwarders: map[string][]Forwarder{
			"example.com": {{Source: "team@example.com", Destinations: []string{"a@example.org", "b@example.org"}}, {Source: "*", Destinations: []string{":fail: No Such User Here"}}},
		},
		Autoresp:    []Autoresponder{{Address: "info@example.com", Subject: "Away", Body: "Back on Monday.\n"}},
		Databases:   []Database{{Name: "cpuser_wp", User: "cpuser_wpuser", Password: "db-secret-3", Rows: 3}},
		Cron:        []string{"MAILTO=\"owner@example.net\"", "*/5 * * * * /usr/local/bin/php /home/cpuser/public_html/cron.php >/dev/null 2>&1", "@daily /home/cpuser/bin/cleanup"},
		Certificate: true,
		FTPAccounts: []string{"uploads@example.com"},
		HtaccessExtra: []string{
			"RewriteCond %{HTTP_COOKIE} !^.*wordpress_logged_in.*$",
			"RewriteRule ^old/(.*)$ /new/$1 [R=301,L]",
			"php_value upload_max_filesize 64M",
		},
		Extra:      map[string]string{"bandwidth/example.com": "1 2 3\n", "logs/example.com-ssl_log": "log line\n"},
		SetuidFile: "public_html/cgi-bin/tool.cgi",
	}
}

// definerObjects is what mariadb-dump --routines --triggers writes for
// Database.Definers.
func definerObjects(user string) string {
	d := "`" + user + "`@`localhost`"
	return "CREATE TABLE `audit` (`id` int(11) DEFAULT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n" +
		"/*!50003 SET @saved_sql_mode = @@sql_mode */ ;\n" +
		"/*!50003 SET sql_mode = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;\n" +
		"DELIMITER ;;\n" +
		"/*!50003 CREATE*/ /*!50017 DEFINER=" + d + "*/ /*!50003 TRIGGER `items_audit` AFTER INSERT ON `items` FOR EACH ROW INSERT INTO audit VALUES (NEW.id) */;;\n" +
		"DELIMITER ;\n" +
		"/*!50003 SET sql_mode = @saved_sql_mode */ ;\n" +
		"DELIMITER ;;\n" +
		"CREATE DEFINER=" + d + " PROCEDURE `add_item`(IN i INT)\n    SQL SECURITY DEFINER\nBEGIN\n  INSERT INTO items VALUES (i, CONCAT('row ', i));\nEND ;;\n" +
		"DELIMITER ;\n" +
		"/*!50001 CREATE ALGORITHM=UNDEFINED */\n" +
		"/*!50013 DEFINER=" + d + " SQL SECURITY DEFINER */\n" +
		"/*!50001 VIEW `items_v` AS select `items`.`id` AS `id`,`items`.`v` AS `v` from `items` */;\n" +
		"/*!50001 CREATE ALGORITHM=UNDEFINED */\n" +
		"/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n" +
		"/*!50001 VIEW `root_v` AS select current_user() AS `u` */;\n"
}

// pgPlainDump is a plain pg_dump of items with n rows, with the owner and
// privilege statements of the old server and no \restrict line (pg_dump
// before 15.14).
func pgPlainDump(n int) string {
	var b strings.Builder
	b.WriteString("--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n\n")
	b.WriteString("CREATE TABLE public.items (\n    id integer NOT NULL,\n    v text\n);\n\nALTER TABLE public.items OWNER TO cpuser;\n\n")
	b.WriteString("CREATE VIEW public.items_v AS\n SELECT items.v\n   FROM public.items;\n\nALTER TABLE public.items_v OWNER TO cpuser;\n\n")
	b.WriteString("COPY public.items (id, v) FROM stdin;\n")
	for i := range n {
		fmt.Fprintf(&b, "%d\trow %d\n", i+1, i+1)
	}
	b.WriteString("\\.\n\nALTER TABLE ONLY public.items\n    ADD CONSTRAINT items_pkey PRIMARY KEY (id);\n\n")
	b.WriteString("REVOKE ALL ON TABLE public.items FROM PUBLIC;\nGRANT ALL ON TABLE public.items TO cpuser;\n\n--\n-- PostgreSQL database dump complete\n--\n\n")
	return b.String()
}

// PgSCRAMHash is the SCRAM-SHA-256 verifier PostgreSQL stores for pw (a
// fixed salt: archives are reproducible).
func PgSCRAMHash(pw string) string {
	salt := []byte("cpaneltest-salt!")
	salted, err := pbkdf2.Key(sha256.New, pw, salt, 4096, sha256.Size)
	if err != nil {
		panic(err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$4096:%s$%s:%s", b64(salt), b64(stored[:]), b64(mac(salted, "Server Key")))
}

// PgMD5Hash is PostgreSQL's md5 hash of pw for role user.
func PgMD5Hash(user, pw string) string {
	return fmt.Sprintf("md5%x", md5.Sum([]byte(pw+user)))
}

// Password of the cPanel account itself (its hash appears in mysql.sql).
const accountDBHash = "*0123456789ABCDEF0123456789ABCDEF01234567"

// Build writes the archive o describes into dir and returns its path.
func Build(t testing.TB, dir string, o Options) string {
	t.Helper()
	p, err := build(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// archive writes entries under a top directory.
type archive struct {
	tw   *tar.Writer
	top  string
	mt   time.Time
	seen map[string]bool // directories written
}

func (a *archive) dir(name string) error {
	return a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path.Join(a.top, name) + "/", Mode: 0o755, ModTime: a.mt})
}

func (a *archive) file(name string, mode int64, data []byte) error {
	if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(a.top, name), Mode: mode, Size: int64(len(data)), ModTime: a.mt}); err != nil {
		return err
	}
	_, err := a.tw.Write(data)
	return err
}

func (a *archive) symlink(name, target string) error {
	return a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: path.Join(a.top, name), Linkname: target, Mode: 0o777, ModTime: a.mt})
}

func build(dir string, o Options) (string, error) {
	mt := time.Date(2026, 6, 12, 10, 0, 0, 0, time.UTC)
	var name, top string
	switch o.Layout {
	case LayoutCpmove:
		top = "cpmove-" + o.User
		name = top + ".tar.gz"
	case LayoutBackup:
		top = "backup-6.12.2026_10-00-00_" + o.User
		name = top + ".tar.gz"
	default:
		return "", fmt.Errorf("unknown layout %q", o.Layout)
	}
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	a := &archive{tw: tw, top: top, mt: mt}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: top + "/", Mode: 0o700, ModTime: mt}); err != nil {
		return "", err
	}
	if err := writeMeta(a, o); err != nil {
		return "", err
	}
	// The home: nested tar (cpmove) or a directory.
	if o.Layout == LayoutCpmove {
		var buf bytes.Buffer
		if o.BigFileBytes > 0 {
			// The nested tar's size must be known up front: write it to a
			// temporary file rather than memory.
			tmp, err := os.CreateTemp(dir, ".homedir-*.tar")
			if err != nil {
				return "", err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			htw := tar.NewWriter(tmp)
			if err := writeHome(&archive{tw: htw, mt: mt}, o); err != nil {
				return "", err
			}
			if err := htw.Close(); err != nil {
				return "", err
			}
			st, _ := tmp.Stat()
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: top + "/homedir.tar", Mode: 0o600, Size: st.Size(), ModTime: mt}); err != nil {
				return "", err
			}
			if _, err := tmp.Seek(0, 0); err != nil {
				return "", err
			}
			if _, err := io.Copy(tw, tmp); err != nil {
				return "", err
			}
		} else {
			htw := tar.NewWriter(&buf)
			if err := writeHome(&archive{tw: htw, mt: mt}, o); err != nil {
				return "", err
			}
			if err := htw.Close(); err != nil {
				return "", err
			}
			if err := a.file("homedir.tar", 0o600, buf.Bytes()); err != nil {
				return "", err
			}
		}
	} else {
		if err := writeHome(&archive{tw: tw, top: top + "/homedir", mt: mt}, o); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return p, f.Close()
}

func domainOf(addr string) string { _, d, _ := strings.Cut(addr, "@"); return d }
func localOf(addr string) string  { l, _, _ := strings.Cut(addr, "@"); return l }

func writeMeta(a *archive, o Options) error {
	var cp strings.Builder
	fmt.Fprintf(&cp, "USER=%s\nDNS=%s\nPLAN=%s\nCONTACTEMAIL=%s\nSTARTDATE=1700000000\nMAXADDON=unlimited\n", o.User, o.MainDomain, o.Plan, o.Contact)
	for i, d := range o.Addons {
		fmt.Fprintf(&cp, "DNS%d=%s\n", i+1, d.Domain)
	}
	for i, d := range o.Parked {
		fmt.Fprintf(&cp, "DNS%d=%s\n", len(o.Addons)+i+1, d)
	}
	files := map[string]string{"cp/" + o.User: cp.String()}

	// userdata/main: add-on domains are served through a subdomain of the
	// main domain in cPanel (addon.org -> addon.example.com).
	var um strings.Builder
	fmt.Fprintf(&um, "---\nmain_domain: %s\naddon_domains:\n", o.MainDomain)
	if len(o.Addons) == 0 {
		um.Reset()
		fmt.Fprintf(&um, "---\nmain_domain: %s\naddon_domains: {}\n", o.MainDomain)
	}
	var subs []string
	for _, d := range o.Addons {
		sub := strings.ReplaceAll(d.Domain, ".", "") + "." + o.MainDomain
		subs = append(subs, sub)
		fmt.Fprintf(&um, "  %s: %s\n", d.Domain, sub)
	}
	um.WriteString("parked_domains:\n")
	for _, d := range o.Parked {
		fmt.Fprintf(&um, "  - %s\n", d)
	}
	if len(o.Parked) == 0 {
		um.WriteString("  []\n")
	}
	um.WriteString("sub_domains:\n")
	for _, d := range o.Subs {
		subs = append(subs, d.Domain)
	}
	for _, s := range subs {
		fmt.Fprintf(&um, "  - %s\n", s)
	}
	if len(subs) == 0 {
		um.WriteString("  []\n")
	}
	files["userdata/main"] = um.String()
	home := "/home/" + o.User
	files["userdata/"+o.MainDomain] = fmt.Sprintf("---\ndocumentroot: %s/public_html\nhomedir: %s\nip: 192.0.2.10\nserveralias: www.%s %s\nservername: %s\nuser: %s\n",
		home, home, o.MainDomain, strings.Join(prefixAll("www.", o.Parked), " "), o.MainDomain, o.User)
	for i, d := range o.Addons {
		files["userdata/"+subs[i]] = fmt.Sprintf("---\ndocumentroot: %s/%s\nserveralias: www.%s %s www.%s\nservername: %s\nuser: %s\n",
			home, d.Docroot, d.Domain, d.Domain, subs[i], subs[i], o.User)
	}
	for _, d := range o.Subs {
		files["userdata/"+d.Domain] = fmt.Sprintf("---\ndocumentroot: %s/%s\nservername: %s\nuser: %s\n", home, d.Docroot, d.Domain, o.User)
	}
	for _, z := range append([]string{o.MainDomain}, append(domainsOf(o.Addons), o.Parked...)...) {
		files["dnszones/"+z+".db"] = fmt.Sprintf("; cPanel first:11.110\n$TTL 14400\n%s.\t86400\tIN\tSOA\tns1.host.example.\thostmaster.%s. ( 2026061201 3600 1800 1209600 86400 )\n%s.\t86400\tIN\tNS\tns1.host.example.\n%s.\t14400\tIN\tA\t192.0.2.10\nwww\t14400\tIN\tCNAME\t%s.\n%s.\t14400\tIN\tMX\t0\t%s.\n",
			z, z, z, z, z, z, z)
	}
	// Forwarders and filters.
	for d, fs := range o.Forwarders {
		var va strings.Builder
		for _, f := range fs {
			fmt.Fprintf(&va, "%s: %s\n", f.Source, strings.Join(f.Destinations, ","))
		}
		files["va/"+d] = va.String()
		files["vf/"+d] = ""
	}
	// Databases.
	var grants strings.Builder
	fmt.Fprintf(&grants, "-- cPanel mysql backup\nGRANT USAGE ON *.* TO '%s'@'localhost' IDENTIFIED BY PASSWORD '%s';\n", o.User, accountDBHash)
	for _, db := range o.Databases {
		files["mysql/"+db.Name+".create"] = fmt.Sprintf("-- MySQL dump\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `%s` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n", db.Name)
		var sql strings.Builder
		sql.WriteString("/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.13-MariaDB\n/*!40101 SET NAMES utf8mb4 */;\n")
		sql.WriteString("DROP TABLE IF EXISTS `items`;\nCREATE TABLE `items` (\n  `id` int(11) NOT NULL,\n  `v` varchar(64) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n")
		if db.Rows > 0 {
			sql.WriteString("INSERT INTO `items` VALUES ")
			for i := range db.Rows {
				if i > 0 {
					sql.WriteString(",")
				}
				fmt.Fprintf(&sql, "(%d,'row %d')", i+1, i+1)
			}
			sql.WriteString(";\n")
		}
		if db.Definers {
			sql.WriteString(definerObjects(db.User))
		}
		sql.WriteString("-- Dump completed on 2026-06-12 10:00:00\n")
		files["mysql/"+db.Name+".sql"] = sql.String()
		esc := strings.ReplaceAll(db.Name, "_", `\_`)
		for _, host := range []string{"localhost", "127.0.0.1"} {
			fmt.Fprintf(&grants, "GRANT USAGE ON *.* TO '%s'@'%s' IDENTIFIED BY PASSWORD '%s';\n", db.User, host, MySQLNativeHash(db.Password))
			fmt.Fprintf(&grants, "GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'%s';\n", esc, db.User, host)
		}
		fmt.Fprintf(&grants, "GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'localhost';\n", esc, o.User)
	}
	files["mysql.sql"] = grants.String()
	if len(o.PgDatabases) > 0 {
		var users, pgGrants strings.Builder
		for _, db := range o.PgDatabases {
			if db.Plain {
				files["psql/"+db.Name+".tar"] = pgPlainDump(db.Rows)
			} else {
				files["psql/"+db.Name+".tar"] = string(pgTarDump)
			}
			hash := PgSCRAMHash(db.Password)
			if db.MD5 {
				hash = PgMD5Hash(db.User, db.Password)
			}
			fmt.Fprintf(&users, "CREATE USER \"%s\" WITH PASSWORD E'%s';\n", db.User, hash)
			fmt.Fprintf(&pgGrants, "GRANT ALL ON DATABASE \"%s\" TO \"%s\";\n", db.Name, db.User)
			fmt.Fprintf(&pgGrants, "GRANT \"%s\" TO \"%s\";\n", db.Name, o.User)
		}
		files["psql_users.sql"] = users.String()
		files["psql_grants.sql"] = pgGrants.String()
	}
	if o.Certificate {
		pemData, err := CertificatePEM(o.MainDomain)
		if err != nil {
			return err
		}
		files["apache_tls/"+o.MainDomain] = string(pemData)
	}
	if len(o.Cron) > 0 {
		files["cron/"+o.User] = strings.Join(o.Cron, "\n") + "\n"
	}
	var ftp strings.Builder
	fmt.Fprintf(&ftp, "%s:$6$x$y:1001:1001::%s:/bin/bash\n", o.User, home)
	for _, u := range o.FTPAccounts {
		fmt.Fprintf(&ftp, "%s:$6$abc$def:1001:1001:%s:%s/uploads:/bin/ftpsh\n", u, o.User, home)
	}
	files["proftpdpasswd"] = ftp.String()
	files["version"] = "pkgacct version: 10\narchive version: 4\n"
	maps := []map[string]string{files, o.Extra}
	for _, m := range maps {
		for _, k := range sortedKeys(m) {
			if err := a.file(k, 0o600, []byte(m[k])); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeHome(a *archive, o Options) error {
	if err := a.dir("public_html"); err != nil {
		return err
	}
	files := map[string]string{
		"public_html/index.php":     "<?php echo 'hello from " + o.MainDomain + "';\n",
		"public_html/cron.php":      "<?php // cron\n",
		".bashrc":                   "# .bashrc\n",
		".ssh/authorized_keys":      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldServerKeyOldServerKeyOldServerKeyOld old-server\n",
		"public_html/wp-config.php": "<?php define('DB_NAME', 'x');\n",
	}
	ht := "# BEGIN WordPress\n<IfModule mod_rewrite.c>\nRewriteEngine On\nRewriteBase /\nRewriteRule ^index\\.php$ - [L]\nRewriteCond %{REQUEST_FILENAME} !-f\nRewriteCond %{REQUEST_FILENAME} !-d\nRewriteRule . /index.php [L]\n</IfModule>\n# END WordPress\n"
	if len(o.HtaccessExtra) > 0 {
		ht += strings.Join(o.HtaccessExtra, "\n") + "\n"
	}
	files["public_html/.htaccess"] = ht
	for _, d := range append(append([]Domain{}, o.Addons...), o.Subs...) {
		files[d.Docroot+"/index.html"] = "<h1>" + d.Domain + "</h1>\n"
	}
	// etc/DOMAIN/{passwd,shadow,quota} and the maildirs.
	byDomain := map[string][]Mailbox{}
	for _, m := range o.Mailboxes {
		byDomain[domainOf(m.Address)] = append(byDomain[domainOf(m.Address)], m)
	}
	for d, ms := range byDomain {
		var pw, sh, q strings.Builder
		for i, m := range ms {
			l := localOf(m.Address)
			fmt.Fprintf(&pw, "%s:x:1001:1001::/home/%s/mail/%s/%s:/home/%s\n", l, o.User, d, l, o.User)
			fmt.Fprintf(&sh, "%s:%s:20000::::::\n", l, SHA512Crypt(m.Password, fmt.Sprintf("salt%04d%s", i, d[:1])))
			if m.QuotaBytes > 0 {
				fmt.Fprintf(&q, "%s:%d\n", l, m.QuotaBytes)
			}
			for j := range m.Messages {
				files[fmt.Sprintf("mail/%s/%s/cur/17000000%02d.M1P1.host,S=100:2,S", d, l, j)] = fmt.Sprintf("From: x@example.org\r\nTo: %s\r\nSubject: message %d\r\n\r\nbody %d\r\n", m.Address, j, j)
			}
			files[fmt.Sprintf("mail/%s/%s/dovecot-uidlist", d, l)] = "3 V1 N1\n"
		}
		files["etc/"+d+"/passwd"] = pw.String()
		files["etc/"+d+"/shadow"] = sh.String()
		files["etc/"+d+"/quota"] = q.String()
	}
	for _, ar := range o.Autoresp {
		files[".autorespond/"+ar.Address] = fmt.Sprintf("From: \"%s\" <%s>\nSubject: %s\nContent-Type: text/plain; charset=\"utf-8\"\n\n%s", localOf(ar.Address), ar.Address, ar.Subject, ar.Body)
		files[".autorespond/"+ar.Address+".json"] = `{"interval":24,"start":0,"stop":0}`
	}
	for _, k := range sortedKeys(files) {
		// Directories first, as tar does.
		for _, d := range a.parents(k) {
			if d == "public_html" {
				continue
			}
			if err := a.dir(d); err != nil {
				return err
			}
		}
		mode := int64(0o644)
		if strings.HasPrefix(k, "mail/") || strings.HasPrefix(k, "etc/") {
			mode = 0o640
		}
		if err := a.file(k, mode, []byte(files[k])); err != nil {
			return err
		}
	}
	if o.SetuidFile != "" {
		for _, d := range a.parents(o.SetuidFile) {
			if err := a.dir(d); err != nil {
				return err
			}
		}
		if err := a.file(o.SetuidFile, 0o6755, []byte("#!/bin/sh\necho hi\n")); err != nil {
			return err
		}
	}
	if err := a.symlink("www", "public_html"); err != nil {
		return err
	}
	if o.BigFileBytes > 0 {
		if err := a.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(a.top, "public_html/big.bin"), Mode: 0o644, Size: o.BigFileBytes, ModTime: a.mt}); err != nil {
			return err
		}
		var src io.Reader = newNoise()
		if o.BigFileText {
			src = textOf{newNoise()}
		}
		if _, err := io.CopyN(a.tw, src, o.BigFileBytes); err != nil {
			return err
		}
	}
	return nil
}

// parents lists the directories above name not written yet.
func (a *archive) parents(name string) []string {
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	var out []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	var fresh []string
	for _, d := range out {
		if !a.seen[d] {
			fresh = append(fresh, d)
			a.seen[d] = true
		}
	}
	return fresh
}

// noise is fast pseudo-random data gzip cannot shrink.
type noise struct{ r *mrand.ChaCha8 }

func newNoise() *noise { return &noise{r: mrand.NewChaCha8([32]byte{1, 2, 3})} }

func (n *noise) Read(p []byte) (int, error) { return n.r.Read(p) }

// textOf maps noise onto a small alphabet with blanks and newlines.
type textOf struct{ r io.Reader }

func (t textOf) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	const alphabet = "etaoinshrdlu \n.,"
	for i := range p[:n] {
		p[i] = alphabet[int(p[i])%len(alphabet)]
	}
	return n, err
}

func prefixAll(pfx string, s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = pfx + x
	}
	return out
}

func domainsOf(ds []Domain) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Domain
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CertificatePEM returns a combined PEM as cPanel's apache_tls/DOMAIN
// holds it: the private key, the leaf for domain, then its issuer (the
// CA CertificateRoots trusts).
func CertificatePEM(domain string) ([]byte, error) {
	// Signed by the process's test CA (CertificateRoots trusts it).
	caCert, caKey := testCA()
	caDER := caCert.Raw
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// A serial of its own: the CA signs every archive's leaf.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain, "www." + domain},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return b.Bytes(), nil
}
