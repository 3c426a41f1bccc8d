package cpanel

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parsers of the items of a cPanel archive. Each takes the item's content
// (bounded by the caller) and never fails on a line it does not understand
// in a file of lines: such lines come back for the report.

// ParseCpUser parses cp/USER: KEY=value lines.
func ParseCpUser(b []byte) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
		if ok && k != "" && !strings.HasPrefix(k, "#") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// UserdataMain is userdata/main.
type UserdataMain struct {
	MainDomain    string            `yaml:"main_domain"`
	AddonDomains  map[string]string `yaml:"addon_domains"` // add-on domain -> the subdomain serving it
	ParkedDomains []string          `yaml:"parked_domains"`
	SubDomains    []string          `yaml:"sub_domains"`
}

// UserdataDomain is userdata/DOMAIN (only the fields an import uses).
type UserdataDomain struct {
	DocumentRoot string `yaml:"documentroot"`
	Homedir      string `yaml:"homedir"`
	ServerAlias  string `yaml:"serveralias"`
	ServerName   string `yaml:"servername"`
}

// ParseUserdataMain parses userdata/main.
func ParseUserdataMain(b []byte) (*UserdataMain, error) {
	var m UserdataMain
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("userdata/main: %w", err)
	}
	return &m, nil
}

// ParseUserdataDomain parses userdata/DOMAIN.
func ParseUserdataDomain(b []byte) (*UserdataDomain, error) {
	var d UserdataDomain
	if err := yaml.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// ParseMailPasswd returns the local parts of etc/DOMAIN/passwd.
func ParseMailPasswd(b []byte) []string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		l, _, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// ParseMailShadow returns local part -> crypt hash from etc/DOMAIN/shadow.
func ParseMailShadow(b []byte) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) >= 2 && f[0] != "" {
			out[f[0]] = f[1]
		}
	}
	return out
}

// ParseMailQuota returns local part -> bytes from etc/DOMAIN/quota.
func ParseMailQuota(b []byte) map[string]uint64 {
	out := map[string]uint64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		l, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[l] = n
		}
	}
	return out
}

// DovecotHash gives a crypt(3) hash Dovecot's scheme prefix; ok is false
// for a hash no login can match (locked, empty) or of an unknown kind.
func DovecotHash(h string) (string, bool) {
	switch {
	case strings.HasPrefix(h, "$6$"):
		return "{SHA512-CRYPT}" + h, true
	case strings.HasPrefix(h, "$5$"):
		return "{SHA256-CRYPT}" + h, true
	case strings.HasPrefix(h, "$1$"):
		return "{MD5-CRYPT}" + h, true
	case strings.HasPrefix(h, "$2y$"), strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"):
		return "{BLF-CRYPT}" + h, true
	}
	return "", false
}

// Forwarder is one line of va/DOMAIN.
type Forwarder struct {
	Line         int
	Source       string   // address or "*@domain"
	Destinations []string // addresses
	Other        []string // pipes, :fail:, :blackhole: and the like
}

// ParseForwarders parses va/DOMAIN ("src: dest, dest").
func ParseForwarders(domain string, b []byte) (fw []Forwarder, bad []int) {
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		src, dst, ok := strings.Cut(line, ":")
		src = strings.TrimSpace(src)
		if !ok || src == "" {
			bad = append(bad, i+1)
			continue
		}
		if src == "*" {
			src = "*@" + domain
		}
		f := Forwarder{Line: i + 1, Source: src}
		dst = strings.TrimSpace(dst)
		if strings.HasPrefix(dst, ":fail:") || strings.HasPrefix(dst, ":blackhole:") {
			f.Other = append(f.Other, dst)
		} else {
			for d := range strings.SplitSeq(dst, ",") {
				d = strings.Trim(strings.TrimSpace(d), `"`)
				switch {
				case d == "":
				case strings.Contains(d, "@") && !strings.ContainsAny(d, " |/\\"):
					f.Destinations = append(f.Destinations, d)
				default:
					f.Other = append(f.Other, d)
				}
			}
		}
		fw = append(fw, f)
	}
	return fw, bad
}

// ParseAutoresponder parses a homedir/.autorespond/ADDRESS file: mail
// headers, a blank line, the body.
func ParseAutoresponder(b []byte) (subject, body string) {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	head, body, _ := strings.Cut(s, "\n\n")
	for line := range strings.SplitSeq(head, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "subject") {
			subject = strings.TrimSpace(v)
		}
	}
	return subject, body
}

