package platform

// DefaultMigrationListen is where the agent's migration endpoint (an SSH
// server inside the agent, for incoming rsync and database streams)
// listens by default: beside the backup module's sshd (DefaultSFTPListen),
// so that a backup node runs both with the defaults.
const DefaultMigrationListen = ":2223"

// MigratePaths are the fixed binaries a live migration runs: rsync on both
// sides (the source's client, the target's server) and OpenSSH's client,
// which the source's rsync runs as its transport.
type MigratePaths struct {
	Rsync string
	SSH   string
}

// Migrate returns the migration binaries of p (the same on both distros).
func (p *Profile) Migrate() MigratePaths {
	return MigratePaths{Rsync: "/usr/bin/rsync", SSH: "/usr/bin/ssh"}
}
