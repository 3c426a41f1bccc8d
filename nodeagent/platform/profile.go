package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Profile names.
const (
	NameAlma9    = "alma9"
	NameDebian12 = "debian12"
)

// Profile says where things live on one distro: the fixed binaries actions
// exec, and the directories they manage. Actions get every path from here and
// never from $PATH or from a task, so a task can name an account, a domain or
// a version but never a file.
//
// Prefix moves every directory the agent owns (homes, backups, and later
// service configuration, state and logs) under one directory, for tests and
// `npanel dev`. It does not move the user database: useradd, usermod and
// userdel always edit the host's /etc/passwd, /etc/shadow and /etc/group.
// With a prefix, accounts are therefore still real users of the host, only
// their homes live under the prefix; tests keep the host clean by creating
// only users named with validate.TestUserPrefix and removing them again.
type Profile struct {
	// Name is NameAlma9 or NameDebian12.
	Name string
	// Prefix is "" in production, else an absolute directory.
	Prefix string

	// Addresses of the node's public services. Production nodes use the
	// defaults; tests and `npanel dev` move each agent's daemons to its own
	// loopback ports. Set by the agent's flags after the profile is built.
	//
	// HTTPListen is where nginx serves sites (ip:port or :port).
	HTTPListen string
	// HTTPSListen is where nginx serves sites over TLS (ip:port or :port).
	HTTPSListen string
	// DNSListen is where PowerDNS answers queries (ip:port).
	DNSListen string
	// DNSAPIListen is PowerDNS's HTTP API (always loopback).
	DNSAPIListen string
	// Mail listeners (ip:port or :port): Exim's SMTP (MX), submission
	// (587, STARTTLS) and SMTPS (465, implicit TLS); Dovecot's IMAP, IMAPS,
	// POP3 and POP3S.
	SMTPListen       string
	SubmissionListen string
	SMTPSListen      string
	IMAPListen       string
	IMAPSListen      string
	POP3Listen       string
	POP3SListen      string
	// MailRelay, when set (host:port), is the smarthost Exim hands every
	// message for a remote domain to instead of looking up its MX.
	MailRelay string
	// MailAntivirus runs ClamAV (clamd, over 1 GB of memory with the full
	// signature set) where it is installed and has signatures; off, mail
	// is not scanned for malware.
	MailAntivirus bool
	// SFTPListen is where a backup node's own sshd serves SFTP (ip:port or
	// :port, default DefaultSFTPListen).
	SFTPListen string
	// BackupUser is the Linux user source nodes log in as on a backup node
	// (default DefaultBackupUser; tests use a user of their own).
	BackupUser string

	// Useradd, Usermod and Userdel edit the user database.
	Useradd string
	Usermod string
	Userdel string
	// Setquota sets disk quotas. It may be missing (quota tools are not
	// installed everywhere); quotas are then reported as not applied.
	Setquota string
	// Nologin is the shell of accounts that have no interactive login.
	Nologin string

	// Passwd and Shadow are the user database the account actions read. They
	// are read directly rather than through NSS so that lock and expiry
	// state is seen exactly as usermod wrote it. Never under Prefix.
	Passwd string
	Shadow string

	// HomeBase holds one home directory per account: HomeBase/<username>.
	HomeBase string
	// BackupDir is the node's backup area; a deleted account's home is
	// archived here before anything is removed.
	BackupDir string
	// MinUID is the lowest UID of a user nPanel may manage. Users below it
	// belong to the system and are never touched, whatever their GECOS says.
	MinUID uint32
}

