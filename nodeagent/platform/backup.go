package platform

import "path/filepath"

// DefaultSFTPListen is where a backup node's own sshd listens by default:
// not 22, which stays the system sshd's (the operators' logins).
const DefaultSFTPListen = ":2222"

// DefaultBackupUser is the Linux user other nodes log in as to store their
// restic repositories on a backup node.
const DefaultBackupUser = "npanel-backup"

// BackupNodePaths says where a backup node's own sshd and the repositories
// it serves over SFTP live. The sshd is the distribution's binary with a
// configuration of the agent's; the system's /etc/ssh is never touched.
type BackupNodePaths struct {
	// Sshd is OpenSSH's server (openssh-server on both distros).
	Sshd string
	// ConfigDir holds Config and AuthorizedKeys. sshd's StrictModes and
	// the agent's own checks require it, and every directory above it, to
	// be root's and writable by nobody else.
	ConfigDir      string
	Config         string
	AuthorizedKeys string
	// Area is the ChrootDirectory: one directory per source node inside,
	// <Area>/<node>, owned by User. sshd requires Area and every directory
	// above it to be root's and writable by nobody else.
	Area string
	// PidFile is the sshd's pid file.
	PidFile string
	// PrivsepDir is the empty directory OpenSSH's unprivileged children
	// chroot into. Its path is compiled into the binary, so it is the
	// host's even under a prefix.
	PrivsepDir string
	// HostKeyFile names the sshd's host key in the agent's data dir.
	HostKeyFile string
	// User is the Linux user the source nodes log in as.
	User string
	// Unit is the systemd unit that runs the sshd on production nodes;
	// the agent writes it to UnitFile.
	Unit     string
	UnitFile string
}

// BackupNode returns the backup node's paths of p.
func (p *Profile) BackupNode() BackupNodePaths {
	under := func(s string) string { return filepath.Join("/", p.Prefix, s) }
	b := BackupNodePaths{
		Sshd:        "/usr/sbin/sshd",
		ConfigDir:   under("etc/npanel/backup"),
		Area:        under("var/lib/npanel/backup-node"),
		PidFile:     under("run/npanel/backup-sftpd.pid"),
		PrivsepDir:  "/run/sshd",
		HostKeyFile: "backup-sftpd-host-ed25519-key",
		User:        p.BackupUser,
		Unit:        "npanel-backup-sftpd.service",
		UnitFile:    "/etc/systemd/system/npanel-backup-sftpd.service",
	}
	if p.Name == NameAlma9 {
		// RHEL's OpenSSH is built with /usr/share/empty.sshd.
		b.PrivsepDir = "/usr/share/empty.sshd"
	}
	if b.User == "" {
		b.User = DefaultBackupUser
	}
	b.Config = filepath.Join(b.ConfigDir, "sshd_config")
	b.AuthorizedKeys = filepath.Join(b.ConfigDir, "authorized_keys")
	return b
}
