package platform

import "path/filepath"

// DNSPaths says where PowerDNS and its files are on a node.
type DNSPaths struct {
	// Server is pdns_server and Util pdnsutil (fixed binaries, never moved
	// by the prefix).
	Server string
	Util   string
	// Sqlite3 is the sqlite3 shell that creates the gsqlite3 database from
	// Schema in supervised mode.
	Sqlite3 string
	Schema  string
	// ConfigDir holds pdns.conf; IncludeDir the drop-ins it includes, where
	// production nodes get the agent's API settings.
	ConfigDir  string
	IncludeDir string
	// Database is the gsqlite3 database (supervised mode).
	Database string
	// SocketDir holds pdns_server's control socket.
	SocketDir string
	// Unit is the systemd unit on production nodes.
	Unit string
}

// DNS returns the PowerDNS paths of the profile. With a prefix, config,
// database and socket live under it.
//
// The Alma 9 schema path is the one EPEL's pdns-backend-sqlite package
// installs its documentation under; it is used only in supervised mode,
// which runs on Debian 12 (tests, `npanel dev`).
func (p *Profile) DNS() DNSPaths {
	under := func(path string) string { return filepath.Join("/", p.Prefix, path) }
	d := DNSPaths{
		Server:  "/usr/sbin/pdns_server",
		Util:    "/usr/bin/pdnsutil",
		Sqlite3: "/usr/bin/sqlite3",
		Unit:    "pdns.service",
	}
	switch p.Name {
	case NameAlma9:
		d.Schema = "/usr/share/doc/pdns-backend-sqlite/schema.sqlite3.sql"
		d.ConfigDir = under("/etc/pdns")
		d.Database = under("/var/lib/pdns/pdns.sqlite3")
	default:
		d.Schema = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"
		d.ConfigDir = under("/etc/powerdns")
		d.Database = under("/var/lib/powerdns/pdns.sqlite3")
	}
	d.IncludeDir = filepath.Join(d.ConfigDir, "pdns.d")
	d.SocketDir = under("/run/pdns")
	return d
}
