package cpanel

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// maxMeta bounds what is read into memory of one metadata item (cp/USER,
// userdata, zones, mysql.sql, PEM, crontab, .htaccess...); a larger one is
// reported and skipped.
const maxMeta = 8 << 20

// Sealer seals a secret to this node for a purpose (pki.Seal with the
// node's own public key).
type Sealer func(plain []byte, context string) ([]byte, error)

// Disposition shorthands.
const (
	dImport = agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT
	dAdapt  = agentpb.ImportDisposition_IMPORT_DISPOSITION_ADAPT
	dSkip   = agentpb.ImportDisposition_IMPORT_DISPOSITION_SKIP
)

// maxHtaccessItems bounds the report lines of one .htaccess.
const maxHtaccessItems = 50

type mailStat struct{ bytes, messages uint64 }

type dbInfo struct {
	engine       agentpb.DatabaseEngine
	entry        string
	bytes        uint64
	create, dump bool
}

type certInfo struct {
	entry string
	// pem is what the archive holds for the domain: apache_tls/DOMAIN
	// (key, leaf and chain in one file), or else the ssl/ files of the
	// domain (key, certificate and CA bundle apart) one after the other.
	pem      []byte
	combined bool
	parts    *PEMParts // pem split (certificates)
	err      error
}

// certDomain is the domain a certificate file of the archive is named
// after: apache_tls/DOMAIN, ssl/DOMAIN.{crt,key,pem,cabundle}.
func certDomain(name string) string {
	for _, ext := range []string{".pem", ".crt", ".key", ".cabundle", ".ca-bundle"} {
		if d, ok := strings.CutSuffix(name, ext); ok {
			return d
		}
	}
	return name
}

// collector builds a report from a walk.
type collector struct {
	// username is the account an import creates ("": the cPanel user's),
	// under whose names database users' hashes are sealed.
	username string
	rep      *agentpb.CpanelReport
	items    []*agentpb.CpanelItem // in the order met; sorted at the end
	cp       map[string]string
	main     *UserdataMain
	mainErr  error
	userdata map[string]*UserdataDomain
	zones    map[string]string
	passwd   map[string][]string          // domain -> locals
	shadow   map[string]map[string]string // domain -> local -> hash
	quota    map[string]map[string]uint64
	mail     map[string]*mailStat // "local@domain" -> maildir size
	rootMail mailStat             // the cPanel account's own mailbox
	forwards map[string][]Forwarder
	fwdBad   map[string][]int
	autoresp map[string][2]string
	dbs      map[string]*dbInfo
	grants   []*Grant
	pgUsers  []PgUser
	pgGrants map[string][]string // user -> databases
	certs    map[string]*certInfo
	cron     []CronLine
	cronBad  []int
	ftp      []string
	others   map[string]*agentpb.CpanelItem
}

func newCollector() *collector {
	return &collector{
		rep:      &agentpb.CpanelReport{},
		userdata: map[string]*UserdataDomain{},
		zones:    map[string]string{},
		passwd:   map[string][]string{},
		shadow:   map[string]map[string]string{},
		quota:    map[string]map[string]uint64{},
		mail:     map[string]*mailStat{},
		forwards: map[string][]Forwarder{},
		fwdBad:   map[string][]int{},
		autoresp: map[string][2]string{},
		dbs:      map[string]*dbInfo{},
		pgGrants: map[string][]string{},
		certs:    map[string]*certInfo{},
		others:   map[string]*agentpb.CpanelItem{},
	}
}

func (c *collector) item(kind, name string, d agentpb.ImportDisposition, note, entry string, n uint64) {
	c.items = append(c.items, &agentpb.CpanelItem{Kind: kind, Name: name, Disposition: d, Note: note, Entry: entry, Bytes: n})
}

// other reports an item nPanel does not take, one per top-level name.
func (c *collector) other(group, note, entry string, n uint64) {
	if it := c.others[group]; it != nil {
		it.Bytes += n
		return
	}
	it := &agentpb.CpanelItem{Kind: "other", Name: group, Disposition: dSkip, Note: note, Entry: entry, Bytes: n}
	c.others[group] = it
	c.items = append(c.items, it)
}

