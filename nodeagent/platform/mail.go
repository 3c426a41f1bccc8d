package platform

import "path/filepath"

// MailPaths says where the mail daemons (Exim, Dovecot, spamd, clamd) and
// their tools are on one distro, and where the mail module keeps the files
// it writes. Binaries are the distribution's and never move; everything the
// agent or its daemons write moves under the profile's Prefix when one is
// set (supervised mode: `exim -C`, `dovecot -c`, spool, logs and sockets
// under the prefix, the machine's own mail services untouched).
type MailPaths struct {
	// Supervised is true when the agent runs the daemons itself under its
	// prefix.
	Supervised bool

	Exim     string // exim4 (Debian) or exim (EPEL)
	Dovecot  string
	Doveconf string
	Doveadm  string
	Sievec   string // Pigeonhole's compiler for global scripts
	// DovecotLDA delivers one message from stdin (quota warnings).
	DovecotLDA string
	Spamd      string
	Spamc      string
	SaLearn    string
	Clamd      string
	Clamdscan  string
	// RoundcubeDir is Roundcube's document root (roundcube-core): on
	// Debian its public_html, whose index.php sets INSTALL_PATH to the
	// directory above it.
	RoundcubeDir string
	// RoundcubeCodeDirs are the real (symlink-resolved) directories
	// Roundcube's PHP reads its code and libraries from: with the config
	// and state dirs they are the webmail pool's open_basedir.
	RoundcubeCodeDirs []string
	// RoundcubeDefaults is the distribution's directory holding
	// Roundcube's defaults.inc.php and mimetypes.php; the agent copies
	// both into WebmailConfigDir and never changes the distribution's
	// configuration.
	RoundcubeDefaults string
	// RoundcubeSQL is Roundcube's schema for a new SQLite database.
	RoundcubeSQL string
	// Sqlite3 is the sqlite3 shell, which creates that database.
	Sqlite3 string
	// WebmailUser runs Roundcube's PHP-FPM pool: a system user of its own,
	// no account's and not the web server's.
	WebmailUser string
	// WebmailConfigDir is the configuration directory the webmail pool
	// points Roundcube at (ROUNDCUBE_CONFIG_DIR); WebmailStateDir holds
	// its SQLite database, temporary files and logs.
	WebmailConfigDir string
	WebmailStateDir  string

	// EximUser and EximGroup are the user Exim runs as (it gives up root
	// when started with -C on a file not in TRUSTED_CONFIG_LIST, so every
	// delivery runs as this user: local deliveries go to Dovecot over
	// LMTP and need no other privilege).
	EximUser  string
	EximGroup string
	// DovecotUser is the user Dovecot's auth process runs as; it reads the
	// passwd-files.
	DovecotUser string

	// EximConfig and DovecotConfig are the main configurations the agent
	// renders.
	EximConfig    string
	DovecotConfig string
	// DomainsDir holds one directory per served mail domain with Exim's
	// lookup files (mailboxes, aliases, settings); Exim finds the domain
	// with dsearch, so its file names never come from tainted input.
	DomainsDir string
	// UsersDir holds Dovecot's passwd-files, UsersDir/DOMAIN/passwd.
	UsersDir string
	// DKIMDir holds the DKIM private keys, DOMAIN.SELECTOR.key, and the
	// signing table Exim reads.
	DKIMDir string
	// TLSDir holds the node's self-signed mail certificate.
	TLSDir string
	// SieveDir holds global Sieve scripts (the Junk filter).
	SieveDir string

	SpoolDir        string // Exim's spool
	LogDir          string // Exim's and Dovecot's logs (supervised)
	EximLogPat      string // Exim's log_file_path (%s: main, reject, panic)
	EximMainLog     string
	DovecotLog      string
	RunDir          string // Exim's pid file
	DovecotBaseDir  string
	DovecotStateDir string
	// DovecotInstance names the Dovecot instance (doveadm -i).
	DovecotInstance string

	// SpamdSocket is spamd's unix socket (Exim's group may open it);
	// SpamdDir holds its pid file, log and helper home (supervised).
	SpamdSocket string
	SpamdDir    string
	// SpamdBayesDir holds one directory per account (spamd's
	// --virtual-config-dir, sa-learn's --dbpath): each account's Bayes
	// database, so one account's training never scores another's mail.
	SpamdBayesDir string
	// SpamdUser runs spamd's children.
	SpamdUser  string
	SpamdGroup string

	// ClamdConfig is clamd's configuration (written by the agent in
	// supervised mode); ClamdSocket its local socket, in a directory only
	// Exim's group (and root) may enter; ClamdDBDir its signatures.
	ClamdConfig string
	ClamdSocket string
	ClamdDBDir  string
	ClamdUser   string

	EximUnit    string
	DovecotUnit string
	SpamdUnit   string
	ClamdUnit   string
}

