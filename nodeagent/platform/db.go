package platform

import (
	"path/filepath"
	"strconv"
)

// DBPaths says where the database servers' binaries, data, sockets and the
// agent's admin credentials are on one node. Binaries are the
// distribution's; everything the agent or its daemons write moves under
// Prefix when one is set.
type DBPaths struct {
	// MariaDB server and tools.
	Mariadbd       string
	MariadbInstall string // mariadb-install-db
	MariadbDump    string
	MariadbClient  string // the mariadb command-line client
	MariaDBConfig  string // mariadbd's --defaults-file (written by the agent in supervised mode)
	MariaDBDataDir string
	MariaDBSocket  string
	MariaDBRunDir  string // socket and pid file
	MariaDBPIDFile string
	MariaDBTmpDir  string
	MariaDBUnit    string
	MariaDBOSUser  string // the OS user mariadbd drops to
	// MariaDBAdminCnf holds the admin credentials as a MariaDB option file
	// ([client] user, password; 0600), provisioned by Ansible on production
	// nodes. Empty in supervised mode: the agent then generates them into
	// its DataDir.
	MariaDBAdminCnf string

	// PostgreSQL server and tools. The binaries are absent where
	// PostgreSQL is not installed; the db module then offers no
	// PostgreSQL.
	PgBinDir    string
	Postgres    string
	Initdb      string
	PgCtl       string
	PgDump      string
	Psql        string
	PgDataDir   string
	PgSocketDir string // unix socket directory (.s.PGSQL.5432 inside)
	PgPort      int
	PgUnit      string
	PgOSUser    string // the OS user postgres runs as (initdb refuses root)
	// PgAdminPass holds the admin credentials as a pgpass(5) line, 0600,
	// from Ansible; empty in supervised mode, like MariaDBAdminCnf.
	PgAdminPass string
	PgAdminUser string // the superuser role the agent logs in as
	PgSetpriv   string // runs postgres as PgOSUser under a root supervisor

	// MariaDBAdminUser is the account the agent logs in as.
	MariaDBAdminUser string
}

// DB returns the database paths of p.
func (p *Profile) DB() DBPaths {
	under := func(s string) string { return filepath.Join("/", p.Prefix, s) }
	d := DBPaths{
		Mariadbd:         "/usr/sbin/mariadbd",
		MariadbInstall:   "/usr/bin/mariadb-install-db",
		MariadbDump:      "/usr/bin/mariadb-dump",
		MariadbClient:    "/usr/bin/mariadb",
		MariaDBUnit:      "mariadb.service",
		MariaDBOSUser:    "mysql",
		MariaDBAdminUser: "npanel",
		PgPort:           5432,
		PgUnit:           "postgresql.service",
		PgOSUser:         "postgres",
		PgAdminUser:      "npanel",
		PgSetpriv:        "/usr/bin/setpriv",
	}
	switch p.Name {
	case NameAlma9:
		// postgresql-server puts the binaries in /usr/bin and the cluster
		// in /var/lib/pgsql/data; mariadb-server its config in /etc/my.cnf.
		d.PgBinDir = "/usr/bin"
		d.PgDataDir = under("var/lib/pgsql/data")
		d.MariaDBConfig = "/etc/my.cnf"
		d.MariaDBRunDir = "/var/lib/mysql"
		d.MariaDBSocket = "/var/lib/mysql/mysql.sock"
		d.MariaDBPIDFile = "/run/mariadb/mariadb.pid"
	default:
		d.PgBinDir = "/usr/lib/postgresql/15/bin"
		d.PgDataDir = under("var/lib/postgresql/15/main")
		d.MariaDBConfig = "/etc/mysql/my.cnf"
		d.MariaDBRunDir = "/run/mysqld"
		d.MariaDBSocket = "/run/mysqld/mysqld.sock"
		d.MariaDBPIDFile = "/run/mysqld/mysqld.pid"
	}
	d.MariaDBDataDir = under("var/lib/mysql")
	d.MariaDBTmpDir = "/tmp"
	d.PgSocketDir = "/var/run/postgresql"
	d.MariaDBAdminCnf = "/etc/npanel/mariadb-admin.cnf"
	d.PgAdminPass = "/etc/npanel/postgres-admin.pgpass"
	if p.Prefix != "" {
		// Supervised: the agent writes the server configuration and keeps
		// sockets, pid files and temporary files under the prefix too, so
		// that a dev cluster never meets the host's own servers.
		d.MariaDBConfig = under("etc/mysql/npanel.cnf")
		d.MariaDBRunDir = under("run/mysqld")
		d.MariaDBSocket = under("run/mysqld/mysqld.sock")
		d.MariaDBPIDFile = under("run/mysqld/mysqld.pid")
		d.MariaDBTmpDir = under("var/tmp/mysql")
		d.PgSocketDir = under("run/postgresql")
		d.MariaDBAdminCnf = ""
		d.PgAdminPass = ""
	}
	d.Postgres = filepath.Join(d.PgBinDir, "postgres")
	d.Initdb = filepath.Join(d.PgBinDir, "initdb")
	d.PgCtl = filepath.Join(d.PgBinDir, "pg_ctl")
	d.PgDump = filepath.Join(d.PgBinDir, "pg_dump")
	d.Psql = filepath.Join(d.PgBinDir, "psql")
	return d
}

// PgSocket is the path of PostgreSQL's socket file in PgSocketDir.
func (d DBPaths) PgSocket() string {
	return filepath.Join(d.PgSocketDir, ".s.PGSQL."+strconv.Itoa(d.PgPort))
}
