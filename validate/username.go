package validate

import (
	"strings"
	"unicode/utf8"
)

// UsernameMaxLen is the longest hosting account name. 32 is what Linux
// tooling carries everywhere (utmp's UT_NAMESIZE, useradd, ps and ls
// columns). It also budgets the database identifiers derived from it: a
// database is named "<user>_<suffix>" and MariaDB caps database names at 64,
// so a 32-byte account keeps 64-32-1 = 31 bytes of suffix. Database users are
// named the same way and MariaDB allows 80 for them, so the database name is
// the tighter bound. The database validators must refuse a suffix that does
// not fit rather than truncate it, or two names could map to one identifier.
const UsernameMaxLen = 32

// TestUserPrefix starts the name of every account that integration tests
// create. Username refuses it for real accounts so that test cleanup can
// delete any "npt*" account on a shared machine without ever touching a
// customer's.
const TestUserPrefix = "npt"

// Username accepts a hosting account's Linux user name:
// ^[a-z][a-z0-9]{0,31}$, and not a reserved name or prefix.
//
// The name lands unquoted in useradd's argv, in /home/<user> and PHP-FPM pool
// paths, in nginx and systemd unit files, and as a MariaDB and PostgreSQL
// identifier, so the alphabet is the intersection of what all of them take
// without quoting. That rules out '.', '@' and '$' (useradd allows them),
// and '-', which SQL identifiers need backquoted.
//
// '_' is refused although Linux allows it: it separates the account from its
// database names ("alice_shop"), and grants are issued on the pattern
// "alice\_%". If "alice_b" could be an account, alice's grant would cover
// every database of alice_b and the two accounts could create each other's
// databases. With no '_' in account names the owner of any database is
// exactly the text before its first '_'.
func Username(s string) error {
	const field = "username"
	if s == "" {
		return fail(field, "must not be empty")
	}
	if len(s) > UsernameMaxLen {
		return fail(field, "%s is %d bytes long; at most %d", quote(s), len(s), UsernameMaxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9':
			if i == 0 {
				return fail(field, "%s must start with a letter a-z", quote(s))
			}
		case 'A' <= c && c <= 'Z':
			return fail(field, "%s has uppercase letters; user names are lowercase", quote(s))
		case c == '_':
			return fail(field, "%s contains \"_\", which separates an account from its database names (alice_shop); use letters and digits only", quote(s))
		default:
			return fail(field, "%s contains %s; use lowercase letters a-z and digits 0-9", quote(s), describeChar(s[i:]))
		}
	}
	if why, ok := reservedUsernames[s]; ok {
		return fail(field, "%s is reserved for %s", quote(s), why)
	}
	for _, p := range reservedUsernamePrefixes {
		if strings.HasPrefix(s, p.prefix) {
			return fail(field, "%s starts with %q, which is reserved for %s", quote(s), p.prefix, p.why)
		}
	}
	return nil
}

// describeChar names the first character of s for an error message, as a
// quoted rune, or as a byte when s does not start with valid UTF-8.
func describeChar(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return "byte " + quoteByte(s[0])
	}
	return quoteRune(r)
}

const (
	forSystem  = "the system"
	forService = "a service or role (mail, support and logs would be ambiguous)"
	forPanel   = "nPanel"
)

// reservedUsernamePrefixes are refused as prefixes, not just as whole names:
// their owners create accounts under them at run time.
var reservedUsernamePrefixes = []struct{ prefix, why string }{
	{TestUserPrefix, "nPanel's integration tests"},
	{"npanel", "nPanel's own service accounts"},
	{"systemd", "systemd's static and dynamic users"},
	// "rootx" or "root2" reads as the superuser in ps, top and log lines.
	{"root", "the superuser"},
}

// reservedUsernames holds the user and group names in use on AlmaLinux 9
// (first list) and Debian 12 (second), the daemons nPanel runs or sits beside
// (third), role words that must not belong to a customer, and other panels'
// names. Group names count because useradd also creates a same-named private
// group: a name taken as a group ("sudo", "wheel", "docker", "shadow") fails
// the same way, and a retry with -g would make the customer its member.
//
// Entries with '-', '_' or uppercase can never pass the character check; they
// are listed so that relaxing the alphabet later cannot quietly admit them.
var reservedUsernames = map[string]string{}