// knownOther says why the metadata nPanel has no use for is skipped.
var knownOther = map[string]string{
	"bandwidth":        "bandwidth statistics are not imported",
	"logs":             "web server logs are not imported",
	"counters":         "counters are not imported",
	"meta":             "cPanel metadata is not used",
	"version":          "cPanel archive version information",
	"shadow":           "the cPanel account's login password is not imported: nPanel accounts get their own",
	"domainkeys":       "DKIM keys are not imported: nPanel makes its own",
	"userconfig":       "cPanel user configuration is not used",
	"vad":              "cPanel domain forwarders are not imported",
	"httpfiles":        "cPanel HTTP files are not used",
	"sds":              "cPanel metadata is not used",
	"sds2":             "cPanel metadata is not used",
	"locale":           "cPanel locale is not used",
	"mma":              "Mailman lists are not imported",
	"mm":               "Mailman lists are not imported",
	"fp":               "FrontPage extensions are not imported",
	"resellerconfig":   "reseller settings are not imported",
	"suspended":        "cPanel suspension state is not imported",
	"mysql-timestamps": "cPanel metadata is not used",
}

func readMeta(e *Entry) ([]byte, bool, error) {
	if e.R == nil {
		return nil, false, nil
	}
	b, err := io.ReadAll(io.LimitReader(e.R, maxMeta+1))
	if err != nil {
		return nil, false, err
	}
	return b, len(b) <= maxMeta, nil
}

// visit takes one entry of the walk.
func (c *collector) visit(e *Entry) error {
	h := e.Header
	if rel, ok := e.InHome(); ok {
		return c.home(e, rel)
	}
	if h.Typeflag == tar.TypeDir {
		return nil
	}
	top, rest, _ := strings.Cut(e.Path, "/")
	size := uint64(max(h.Size, 0))
	if h.Typeflag != tar.TypeReg {
		c.other(top, "not a regular file", e.Raw, 0)
		return nil
	}
	meta := func() ([]byte, bool) {
		b, ok, err := readMeta(e)
		if err != nil || !ok {
			c.item("other", e.Path, dSkip, fmt.Sprintf("larger than %d bytes: not read", maxMeta), e.Raw, size)
			return nil, false
		}
		return b, true
	}
	switch {
	case top == "cp" && rest != "" && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok {
			c.cp = ParseCpUser(b)
		}
	case e.Path == "userdata/main":
		if b, ok := meta(); ok {
			c.main, c.mainErr = ParseUserdataMain(b)
		}
	case top == "userdata" && !strings.Contains(rest, "/"):
		if strings.HasSuffix(rest, ".cache") || strings.HasSuffix(rest, "_SSL") || strings.HasPrefix(rest, "cache") {
			return nil // derived copies of the files read
		}
		if b, ok := meta(); ok {
			if d, err := ParseUserdataDomain(b); err == nil {
				c.userdata[rest] = d
			} else {
				c.item("other", e.Path, dSkip, "unreadable YAML: "+err.Error(), e.Raw, size)
			}
		}
	case top == "dnszones" && strings.HasSuffix(rest, ".db") && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok {
			name := strings.TrimSuffix(rest, ".db")
			c.zones[name] = string(b)
			c.item("zone", name, dImport, "", e.Raw, size)
		}
	case top == "va" && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok {
			fw, bad := ParseForwarders(rest, b)
			c.forwards[rest] = append(c.forwards[rest], fw...)
			c.fwdBad[rest] = append(c.fwdBad[rest], bad...)
			for _, f := range fw {
				c.forwarderItem(f, e.Raw)
			}
			for _, l := range bad {
				c.item("forwarder", fmt.Sprintf("%s:%d", e.Path, l), dSkip, fmt.Sprintf("%s:%d: not a forwarder line", e.Path, l), e.Raw, 0)
			}
		}
	case top == "vf" && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok && hasContent(b) {
			c.item("other", e.Path, dSkip, "mail filters (Exim filter rules) are not imported", e.Raw, size)
		}
	case e.Path == "psql_users.sql" || e.Path == "psql/psql_users.sql" || e.Path == "pgsql/psql_users.sql":
		if b, ok := meta(); ok {
			users, bad := ParsePgUsers(b)
			c.pgUsers = append(c.pgUsers, users...)
			for _, l := range bad {
				c.item("database_user", fmt.Sprintf("%s:%d", e.Path, l), dSkip, fmt.Sprintf("%s:%d: statement not understood", e.Path, l), e.Raw, 0)
			}
		}
	case e.Path == "psql_grants.sql" || e.Path == "psql/psql_grants.sql" || e.Path == "pgsql/psql_grants.sql":
		if b, ok := meta(); ok {
			grants, bad := ParsePgGrants(b)
			for u, dbs := range grants {
				for _, d := range dbs {
					if !slices.Contains(c.pgGrants[u], d) {
						c.pgGrants[u] = append(c.pgGrants[u], d)
					}
				}
			}
			for _, l := range bad {
				c.item("grant", fmt.Sprintf("%s:%d", e.Path, l), dSkip, fmt.Sprintf("%s:%d: statement not understood", e.Path, l), e.Raw, 0)
			}
		}
	case (top == "mysql" || top == "psql" || top == "pgsql") && !strings.Contains(rest, "/"):
		c.database(e, top, rest, size)
	case e.Path == "mysql.sql":
		if b, ok := meta(); ok {
			users, bad := ParseGrants(b)
			c.grants = append(c.grants, users...)
			for _, l := range bad {
				c.item("database_user", fmt.Sprintf("mysql.sql:%d", l), dSkip, fmt.Sprintf("mysql.sql:%d: statement not understood", l), e.Raw, 0)
			}
		}
	case (top == "apache_tls" || top == "ssl") && rest != "" && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok {
			dom := certDomain(rest)
			ci := c.certs[dom]
			switch {
			case top == "apache_tls":
				// The combined file is the whole of it.
				c.certs[dom] = &certInfo{entry: e.Raw, pem: b, combined: true}
			case ci == nil:
				c.certs[dom] = &certInfo{entry: e.Raw, pem: append(b, '\n')}
			case !ci.combined && len(ci.pem) <= maxMeta:
				ci.pem = append(append(ci.pem, b...), '\n')
			}
		}
	case top == "cron" && rest != "" && !strings.Contains(rest, "/"):
		if b, ok := meta(); ok {
			c.cron, c.cronBad = ParseCron(b)
			for _, l := range c.cronBad {
				c.item("cron", fmt.Sprintf("line %d", l), dSkip, fmt.Sprintf("%s:%d: not a crontab line", e.Path, l), e.Raw, 0)
			}
		}
	case e.Path == "proftpdpasswd":
		if b, ok := meta(); ok {
			c.ftp = ParseProftpd(b)
		}
	default:
		note, ok := knownOther[top]
		if !ok {
			note = "not known to nPanel"
		}
		c.other(top, note, e.Raw, size)
	}
	return nil
}