// Grant is what mysql.sql says about one database user.
type Grant struct {
	User   string
	Hash   string              // "*HEX" (mysql_native_password)
	Hosts  []string            // hosts it may connect from
	Grants map[string][]string // database -> privileges
}

var (
	grantRe = regexp.MustCompile("(?i)^GRANT\\s+(.+?)\\s+ON\\s+(\\*|`((?:[^`]|``)+)`)\\.\\*\\s+TO\\s+'((?:[^'\\\\]|\\\\.)*)'@'((?:[^'\\\\]|\\\\.)*)'")
	userRe  = regexp.MustCompile(`(?i)^(?:CREATE|ALTER)\s+USER\s+(?:IF\s+NOT\s+EXISTS\s+)?'((?:[^'\\]|\\.)*)'@'((?:[^'\\]|\\.)*)'`)
	hashRe  = regexp.MustCompile(`(?i)(?:IDENTIFIED\s+BY\s+PASSWORD|USING)\s+'(\*[0-9A-F]{40})'`)
	anyHash = regexp.MustCompile(`(?i)(?:IDENTIFIED\s+BY\s+PASSWORD|USING)\s+'([^']*)'`)
)

// ParseGrants parses mysql.sql (GRANT, CREATE USER and ALTER USER
// statements, one per line as cPanel writes them). Users come back in the
// order met; lines that are neither come back as bad (1-based).
func ParseGrants(b []byte) (users []*Grant, bad []int) {
	byName := map[string]*Grant{}
	get := func(name string) *Grant {
		g := byName[name]
		if g == nil {
			g = &Grant{User: name, Grants: map[string][]string{}}
			byName[name] = g
			users = append(users, g)
		}
		return g
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "--") || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "/*") || strings.EqualFold(line, "FLUSH PRIVILEGES;") {
			continue
		}
		var user, host string
		var g *Grant
		if m := grantRe.FindStringSubmatch(line); m != nil {
			user, host = unquoteSQL(m[4]), unquoteSQL(m[5])
			g = get(user)
			if m[2] != "*" {
				db := unescapeGrantDB(strings.ReplaceAll(m[3], "``", "`"))
				var privs []string
				for p := range strings.SplitSeq(strings.ToUpper(m[1]), ",") {
					p = strings.Join(strings.Fields(p), " ")
					if p == "ALL" {
						p = "ALL PRIVILEGES"
					}
					if p != "" && !slices.Contains(g.Grants[db], p) && !slices.Contains(privs, p) {
						privs = append(privs, p)
					}
				}
				g.Grants[db] = append(g.Grants[db], privs...)
			}
		} else if m := userRe.FindStringSubmatch(line); m != nil {
			user, host = unquoteSQL(m[1]), unquoteSQL(m[2])
			g = get(user)
		} else {
			bad = append(bad, i+1)
			continue
		}
		if !slices.Contains(g.Hosts, host) {
			g.Hosts = append(g.Hosts, host)
		}
		if m := hashRe.FindStringSubmatch(line); m != nil {
			g.Hash = strings.ToUpper(m[1])
		} else if m := anyHash.FindStringSubmatch(line); m != nil && g.Hash == "" {
			g.Hash = m[1] // kept to say why it is skipped
		}
	}
	return users, bad
}