// Mail returns the mail paths of p.
func (p *Profile) Mail() MailPaths {
	under := func(s string) string { return filepath.Join("/", p.Prefix, s) }
	m := MailPaths{
		Supervised:      p.Prefix != "",
		Dovecot:         "/usr/sbin/dovecot",
		Doveconf:        "/usr/bin/doveconf",
		Doveadm:         "/usr/bin/doveadm",
		Sievec:          "/usr/bin/sievec",
		Spamd:           "/usr/sbin/spamd",
		Spamc:           "/usr/bin/spamc",
		SaLearn:         "/usr/bin/sa-learn",
		Clamd:           "/usr/sbin/clamd",
		Clamdscan:       "/usr/bin/clamdscan",
		DovecotUser:     "dovecot",
		DovecotUnit:     "dovecot.service",
		DovecotInstance: "dovecot",
	}
	switch p.Name {
	case NameAlma9:
		// EPEL's exim and the distro's dovecot, spamassassin and clamd.
		m.Exim = "/usr/sbin/exim"
		m.DovecotLDA = "/usr/libexec/dovecot/dovecot-lda"
		m.EximUser, m.EximGroup = "exim", "exim"
		m.EximConfig = "/etc/exim/exim.conf"
		m.EximUnit = "exim.service"
		m.SpamdUnit = "spamassassin.service"
		m.ClamdUnit = "clamd@scan.service"
		m.RoundcubeDir = "/usr/share/roundcubemail/public_html"
		m.RoundcubeCodeDirs = []string{"/usr/share/roundcubemail/", "/usr/share/php/", "/etc/roundcubemail/"}
		m.RoundcubeDefaults = "/usr/share/roundcubemail/config"
		m.RoundcubeSQL = "/usr/share/roundcubemail/SQL/sqlite.initial.sql"
		m.SpoolDir = "/var/spool/exim"
		m.LogDir = "/var/log/exim"
		m.EximLogPat = "/var/log/exim/%s.log"
		m.EximMainLog = "/var/log/exim/main.log"
	default:
		m.Exim = "/usr/sbin/exim4"
		m.DovecotLDA = "/usr/lib/dovecot/dovecot-lda"
		m.EximUser, m.EximGroup = "Debian-exim", "Debian-exim"
		m.EximConfig = "/etc/exim4/exim4.conf"
		m.EximUnit = "exim4.service"
		m.SpamdUnit = "spamd.service"
		m.ClamdUnit = "clamav-daemon.service"
		m.RoundcubeDir = "/var/lib/roundcube/public_html"
		// Skins and plugins link into the distribution's JavaScript packages.
		m.RoundcubeCodeDirs = []string{"/var/lib/roundcube/", "/usr/share/roundcube/", "/usr/share/php/", "/etc/roundcube/", "/usr/share/javascript/", "/usr/share/nodejs/"}
		m.RoundcubeDefaults = "/etc/roundcube"
		m.RoundcubeSQL = "/usr/share/roundcube/SQL/sqlite.initial.sql"
		m.SpoolDir = "/var/spool/exim4"
		m.LogDir = "/var/log/exim4"
		m.EximLogPat = "/var/log/exim4/%slog"
		m.EximMainLog = "/var/log/exim4/mainlog"
	}
	m.DovecotConfig = "/etc/dovecot/dovecot.conf"
	m.DovecotLog = "/var/log/dovecot.log"
	m.DovecotBaseDir = "/run/dovecot"
	m.DovecotStateDir = "/var/lib/dovecot"
	m.RunDir = "/run/exim"
	state := "/var/lib/npanel/mail"
	m.Sqlite3 = "/usr/bin/sqlite3"
	m.WebmailUser = "npanel-webmail"
	m.WebmailConfigDir = "/etc/npanel/webmail"
	if p.Prefix != "" {
		m.EximConfig = under("etc/mail/exim.conf")
		m.DovecotConfig = under("etc/mail/dovecot.conf")
		m.SpoolDir = under("var/spool/exim")
		m.LogDir = under("var/log/mail")
		// Exim's processes write their logs as Exim's user: under the
		// prefix its logs live in its own spool (Exim's default place),
		// since the web module keeps PREFIX/var/log closed to others.
		m.EximLogPat = under("var/spool/exim/log/%slog")
		m.EximMainLog = under("var/spool/exim/log/mainlog")
		m.DovecotLog = under("var/log/mail/dovecot.log")
		m.DovecotBaseDir = under("run/dovecot")
		m.DovecotStateDir = under("var/lib/dovecot")
		m.RunDir = under("run/exim")
		// A name of its own per prefix: several dev agents share a host.
		m.DovecotInstance = "npanel-" + filepath.Base(p.Prefix)
		state = under("var/lib/npanel/mail")
		m.WebmailConfigDir = under("etc/mail/webmail")
	}
	m.SpamdUser, m.SpamdGroup = "nobody", "nogroup"
	if p.Name == NameAlma9 {
		m.SpamdGroup = "nobody"
	}
	m.SpamdDir = "/run/spamd"
	if p.Prefix != "" {
		m.SpamdDir = under("run/spamd")
	}
	m.SpamdSocket = filepath.Join(m.SpamdDir, "spamd.sock")
	m.ClamdUser = "clamav"
	m.ClamdConfig = "/etc/clamav/clamd.conf"
	m.ClamdSocket = "/run/clamav/clamd.ctl"
	m.ClamdDBDir = "/var/lib/clamav"
	if p.Name == NameAlma9 {
		m.ClamdUser = "clamscan"
		m.ClamdConfig = "/etc/clamd.d/scan.conf"
		m.ClamdSocket = "/run/clamd.scan/clamd.sock"
	}
	if p.Prefix != "" {
		m.ClamdConfig = under("etc/mail/clamd.conf")
		m.ClamdSocket = under("run/clamd/clamd.sock")
		m.ClamdDBDir = under("var/lib/clamav")
	}
	m.DomainsDir = filepath.Join(state, "domains")
	m.UsersDir = filepath.Join(state, "users")
	m.DKIMDir = filepath.Join(state, "dkim")
	m.TLSDir = filepath.Join(state, "tls")
	m.SieveDir = filepath.Join(state, "sieve")
	m.WebmailStateDir = filepath.Join(state, "webmail")
	m.SpamdBayesDir = filepath.Join(state, "bayes")
	return m
}
