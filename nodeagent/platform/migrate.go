package platform

// DefaultMigrationListen is where the agent's migration endpoint (an SSH
// server inside the agent, for incoming rsync and database streams)
// listens by default. The backup module's sshd defaults to the same port:
// a node runs both only with one of them moved (--migration-listen,
// --sftp-listen).
const DefaultMigrationListen = ":2222"

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
