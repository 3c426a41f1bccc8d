package migrate

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/npanel/npanel/validate"
)

// The endpoint runs four commands and nothing else. A client names them in
// an SSH exec request, a string that no shell ever sees: ParseCommand
// splits it on single spaces and accepts only the exact shapes below, so
// the argv the endpoint runs is one it builds itself.
//
//	rsync --server -<flags>[e.<caps>] [--delete] [--stats] [--partial] --numeric-ids . .
//	restore-database <engine> <database>
//	checksum-database <engine> <database>
//	restore-tables <engine> <database>
//
// The rsync line is what the source's own rsync client sends for
// `rsync -aHAX --no-D --numeric-ids [--delete] [--partial] [--stats] HOME/ user@target:.`.
// The destination it names must be "."; the endpoint substitutes the
// account's home on this node. Options that would make the server send
// (--sender), run another program (--rsync-path, -e as an option, --log-file
// ...), write outside the destination (--temp-dir, --partial-dir,
// --backup-dir, --link-dest ...) or read a list from elsewhere
// (--files-from) are all refused simply by not being on the list.

// CommandKind says which of the commands a request is.
type CommandKind int

const (
	// Rsync is rsync's receiving server.
	Rsync CommandKind = iota + 1
	// RestoreDatabase reads a plain SQL dump on stdin into one database.
	RestoreDatabase
	// ChecksumDatabase writes the database's per-table fingerprint
	// (db.DatabaseSums, JSON) on stdout.
	ChecksumDatabase
	// RestoreTables reads a plain SQL dump of some tables on stdin into
	// one existing database, its other tables left as they are.
	RestoreTables
)

// Command is one parsed exec request.
type Command struct {
	Kind CommandKind
	// Flags is the rsync short-option cluster as sent ("-lHogtpAXre.iLsfxCIvu").
	Flags string
	// Long are the rsync long options sent, each on rsyncLong.
	Long []string
	// Engine and Database name the database a dump is restored into.
	Engine   string
	Database string
}

// maxCommand bounds an exec request: the longest legal one is well under.
const maxCommand = 512

// rsyncShort are the short options `rsync -aHAX --no-D` sends the server:
// -a's l,o,g,t,p,r and H, A, X. D (device nodes and special files) is
// refused. 'e' is not among them: in the server's cluster it introduces
// the protocol capability letters (".iLsfxCIvu").
const rsyncShort = "lHogtpAXr"

// rsyncLong are the long options the source sends and the server may
// take. --numeric-ids is required (see ParseCommand).
var rsyncLong = map[string]bool{
	"--delete":      true,
	"--stats":       true,
	"--partial":     true,
	"--numeric-ids": true,
}

// ErrCommand is the error of every refused exec request.
var ErrCommand = errors.New("command refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCommand, fmt.Sprintf(format, args...))
}

// ParseCommand parses an exec request strictly (see the package comment
// of this file). Everything it does not recognise is an ErrCommand.
func ParseCommand(s string) (Command, error) {
	if len(s) == 0 {
		return Command{}, refuse("empty command")
	}
	if len(s) > maxCommand {
		return Command{}, refuse("command is %d bytes long", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(" ._-", c) >= 0) {
			return Command{}, refuse("byte %q not allowed", c)
		}
	}
	tok := strings.Split(s, " ")
	for _, t := range tok {
		if t == "" {
			return Command{}, refuse("empty argument (double or edge space)")
		}
	}
	switch tok[0] {
	case "rsync":
		return parseRsync(tok[1:])
	case "restore-database", "checksum-database", "restore-tables":
		if len(tok) != 3 {
			return Command{}, refuse("%s takes ENGINE NAME", tok[0])
		}
		if err := validate.Engine(tok[1]); err != nil {
			return Command{}, refuse("%v", err)
		}
		if len(tok[2]) > 64 {
			return Command{}, refuse("database name too long")
		}
		kind := map[string]CommandKind{"restore-database": RestoreDatabase, "checksum-database": ChecksumDatabase, "restore-tables": RestoreTables}[tok[0]]
		if kind == RestoreTables && tok[1] != validate.EngineMariaDB {
			return Command{}, refuse("restore-tables: %s databases are restored whole", tok[1])
		}
		return Command{Kind: kind, Engine: tok[1], Database: tok[2]}, nil
	}
	return Command{}, refuse("unknown command %q", tok[0])
}

func parseRsync(args []string) (Command, error) {
	if len(args) < 4 || args[0] != "--server" {
		return Command{}, refuse("rsync: only the receiving server (rsync --server ... . .)")
	}
	// The last two arguments are the server's "." placeholder and the
	// destination.
	n := len(args)
	if args[n-2] != "." || args[n-1] != "." {
		return Command{}, refuse("rsync: the destination must be \".\" (the account's home)")
	}
	c := Command{Kind: Rsync}
	seen := map[string]bool{}
	for _, a := range args[1 : n-2] {
		switch {
		case strings.HasPrefix(a, "--"):
			if !rsyncLong[a] {
				return Command{}, refuse("rsync: option %s not allowed", a)
			}
			if seen[a] {
				return Command{}, refuse("rsync: option %s repeated", a)
			}
			seen[a] = true
			c.Long = append(c.Long, a)
		case strings.HasPrefix(a, "-"):
			if c.Flags != "" {
				return Command{}, refuse("rsync: more than one short-option cluster")
			}
			if err := checkFlags(a[1:]); err != nil {
				return Command{}, err
			}
			c.Flags = a
		default:
			return Command{}, refuse("rsync: unexpected argument %q", a)
		}
	}
	if c.Flags == "" {
		return Command{}, refuse("rsync: no options")
	}
	// Without it the sender maps owners by name, and a name on the source
	// may be another user here.
	if !seen["--numeric-ids"] {
		return Command{}, refuse("rsync: --numeric-ids is required")
	}
	return c, nil
}

// checkFlags accepts a server short-option cluster: letters of rsyncShort,
// each once, with 'r', then optionally "e." and capability letters.
func checkFlags(f string) error {
	opts, caps, hasCaps := strings.Cut(f, "e")
	if opts == "" {
		return refuse("rsync: empty option cluster")
	}
	for i := 0; i < len(opts); i++ {
		if strings.IndexByte(rsyncShort, opts[i]) < 0 {
			return refuse("rsync: option -%c not allowed", opts[i])
		}
		if strings.IndexByte(opts[:i], opts[i]) >= 0 {
			return refuse("rsync: option -%c repeated", opts[i])
		}
	}
	if strings.IndexByte(opts, 'r') < 0 {
		return refuse("rsync: -r is required")
	}
	if hasCaps {
		if len(caps) < 2 || caps[0] != '.' || len(caps) > 33 {
			return refuse("rsync: malformed capability flags")
		}
		for i := 1; i < len(caps); i++ {
			c := caps[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return refuse("rsync: malformed capability flags")
			}
		}
	}
	return nil
}

// rsyncArgv is the receiving server's argv for c: the options the client
// sent (all on the lists) and the account's home (absolute) as the
// destination. The receiver runs as the account (see runRsync): it keeps
// no owner the source sends (-o needs root) and no group the account is
// not in (everything is the account's; the web module re-applies a
// docroot's web group when it ensures the site). Options that would
// override the client's on the receiver (--no-devices, --no-owner ...)
// are not usable: the file list's encoding depends on them on both sides.
func (c Command) rsyncArgv(rsync, home string) []string {
	argv := []string{rsync, "--server", c.Flags}
	argv = append(argv, c.Long...)
	return append(argv, ".", filepath.Clean(home)+"/")
}