func unquoteSQL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unescapeGrantDB undoes the escaping of _ and % in a grant's database.
func unescapeGrantDB(s string) string {
	return strings.NewReplacer(`\_`, `_`, `\%`, `%`, `\\`, `\`).Replace(s)
}

// PEMParts is a combined PEM split by block type.
type PEMParts struct {
	Key   []byte   // the private key block, PEM
	Certs [][]byte // CERTIFICATE blocks, PEM, leaf first when the key matched one
	Other []string // types of other blocks
	Leaf  *x509.Certificate
}

// SplitPEM splits a combined PEM (apache_tls/DOMAIN) into its key and
// certificates, putting the certificate of the key first.
func SplitPEM(b []byte) (*PEMParts, error) {
	p := &PEMParts{}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch {
		case blk.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
			p.Certs = append(p.Certs, pem.EncodeToMemory(blk))
		case strings.HasSuffix(blk.Type, "PRIVATE KEY"):
			if p.Key != nil {
				return nil, fmt.Errorf("more than one private key")
			}
			p.Key = pem.EncodeToMemory(blk)
		default:
			p.Other = append(p.Other, blk.Type)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	leaf := 0
	if p.Key != nil {
		if pub := keyPublic(p.Key); pub != nil {
			for i, c := range certs {
				if e, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && e.Equal(pub) {
					leaf = i
					break
				}
			}
		}
	}
	p.Leaf = certs[leaf]
	if leaf != 0 {
		lc := p.Certs[leaf]
		p.Certs = append([][]byte{lc}, slices.Delete(p.Certs, leaf, leaf+1)...)
	}
	return p, nil
}

func keyPublic(keyPEM []byte) any {
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil
	}
	var k any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil
	}
	if s, ok := k.(crypto.Signer); ok {
		return s.Public()
	}
	return nil
}

// CronLine is one line of cron/USER.
type CronLine struct {
	Line     int
	Text     string
	Env      bool // VAR=value
	Schedule string
	Command  string
}

var cronKeywords = []string{"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}

var cronEnvRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\s*$`)

var cronFieldRe = regexp.MustCompile(`^[0-9A-Za-z*/,\-]+$`)

// ParseCron parses a crontab: jobs, environment lines, and the numbers of
// lines that are neither.
func ParseCron(b []byte) (lines []CronLine, bad []int) {
	for i, raw := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(raw)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.ContainsRune(t, 0) {
			bad = append(bad, i+1)
			continue
		}
		if k, _, ok := strings.Cut(t, "="); ok && cronEnvRe.MatchString(k) {
			lines = append(lines, CronLine{Line: i + 1, Text: t, Env: true})
			continue
		}
		// cron splits on blanks and tabs only.
		f := strings.FieldsFunc(t, func(r rune) bool { return r == ' ' || r == '\t' })
		if len(f) >= 2 && slices.Contains(cronKeywords, f[0]) {
			lines = append(lines, CronLine{Line: i + 1, Text: t, Schedule: f[0], Command: afterFields(t, 1)})
			continue
		}
		if len(f) >= 6 {
			ok := true
			for _, x := range f[:5] {
				ok = ok && cronFieldRe.MatchString(x)
			}
			if ok {
				lines = append(lines, CronLine{Line: i + 1, Text: t, Schedule: strings.Join(f[:5], " "), Command: afterFields(t, 5)})
				continue
			}
		}
		bad = append(bad, i+1)
	}
	return lines, bad
}

// afterFields returns t after its first n blank- or tab-separated fields.
func afterFields(t string, n int) string {
	rest := t
	for range n {
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			return ""
		}
		rest = rest[i:]
	}
	return strings.TrimLeft(rest, " \t")
}

// ParseProftpd returns the login names of proftpdpasswd.
func ParseProftpd(b []byte) []string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		n, _, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && n != "" {
			out = append(out, n)
		}
	}
	return out
}

// HtaccessIssue is a line of an .htaccess file nginx will not apply.
type HtaccessIssue struct {
	Line int
	Text string
	Why  string
}

// ParseHtaccess lists the lines of an .htaccess that nPanel's nginx does
// not apply. What nginx already does is not listed: the front-controller
// rewrite of WordPress and the like (nPanel's sites try the file, the
// directory, then /index.php), RewriteEngine, RewriteBase /, directory
// listing off, an index.php/index.html DirectoryIndex.
func ParseHtaccess(b []byte) []HtaccessIssue {
	var out []HtaccessIssue
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.Fields(t)
		d := strings.ToLower(f[0])
		why := ""
		switch {
		case strings.HasPrefix(d, "<ifmodule"), d == "</ifmodule>":
		case d == "rewriteengine", d == "rewritebase" && len(f) == 2 && f[1] == "/":
		case d == "rewritecond" && frontController(t):
		case d == "rewriterule" && frontController(t):
		case d == "options" && allIn(f[1:], "-Indexes", "+FollowSymLinks", "+SymLinksIfOwnerMatch", "-MultiViews", "+SymlinksIfOwnerMatch"):
		case d == "directoryindex" && allIn(f[1:], "index.php", "index.html", "index.htm"):
		case strings.HasPrefix(d, "rewrite"):
			why = "rewrite rule not applied: nginx does not read .htaccess"
		case d == "php_value", d == "php_flag", d == "php_admin_value", d == "php_admin_flag":
			why = "PHP setting not applied: set it in the site's PHP settings"
		case d == "deny", d == "allow", d == "order", d == "require", d == "satisfy", strings.HasPrefix(d, "auth"), strings.HasPrefix(d, "<files"), strings.HasPrefix(d, "</files"), strings.HasPrefix(d, "<limit"), strings.HasPrefix(d, "</limit"), strings.HasPrefix(d, "<requireall"), strings.HasPrefix(d, "</require"):
			why = "access control not applied: protect this path another way"
		case d == "redirect", d == "redirectmatch", d == "redirectpermanent":
			why = "redirect not applied"
		default:
			why = "directive not applied: nginx does not read .htaccess"
		}
		if why != "" {
			out = append(out, HtaccessIssue{Line: n, Text: t, Why: why})
		}
	}
	return out
}

