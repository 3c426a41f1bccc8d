// Package logtail follows the log files of a node (per-domain nginx logs,
// the daemons' own logs), the journal of daemons run as systemd units
// without log files, and the agent's own log records, and hands each
// new line once to every consumer: the traffic counters and the Loki
// shipper read the same files through one reader.
package logtail

import "time"

// Source is one followed log and the labels its lines carry. Labels are
// low-cardinality by design: never a request path or a client address.
type Source struct {
	// Path is the file, empty for the agent's own records and journals.
	Path string
	// Unit is the systemd unit whose journal is read, "" for files.
	Unit string
	// Service is the daemon that writes it ("nginx", "php-fpm-8.2",
	// "pdns", "mariadb", "agent").
	Service string
	// Account and Domain are set for per-domain logs.
	Account string
	Domain  string
	// Kind is "access" or "error" for per-domain logs, "" otherwise.
	Kind string
}

// Entry is one line of a source.
type Entry struct {
	Source *Source
	// Time is when the tail engine read the line (or the agent logged the
	// record, or the journal received it); consumers that parse a
	// timestamp from a file's line prefer it.
	Time time.Time
	// Line has no trailing newline. It is only valid during the Consume
	// call: a consumer that keeps it copies it.
	Line []byte
	// Level is "error", "warn", "info" or "debug" where the engine could
	// tell, else "".
	Level string
}

// Consumer receives batches of new lines, in file order per source. Consume
// must not block for long: the engine calls consumers in turn.
type Consumer interface {
	Consume(batch []Entry)
}