func init() {
	// A slice, not a map, so that a name listed under two headings ("adm",
	// "daemon") always gets the first heading's reason.
	for _, group := range []struct{ why, names string }{
		{forSystem, `
			root bin daemon adm lp sync shutdown halt mail operator games ftp nobody
			nfsnobody dbus polkitd sssd chrony sshd tss rpc rpcuser libstoragemgmt unbound
			setroubleshoot cockpit-ws cockpit-wsinstance clevis pesign geoclue rtkit pipewire
			flatpak gdm gnome-initial-setup dnsmasq tcpdump avahi colord saslauth abrt usbmuxd
			qemu radvd ntp nscd oprofile pcp rngd sanlock systemd-coredump systemd-oom
			systemd-network systemd-resolve systemd-timesync
			wheel sys mem kmem tty disk floppy cdrom tape dialout video audio input kvm render
			utmp utempter lock users printadmin ssh_keys stapusr stapsys stapdev cgred`},
		{forSystem, `
			uucp man news proxy list irc gnats www-data backup nogroup _apt messagebus
			_chrony uuidd avahi-autoipd dip plugdev netdev staff src shadow sudo sasl
			voice fax crontab ssl-cert systemd-journal sgx lxd docker containerd podman`},
		{forSystem, `
			nginx apache apache2 httpd lighttpd caddy litespeed lsadm tomcat varnish haproxy
			squid php phpfpm fpm nodejs node redis memcache memcached mysql mariadb postgres
			postgresql mongodb mongod elasticsearch named bind pdns pdnsrecursor powerdns knot
			nsd dovecot dovenull exim exim4 Debian-exim postfix postdrop sendmail smmsp
			mailnull vmail mailman cyrus opendkim opendmarc spamd debian-spamd amavis clamav
			clamupdate clamscan clamilt rspamd _rspamd fetchmail certbot letsencrypt acme etcd
			prometheus grafana zabbix nagios icinga munin fail2ban ldap openldap slapd kerberos`},
		{forService, `
			admin administrator administrators sysadmin superuser su sudoer toor r00t
			support helpdesk help webmaster hostmaster postmaster abuse noc security secure
			info contact sales billing office marketing team owner
			test testing demo guest anonymous user username default system server host
			hostname localhost localdomain domain example nil null none undefined void
			www web webmail email smtp imap pop pop3 mx ns dns sftp ssh git svn cvs hg
			backups db database sql phpmyadmin pma roundcube autoconfig autodiscover
			api cgi cron public private shared tmp temp home var etc usr opt proc`},
		{forPanel, `
			npanel cpanel whm plesk directadmin ispconfig webmin virtualmin cyberpanel
			cloudpanel hestia vesta froxlor panel controlpanel`},
	} {
		for _, n := range strings.Fields(group.names) {
			if _, dup := reservedUsernames[n]; !dup {
				reservedUsernames[n] = group.why
			}
		}
	}
}

// TestUsername accepts exactly the names Username refuses for starting with
// TestUserPrefix and nothing else: "npt" followed by lowercase letters and
// digits, within UsernameMaxLen. Servers and agents started for integration
// tests (and only those) accept them, so tests can run the real account path
// while their cleanup may still delete any "npt*" user without risk to a
// customer's.
func TestUsername(s string) error {
	rest, ok := strings.CutPrefix(s, TestUserPrefix)
	if !ok || rest == "" || len(s) > UsernameMaxLen {
		return fail("username", "%s is not a test user name (%s followed by letters and digits)", quote(s), TestUserPrefix)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fail("username", "%s is not a test user name (%s followed by letters and digits)", quote(s), TestUserPrefix)
		}
	}
	return nil
}

// UsernameOrTest is Username, or with allowTest also TestUsername: the
// agent's actions accept the test suites' names only when told to.
func UsernameOrTest(s string, allowTest bool) error {
	err := Username(s)
	if err != nil && allowTest && TestUsername(s) == nil {
		return nil
	}
	return err
}