// frontController recognises the lines of the usual "everything that is
// not a file goes to index.php" block.
func frontController(t string) bool {
	switch strings.Join(strings.Fields(t), " ") {
	case `RewriteCond %{REQUEST_FILENAME} !-f`, `RewriteCond %{REQUEST_FILENAME} !-d`,
		`RewriteRule ^index\.php$ - [L]`, `RewriteRule . /index.php [L]`, `RewriteRule ^ index.php [L]`,
		`RewriteRule ^(.*)$ index.php/$1 [L]`, `RewriteRule ^(.*)$ /index.php/$1 [L]`, `RewriteRule ^(.*)$ index.php [QSA,L]`,
		`RewriteRule ^ index.php [QSA,L]`:
		return true
	}
	return false
}

func allIn(xs []string, allowed ...string) bool {
	for _, x := range xs {
		if !slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, x) }) {
			return false
		}
	}
	return len(xs) > 0
}

// PgUser is one line of psql_users.sql.
type PgUser struct {
	Name string
	Hash string // as stored: "md5HEX" or "SCRAM-SHA-256$..." (anything else is not used)
}

// pgIdentRe is a PostgreSQL identifier as cPanel's PostgresAdmin writes
// one: double-quoted ("" inside) or bare.
const pgIdentRe = `("(?:[^"\x00-\x1f]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`

var (
	pgUserRe  = regexp.MustCompile(`(?i)^CREATE\s+(?:USER|ROLE)\s+` + pgIdentRe + `\s+(?:WITH\s+)?(?:LOGIN\s+)?(?:ENCRYPTED\s+)?PASSWORD\s+(E?)'((?:[^'\\\x00-\x1f]|''|\\[^\x00-\x1f])*)'\s*;?$`)
	pgGrantRe = regexp.MustCompile(`(?i)^GRANT\s+(?:ALL(?:\s+PRIVILEGES)?\s+ON\s+DATABASE\s+)?` + pgIdentRe + `\s+TO\s+` + pgIdentRe + `\s*;?$`)
)

// ParsePgUsers parses psql_users.sql, which cPanel's PostgresAdmin writes
// as one `CREATE USER "name" WITH PASSWORD E'hash';` a line. Lines that
// are not such statements come back as bad (1-based).
func ParsePgUsers(b []byte) (users []PgUser, bad []int) {
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "--") {
			continue
		}
		m := pgUserRe.FindStringSubmatch(line)
		if m == nil {
			bad = append(bad, i+1)
			continue
		}
		name := pgUnquoteIdent(m[1])
		if seen[name] {
			continue
		}
		seen[name] = true
		users = append(users, PgUser{Name: name, Hash: pgUnquoteString(m[3], m[2] != "")})
	}
	return users, bad
}

// ParsePgGrants parses psql_grants.sql: `GRANT "db" TO "user";` (the
// database's role, which cPanel grants to give a user the database) or
// `GRANT ALL [PRIVILEGES] ON DATABASE "db" TO "user";`. It returns user ->
// databases in the order met, and the lines it did not understand.
func ParsePgGrants(b []byte) (grants map[string][]string, bad []int) {
	grants = map[string][]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "--") {
			continue
		}
		m := pgGrantRe.FindStringSubmatch(line)
		if m == nil {
			bad = append(bad, i+1)
			continue
		}
		db, user := pgUnquoteIdent(m[1]), pgUnquoteIdent(m[2])
		if !slices.Contains(grants[user], db) {
			grants[user] = append(grants[user], db)
		}
	}
	return grants, bad
}

func pgUnquoteIdent(s string) string {
	if len(s) >= 2 && s[0] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s) // PostgreSQL folds bare names
}

// pgUnquoteString undoes the quoting of a string literal's body: a
// doubled quote always, and backslash escapes in an E'...' string (\x
// is x; a hash has no other escapes).
func pgUnquoteString(s string, e bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
		case e && s[i] == '\\' && i+1 < len(s):
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