func hasContent(b []byte) bool {
	for line := range strings.SplitSeq(string(b), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

func (c *collector) forwarderItem(f Forwarder, entry string) {
	switch {
	case len(f.Destinations) == 0 && len(f.Other) == 1 && strings.HasPrefix(f.Other[0], ":fail:") && strings.HasPrefix(f.Source, "*@"):
		c.item("forwarder", f.Source, dImport, "rejecting mail to unknown addresses is nPanel's default", entry, 0)
	case len(f.Destinations) == 0:
		c.item("forwarder", f.Source, dSkip, fmt.Sprintf("destination %q not supported (pipes, :fail:, :blackhole:)", strings.Join(f.Other, ", ")), entry, 0)
	case len(f.Other) > 0:
		c.item("forwarder", f.Source, dAdapt, fmt.Sprintf("only the addresses are kept; %q dropped", strings.Join(f.Other, ", ")), entry, 0)
	default:
		c.item("forwarder", f.Source, dImport, "", entry, 0)
	}
}

func (c *collector) database(e *Entry, top, rest string, size uint64) {
	engine := agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB
	if top != "mysql" {
		engine = agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	}
	var name string
	var create bool
	switch {
	case strings.HasSuffix(rest, ".create"):
		name, create = strings.TrimSuffix(rest, ".create"), true
	case strings.HasSuffix(rest, ".sql"):
		name = strings.TrimSuffix(rest, ".sql")
	case strings.HasSuffix(rest, ".tar") && top != "mysql":
		// pg_dump's tar format (what pkgacct writes), or plain SQL under
		// that name: the node tells them apart by their first bytes.
		name = strings.TrimSuffix(rest, ".tar")
	default:
		c.other(top, "not a database dump", e.Raw, size)
		return
	}
	key := "mysql/" + name
	if top != "mysql" {
		key = "psql/" + name // pgsql/ is the older name of the same
	}
	d := c.dbs[key]
	if d == nil {
		d = &dbInfo{engine: engine}
		c.dbs[key] = d
	}
	if create {
		d.create = true
		return
	}
	d.dump, d.entry, d.bytes = true, e.Raw, size
}

// home takes an entry of the home.
func (c *collector) home(e *Entry, rel string) error {
	h := e.Header
	size := uint64(max(h.Size, 0))
	first, rest, _ := strings.Cut(rel, "/")
	switch {
	case e.Path == AccessLogsLink:
		c.item("other", "access-logs", dSkip, "link to the old server's web logs: nPanel keeps its own", e.Raw, 0)
		return nil
	case first == ".ssh":
		// Keys that let people into the old server must not open the new
		// one unasked: the account adds its keys again.
		if h.Typeflag == tar.TypeReg {
			c.item("other", rel, dSkip, "SSH keys of the old server are not carried over", e.Raw, size)
		}
		return nil
	case first == "etc" && h.Typeflag == tar.TypeReg:
		dom, file, ok := strings.Cut(rest, "/")
		if !ok || strings.Contains(file, "/") || validate.CanonicalDomain(dom) != nil {
			return nil // other files of etc/ are cPanel's (ftpquota, ...)
		}
		b, ok2, err := readMeta(e)
		if err != nil || !ok2 {
			return err
		}
		switch file {
		case "passwd":
			c.passwd[dom] = ParseMailPasswd(b)
		case "shadow":
			c.shadow[dom] = ParseMailShadow(b)
		case "quota":
			c.quota[dom] = ParseMailQuota(b)
		}
		return nil
	case first == "mail":
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		parts := strings.Split(rest, "/")
		if len(parts) >= 3 && strings.Contains(parts[0], ".") {
			addr := parts[1] + "@" + parts[0]
			st := c.mail[addr]
			if st == nil {
				st = &mailStat{}
				c.mail[addr] = st
			}
			st.bytes += size
			if isMessage(parts[2:]) {
				st.messages++
			}
		} else if isMessage(parts) {
			c.rootMail.bytes += size
			c.rootMail.messages++
		}
		return nil
	case first == ".autorespond" && h.Typeflag == tar.TypeReg && !strings.Contains(rest, "/"):
		if strings.HasSuffix(rest, ".json") {
			return nil // its schedule; the message is in the file without .json
		}
		b, ok, err := readMeta(e)
		if err != nil || !ok {
			return err
		}
		subj, body := ParseAutoresponder(b)
		c.autoresp[rest] = [2]string{subj, body}
		c.item("autoresponder", rest, dImport, "", e.Raw, size)
		return nil
	}
	if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeLink || h.Typeflag == tar.TypeSymlink {
		c.rep.HomeFiles++
		c.rep.HomeBytes += size
	}
	if path.Base(rel) == ".htaccess" && h.Typeflag == tar.TypeReg {
		b, ok, err := readMeta(e)
		if err != nil {
			return err
		}
		if !ok {
			c.item("files", rel, dAdapt, rel+": too large to check; nginx does not read .htaccess", e.Raw, size)
			return nil
		}
		issues := ParseHtaccess(b)
		for i, is := range issues {
			if i == maxHtaccessItems {
				c.item("files", rel, dAdapt, fmt.Sprintf("%s: %d more lines not applied", rel, len(issues)-i), e.Raw, 0)
				break
			}
			c.item("files", fmt.Sprintf("%s:%d", rel, is.Line), dAdapt, fmt.Sprintf("%s:%d: %s (%s)", rel, is.Line, truncate(is.Text, 200), is.Why), e.Raw, 0)
		}
	}
	return nil
}

// isMessage says whether parts (below a maildir) name a message: a file
// in cur/ or new/, of the inbox or of a .Folder.
func isMessage(parts []string) bool {
	n := len(parts)
	return n >= 2 && (parts[n-2] == "cur" || parts[n-2] == "new") && (n == 2 || (n == 3 && strings.HasPrefix(parts[0], ".")))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// finish turns what the walk collected into the report, sealing secrets.
func (c *collector) finish(info *Info, seal Sealer, now time.Time) (*agentpb.CpanelReport, error) {
	r := c.rep
	r.Username, r.Layout = info.User, info.Layout
	if u := c.cp["USER"]; u != "" && u != info.User {
		c.item("other", "cp/"+u, dAdapt, fmt.Sprintf("cp/ names user %q, the archive %q: %q is used", u, info.User, info.User), "", 0)
	}
	r.ContactEmail, r.Plan = c.cp["CONTACTEMAIL"], c.cp["PLAN"]
	r.MainDomain = c.cp["DNS"]
	if c.main != nil && c.main.MainDomain != "" {
		r.MainDomain = c.main.MainDomain
	}
	if c.mainErr != nil {
		c.item("other", "userdata/main", dSkip, c.mainErr.Error(), "", 0)
	}
	if err := c.domains(r); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(c.zones) {
		r.Zones = append(r.Zones, &agentpb.CpanelZone{Name: name, Text: c.zones[name]})
	}
	if err := c.mailboxes(r, seal); err != nil {
		return nil, err
	}
	for _, d := range sortedKeys(c.forwards) {
		for _, f := range c.forwards[d] {
			if len(f.Destinations) > 0 {
				r.Forwarders = append(r.Forwarders, &agentpb.CpanelForwarder{Source: f.Source, Destinations: f.Destinations})
			}
		}
	}
	for _, a := range sortedKeys(c.autoresp) {
		r.Autoresponders = append(r.Autoresponders, &agentpb.CpanelAutoresponder{Address: a, Subject: c.autoresp[a][0], Body: c.autoresp[a][1]})
	}
	c.databases(r)
	if err := c.dbUsers(r, seal); err != nil {
		return nil, err
	}
	if err := c.certificates(r, seal, now); err != nil {
		return nil, err
	}
	for _, l := range c.cron {
		if l.Env {
			continue
		}
		r.Crons = append(r.Crons, &agentpb.CpanelCron{Schedule: l.Schedule, Command: l.Command})
		note, d := "", dImport
		if info.User != "" && strings.Contains(l.Command, "/home/"+info.User) {
			note, d = fmt.Sprintf("paths under /home/%s follow the account's new home", info.User), dAdapt
		}
		c.item("cron", l.Schedule+" "+truncate(l.Command, 80), d, note, "cron/"+info.User, 0)
	}
	for _, u := range c.ftp {
		if u == info.User {
			c.item("ftp_account", u, dSkip, "the account's own FTP login: nPanel has no FTP yet (use SFTP)", "proftpdpasswd", 0)
			continue
		}
		c.item("ftp_account", u, dSkip, "nPanel has no FTP yet", "proftpdpasswd", 0)
	}
	c.item("files", "homedir", dImport, fmt.Sprintf("%d files, %d bytes", r.HomeFiles, r.HomeBytes), "homedir", r.HomeBytes)
	if c.rootMail.messages > 0 {
		c.item("mailbox", info.User, dSkip, fmt.Sprintf("the cPanel account's own mailbox (%d messages in homedir/mail/cur,new) has no nPanel equivalent", c.rootMail.messages), "homedir/mail", c.rootMail.bytes)
	}
	r.Items = c.items
	var good int
	for _, it := range r.Items {
		if it.Disposition != dSkip {
			good++
		}
	}
	if len(r.Items) > 0 {
		r.FidelityPercent = uint32(good * 100 / len(r.Items))
	}
	return r, nil
}

// relDocroot makes an absolute cPanel document root relative to the home.
func relDocroot(user string, u *UserdataDomain) (string, bool) {
	if u == nil || u.DocumentRoot == "" {
		return "", false
	}
	homes := []string{"/home/" + user}
	if u.Homedir != "" {
		homes = append([]string{path.Clean(u.Homedir)}, homes...)
	}
	for _, h := range homes {
		if rel, ok := strings.CutPrefix(path.Clean(u.DocumentRoot), h+"/"); ok && rel != "" && !strings.HasPrefix(rel, "..") {
			return rel, true
		}
	}
	return "", false
}

func (c *collector) domains(r *agentpb.CpanelReport) error {
	user := r.Username
	add := func(dom, kind, docroot, alias, entry string) {
		d := &agentpb.CpanelDomain{Domain: dom, Kind: kind, Docroot: docroot, AliasOf: alias}
		itemKind := map[string]string{"main": "domain", "addon": "addon_domain", "parked": "parked_domain", "sub": "sub_domain"}[kind]
		if err := validate.CanonicalDomain(dom); err != nil {
			c.item(itemKind, dom, dSkip, "not a valid domain name", entry, 0)
			return
		}
		r.Domains = append(r.Domains, d)
		note, disp := "", dImport
		if kind == "parked" {
			note, disp = "served as an alias of "+alias, dImport
		}
		c.item(itemKind, dom, disp, note, entry, 0)
	}
	docroot := func(serving, fallback string) (string, string) {
		if rel, ok := relDocroot(user, c.userdata[serving]); ok {
			return rel, ""
		}
		return fallback, "document root not found in userdata: " + fallback + " is used"
	}
	if r.MainDomain == "" {
		c.item("domain", "", dSkip, "the archive names no main domain (cp/USER DNS=, userdata/main)", "cp/"+user, 0)
		return nil
	}
	dr, note := docroot(r.MainDomain, "public_html")
	add(r.MainDomain, "main", dr, "", "userdata/main")
	if note != "" {
		c.items[len(c.items)-1].Disposition, c.items[len(c.items)-1].Note = dAdapt, note
	}
	if c.main == nil {
		return nil
	}
	addonSubs := map[string]bool{}
	for _, dom := range sortedKeys(c.main.AddonDomains) {
		sub := c.main.AddonDomains[dom]
		addonSubs[sub] = true
		dr, note := docroot(sub, dom)
		add(dom, "addon", dr, "", "userdata/"+sub)
		if note != "" {
			c.items[len(c.items)-1].Disposition, c.items[len(c.items)-1].Note = dAdapt, note
		}
	}
	for _, dom := range c.main.ParkedDomains {
		add(dom, "parked", "", r.MainDomain, "userdata/main")
	}
	for _, dom := range c.main.SubDomains {
		if addonSubs[dom] {
			continue // serves an add-on domain, which is imported as such
		}
		dr, note := docroot(dom, "public_html/"+strings.SplitN(dom, ".", 2)[0])
		add(dom, "sub", dr, "", "userdata/"+dom)
		if note != "" {
			c.items[len(c.items)-1].Disposition, c.items[len(c.items)-1].Note = dAdapt, note
		}
	}
	return nil
}

func (c *collector) mailboxes(r *agentpb.CpanelReport, seal Sealer) error {
	for _, dom := range sortedKeys(c.passwd) {
		for _, local := range c.passwd[dom] {
			addr := local + "@" + dom
			st := c.mail[addr]
			if st == nil {
				st = &mailStat{}
			}
			entry := "homedir/etc/" + dom + "/shadow"
			if _, _, _, err := validate.MailAddress(addr); err != nil {
				c.item("mailbox", addr, dSkip, "not a valid address", entry, st.bytes)
				continue
			}
			hash, ok := DovecotHash(c.shadow[dom][local])
			if !ok {
				c.item("mailbox", addr, dSkip, "no usable password hash in etc/"+dom+"/shadow", entry, st.bytes)
				continue
			}
			sealed, err := seal([]byte(hash), agentpb.MailPasswordHashSealContext(addr))
			if err != nil {
				return fmt.Errorf("seal the hash of %s: %w", addr, err)
			}
			r.Mailboxes = append(r.Mailboxes, &agentpb.CpanelMailbox{Address: addr, QuotaBytes: c.quota[dom][local], SealedPasswordHash: sealed, Bytes: st.bytes, Messages: st.messages})
			c.item("mailbox", addr, dImport, fmt.Sprintf("%d messages", st.messages), entry, st.bytes)
		}
	}
	// Maildirs without an account in etc/DOMAIN/passwd.
	for _, addr := range sortedKeys(c.mail) {
		_, dom, _ := strings.Cut(addr, "@")
		local, _, _ := strings.Cut(addr, "@")
		if !slices.Contains(c.passwd[dom], local) {
			c.item("mailbox", addr, dSkip, "a maildir without a mail account in etc/"+dom+"/passwd", "homedir/mail/"+dom+"/"+local, c.mail[addr].bytes)
		}
	}
	return nil
}

func (c *collector) databases(r *agentpb.CpanelReport) {
	for _, k := range sortedKeys(c.dbs) {
		d := c.dbs[k]
		_, name, _ := strings.Cut(k, "/")
		if !d.dump {
			c.item("database", name, dSkip, "no dump in the archive (only its .create)", k+".create", 0)
			continue
		}
		// Old cPanel prefixed with the user's first 8 letters: the owner
		// is what precedes the first _, whatever the archive's user.
		owner, _, _ := strings.Cut(name, "_")
		if err := validate.DatabaseName(name, owner); err != nil {
			c.item("database", name, dSkip, "not a valid database name: "+err.Error(), d.entry, d.bytes)
			continue
		}
		if d.engine != agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB {
			if m := c.dbs["mysql/"+name]; m != nil && m.dump {
				// nPanel's database names are one namespace for both engines.
				c.item("database", name+" (PostgreSQL)", dSkip, "PostgreSQL database with the name of a MariaDB database of the archive, which is imported: restore it by hand under another name", d.entry, d.bytes)
				continue
			}
			if !c.pgHeld(name, r.Username) {
				// The import gives a dump's objects to a user of the
				// database, never to the (superuser) admin.
				c.item("database", name, dSkip, "PostgreSQL: no database user of the archive is granted it (psql_grants.sql), and a user of the database must own what its dump makes: create one, grant it the database and import the dump again", d.entry, d.bytes)
				continue
			}
			r.Databases = append(r.Databases, &agentpb.CpanelDatabase{Name: name, Engine: d.engine, Bytes: d.bytes})
			c.item("database", name, dImport, "PostgreSQL: restored by a throw-away role limited to the database, psql restricted; owners and grants of the old server left out, its objects owned by a user granted it", d.entry, d.bytes)
			continue
		}
		r.Databases = append(r.Databases, &agentpb.CpanelDatabase{Name: name, Engine: d.engine, Bytes: d.bytes})
		c.item("database", name, dImport, "restored by a user limited to the database, the client in sandbox mode", d.entry, d.bytes)
	}
}

func (c *collector) dbUsers(r *agentpb.CpanelReport, seal Sealer) error {
	user := r.Username
	for _, g := range c.grants {
		if g.User == user {
			c.item("database_user", g.User, dSkip, "the cPanel account's own MySQL login: nPanel accounts have none", "mysql.sql", 0)
			continue
		}
		if len(g.Hash) != 41 || g.Hash[0] != '*' {
			c.item("database_user", g.User, dSkip, "no mysql_native_password hash (old or other plugin): set a new password", "mysql.sql", 0)
			continue
		}
		to := c.username
		if to == "" {
			to = user
		}
		_, name, _ := validate.CpanelDatabaseName(g.User, user, to)
		sealed, err := seal([]byte(g.Hash), agentpb.DatabasePasswordHashSealContext(name))
		if err != nil {
			return fmt.Errorf("seal the hash of %s: %w", g.User, err)
		}
		u := &agentpb.CpanelDatabaseUser{Name: g.User, Engine: agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB, SealedPasswordHash: sealed}
		for _, db := range sortedKeys(g.Grants) {
			u.Grants = append(u.Grants, &agentpb.CpanelGrant{Database: db, Privileges: g.Grants[db]})
		}
		r.DatabaseUsers = append(r.DatabaseUsers, u)
		note := ""
		if len(g.Hosts) > 1 || (len(g.Hosts) == 1 && g.Hosts[0] != "localhost") {
			note = "hosts " + strings.Join(g.Hosts, ", ") + ": nPanel's own host rules apply"
		}
		c.item("database_user", g.User, dImport, note, "mysql.sql", 0)
	}
	return c.pgDBUsers(r, seal)
}

// pgHeld says whether a PostgreSQL user the import creates is granted
// database name.
func (c *collector) pgHeld(name, cpUser string) bool {
	mysqlUsers := map[string]bool{}
	for _, g := range c.grants {
		mysqlUsers[g.User] = true
	}
	for u, dbs := range c.pgGrants {
		if u != cpUser && !mysqlUsers[u] && slices.Contains(dbs, name) {
			return true
		}
	}
	return false
}

// pgDBUsers reports the PostgreSQL users of psql_users.sql with their
// hashes and the databases psql_grants.sql gives them (all of a
// database's privileges: cPanel knows no finer PostgreSQL grant).
func (c *collector) pgDBUsers(r *agentpb.CpanelReport, seal Sealer) error {
	user := r.Username
	to := c.username
	if to == "" {
		to = user
	}
	mysqlUsers := map[string]bool{}
	for _, g := range c.grants {
		mysqlUsers[g.User] = true
	}
	users := slices.Clone(c.pgUsers)
	for _, u := range sortedKeys(c.pgGrants) {
		if !slices.ContainsFunc(users, func(p PgUser) bool { return p.Name == u }) {
			users = append(users, PgUser{Name: u}) // granted but not listed: cPanel creates it too
		}
	}
	for _, pu := range users {
		const entry = "psql_users.sql"
		switch {
		case pu.Name == user:
			c.item("database_user", pu.Name, dSkip, "the cPanel account's own PostgreSQL role: nPanel accounts have none", entry, 0)
			continue
		case mysqlUsers[pu.Name]:
			c.item("database_user", pu.Name+" (PostgreSQL)", dSkip, "PostgreSQL user with the name of a MariaDB user of the archive, which is imported: nPanel's user names are one namespace", entry, 0)
			continue
		}
		_, name, _ := validate.CpanelDatabaseName(pu.Name, user, to)
		u := &agentpb.CpanelDatabaseUser{Name: pu.Name, Engine: agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL}
		note, disp := "", dImport
		hash, err := db.NormalizePasswordHash(validate.EnginePostgreSQL, pu.Hash)
		switch {
		case pu.Hash == "":
			note, disp = "no password in psql_users.sql: it gets a new one (set it with setDatabaseUserPassword)", dAdapt
		case err != nil:
			note, disp = "no md5 or SCRAM-SHA-256 hash: it gets a new password (set it with setDatabaseUserPassword)", dAdapt
		case strings.HasPrefix(hash, "md5"):
			// nPanel's PostgreSQL authenticates with scram-sha-256, which
			// an md5 hash cannot pass (it is also salted with the old name).
			note, disp = "its md5 hash cannot log in where PostgreSQL asks for SCRAM-SHA-256, as nPanel's does: it gets a new password (set it with setDatabaseUserPassword)", dAdapt
		default:
			sealed, err := seal([]byte(hash), agentpb.DatabasePasswordHashSealContext(name))
			if err != nil {
				return fmt.Errorf("seal the hash of %s: %w", pu.Name, err)
			}
			u.SealedPasswordHash = sealed
		}
		for _, d := range c.pgGrants[pu.Name] {
			u.Grants = append(u.Grants, &agentpb.CpanelGrant{Database: d, Privileges: []string{"ALL"}})
		}
		r.DatabaseUsers = append(r.DatabaseUsers, u)
		c.item("database_user", pu.Name, disp, note, entry, 0)
	}
	return nil
}

// certificates checks each certificate of the archive on the node, as
// installCertificate checks one (validate.CheckInstalledCertificate: the key
// matches the leaf, the leaf covers the domain and is valid now, the chain
// verifies to this node's roots), and seals its key as PKCS#8 DER with
// CertificateKeySealContext(domain): the context installCertificate seals
// with and the node's install action opens, so that the import installs it
// through the API's own record path as it is (the account is made on this
// node). A certificate no browser would take (self-signed, an unknown CA)
// is skipped: the site gets a trusted one from ACME instead.
func (c *collector) certificates(r *agentpb.CpanelReport, seal Sealer, now time.Time) error {
	// The keys in clear go once they are sealed or skipped.
	defer func() {
		for _, ci := range c.certs {
			clear(ci.pem)
			if ci.parts != nil {
				clear(ci.parts.Key)
			}
		}
	}()
	roots, rootsErr := validate.CertificateRoots()
	for _, dom := range sortedKeys(c.certs) {
		ci := c.certs[dom]
		if ci.parts == nil && ci.err == nil {
			ci.parts, ci.err = SplitPEM(ci.pem)
		}
		switch {
		case ci.err != nil:
			c.item("certificate", dom, dSkip, "unreadable PEM: "+ci.err.Error(), ci.entry, 0)
			continue
		case validate.CanonicalDomain(dom) != nil:
			c.item("certificate", dom, dSkip, "not named after a valid domain", ci.entry, 0)
			continue
		case ci.parts.Key == nil:
			c.item("certificate", dom, dSkip, "no private key in the file: nPanel issues a new certificate", ci.entry, 0)
			continue
		case now.After(ci.parts.Leaf.NotAfter):
			c.item("certificate", dom, dSkip, "expired "+ci.parts.Leaf.NotAfter.UTC().Format(time.DateOnly)+": nPanel issues a new certificate", ci.entry, 0)
			continue
		case rootsErr != nil:
			c.item("certificate", dom, dSkip, "the node's trusted roots cannot be read ("+rootsErr.Error()+"): nPanel issues a new certificate", ci.entry, 0)
			continue
		}
		// Untrusted is allowed here only to tell it apart from a refusal:
		// it is reported, not imported.
		inst, err := validate.CheckInstalledCertificate(dom, string(bytes.Join(ci.parts.Certs, nil)), string(ci.parts.Key), "", true, roots, now)
		if err != nil {
			reason := err.Error()
			if ve := (*validate.Error)(nil); errors.As(err, &ve) {
				reason = ve.Reason
			}
			c.item("certificate", dom, dSkip, reason+": nPanel issues a new certificate", ci.entry, 0)
			continue
		}
		if !inst.Trusted {
			clear(inst.KeyPKCS8)
			c.item("certificate", dom, dSkip, "not trusted ("+truncate(inst.VerifyError, 120)+"): ACME issues one", ci.entry, 0)
			continue
		}
		sealed, err := seal(inst.KeyPKCS8, agentpb.CertificateKeySealContext(dom))
		clear(inst.KeyPKCS8)
		if err != nil {
			return fmt.Errorf("seal the key of %s: %w", dom, err)
		}
		r.Certificates = append(r.Certificates, &agentpb.CpanelCertificate{Domain: dom, CertificatePem: inst.ChainPEM, SealedPrivateKey: sealed})
		note := expiryNote(inst.Leaf.NotAfter)
		if len(ci.parts.Other) > 0 {
			note += "; other PEM blocks ignored: " + strings.Join(ci.parts.Other, ", ")
		}
		c.item("certificate", dom, dImport, note, ci.entry, 0)
	}
	return nil
}

// expiryNote is what the report says of an imported certificate (the
// import says what happens at expiry).
func expiryNote(notAfter time.Time) string {
	return "installed as it is; valid until " + notAfter.UTC().Format(time.DateOnly)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// AnalyzeArchive reads the archive r (size bytes) and reports what it holds and
// what an import into the account username ("": the cPanel user's) would do
// with each item. Secrets are only in the report sealed with seal.
func AnalyzeArchive(r io.Reader, size int64, lim Limits, seal Sealer, username string) (*agentpb.CpanelReport, error) {
	c := newCollector()
	c.username = username
	info, err := Walk(r, size, lim, c.visit)
	if err != nil {
		return nil, err
	}
	rep, err := c.finish(info, seal, time.Now())
	if err != nil {
		return nil, err
	}
	rep.ArchiveBytes = uint64(size)
	return rep, nil
}