func base(name, prefix string) *Profile {
	return &Profile{
		Name:      name,
		Prefix:    prefix,
		Useradd:   "/usr/sbin/useradd",
		Usermod:   "/usr/sbin/usermod",
		Userdel:   "/usr/sbin/userdel",
		Setquota:  "/usr/sbin/setquota",
		Passwd:    "/etc/passwd",
		Shadow:    "/etc/shadow",
		HomeBase:  filepath.Join("/", prefix, "home"),
		BackupDir: filepath.Join("/", prefix, "var/lib/npanel/backups"),
		MinUID:    1000,

		HTTPListen:   ":80",
		HTTPSListen:  ":443",
		DNSListen:    "0.0.0.0:53",
		DNSAPIListen: "127.0.0.1:8081",

		SMTPListen:       ":25",
		SubmissionListen: ":587",
		SMTPSListen:      ":465",
		IMAPListen:       ":143",
		IMAPSListen:      ":993",
		POP3Listen:       ":110",
		POP3SListen:      ":995",
		MailAntivirus:    true,

		SFTPListen: DefaultSFTPListen,
		BackupUser: DefaultBackupUser,
	}
}

// Alma9 is the production profile: AlmaLinux 9 (and other RHEL 9 rebuilds).
// prefix is trusted; use ProfileFor for a prefix from the command line.
func Alma9(prefix string) *Profile {
	p := base(NameAlma9, prefix)
	p.Nologin = "/sbin/nologin"
	return p
}

// Debian12 is the profile the tests and `npanel dev` run on.
// prefix is trusted; use ProfileFor for a prefix from the command line.
func Debian12(prefix string) *Profile {
	p := base(NameDebian12, prefix)
	p.Nologin = "/usr/sbin/nologin"
	return p
}

// ProfileFor returns the profile called name (NameAlma9 or NameDebian12)
// with its directories under prefix ("" for none).
func ProfileFor(name, prefix string) (*Profile, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	switch name {
	case NameAlma9:
		return Alma9(prefix), nil
	case NameDebian12:
		return Debian12(prefix), nil
	default:
		return nil, fmt.Errorf("unknown platform %q (want %s or %s)", name, NameAlma9, NameDebian12)
	}
}

// DetectProfile picks the profile of this host from os-release(5).
func DetectProfile(prefix string) (*Profile, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	vals, err := readOSRelease()
	if err != nil {
		return nil, fmt.Errorf("detect platform: %w; pass --platform %s or --platform %s", err, NameAlma9, NameDebian12)
	}
	name, err := profileName(vals)
	if err != nil {
		return nil, err
	}
	return ProfileFor(name, prefix)
}

// profileName maps os-release fields to a profile name. Only the major
// version counts: a point release changes no path a profile holds.
func profileName(vals map[string]string) (string, error) {
	id := vals["ID"]
	like := strings.Fields(vals["ID_LIKE"])
	major, _, _ := strings.Cut(vals["VERSION_ID"], ".")
	rhelLike := id == "almalinux" || id == "rhel" || id == "rocky" || id == "centos"
	for _, l := range like {
		rhelLike = rhelLike || l == "rhel"
	}
	switch {
	case rhelLike && major == "9":
		return NameAlma9, nil
	case id == "debian" && major == "12":
		return NameDebian12, nil
	}
	desc := vals["PRETTY_NAME"]
	if desc == "" {
		desc = "this host"
	}
	return "", fmt.Errorf("no platform profile for %s (ID=%q ID_LIKE=%q VERSION_ID=%q); supported are AlmaLinux 9 and Debian 12, or force one with --platform %s|%s",
		desc, id, vals["ID_LIKE"], vals["VERSION_ID"], NameAlma9, NameDebian12)
}

func readOSRelease() (map[string]string, error) {
	var errs []error
	for _, p := range osReleasePaths {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		return parseOSRelease(data), nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no os-release file in %v", osReleasePaths)
	}
	return nil, errors.Join(errs...)
}

// checkPrefix refuses a prefix that is relative or unclean (the agent runs
// from an unknown working directory, and a "/a/../b" would defeat reading
// paths at a glance) or that contains characters the user database cannot
// hold: home directories under the prefix are written into /etc/passwd,
// whose fields are separated by ':' and lines by '\n'.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !filepath.IsAbs(prefix) || filepath.Clean(prefix) != prefix {
		return fmt.Errorf("prefix %q must be an absolute, clean path", prefix)
	}
	for _, r := range prefix {
		if r == ':' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("prefix %q contains ':' or a control character, which /etc/passwd cannot hold", prefix)
		}
	}
	return nil
}
