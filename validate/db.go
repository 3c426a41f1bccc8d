package validate

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"strings"
)

// Database engines, as named in actions, results and errors.
const (
	EngineMariaDB    = "mariadb"
	EnginePostgreSQL = "postgresql"
)

// Database identifier limits. MariaDB 10.11 allows 64 characters for a
// database and 80 for a user; PostgreSQL allows 63 (NAMEDATALEN-1) for both.
// nPanel uses 63 for both on both engines, so that a name valid on one node
// is valid on every node: an account moved to a node of the other engine
// keeps its names, and no name is ever truncated into another one.
const (
	MaxDatabaseNameLen = 63
	MaxDatabaseUserLen = 63
)

// reservedDatabases are system schemas whose names have the "<owner>_"
// shape: without this list an account named "performance" could "create"
// (CREATE ... IF NOT EXISTS succeeds silently) and then "drop"
// performance_schema.
var reservedDatabases = map[string]bool{
	"information_schema": true,
	"performance_schema": true,
	"pg_catalog":         true,
	"pg_toast":           true,
}

// DatabaseOwner returns the account a database or database-user name
// belongs to: the text before its first '_'. Account names cannot contain
// '_' (see Username), so this is unambiguous. It returns "" when there is no
// '_'.
func DatabaseOwner(name string) string {
	owner, _, ok := strings.Cut(name, "_")
	if !ok {
		return ""
	}
	return owner
}

// DatabaseName accepts the name of a database of account owner:
// "<owner>_<suffix>", lowercase letters, digits and '_' only, the suffix
// starting with a letter or digit, at most MaxDatabaseNameLen bytes.
//
// The alphabet is what both engines take unquoted; the actions still quote
// every identifier. '%' and '\' are out: in MariaDB's GRANT a database name
// is a LIKE pattern. '_' is a pattern character too, which is why the
// actions escape it in GRANT and REVOKE.
//
// owner is checked for its shape only (what Username and TestUsername
// share): whether an account may exist is the account validator's business,
// and what matters here is that the name is inside the owner's namespace.
func DatabaseName(name, owner string) error {
	return dbIdent("database", name, owner, MaxDatabaseNameLen)
}

// DatabaseUser accepts a database user name of account owner, with the same
// rules as DatabaseName and MaxDatabaseUserLen.
func DatabaseUser(name, owner string) error {
	return dbIdent("databaseUser", name, owner, MaxDatabaseUserLen)
}

func dbIdent(field, name, owner string, max int) error {
	if err := ownerShape(owner); err != nil {
		return err
	}
	if name == "" {
		return fail(field, "must not be empty")
	}
	if len(name) > max {
		return fail(field, "%s is %d bytes long; at most %d", quote(name), len(name), max)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			if c >= 'A' && c <= 'Z' {
				return fail(field, "%s has uppercase letters; names are lowercase", quote(name))
			}
			return fail(field, "%s contains %s; use lowercase letters a-z, digits 0-9 and _", quote(name), describeChar(name[i:]))
		}
	}
	suffix, ok := strings.CutPrefix(name, owner+"_")
	if !ok {
		return fail(field, "%s must start with %q, the account's name and an underscore", quote(name), owner+"_")
	}
	if suffix == "" {
		return fail(field, "%s needs a name after %q", quote(name), owner+"_")
	}
	if suffix[0] == '_' {
		return fail(field, "%s: the part after %q must start with a letter or digit", quote(name), owner+"_")
	}
	if reservedDatabases[name] {
		return fail(field, "%s is a system schema", quote(name))
	}
	return nil
}

// ownerShape is the shape shared by Username and TestUsername:
// ^[a-z][a-z0-9]{0,31}$.
func ownerShape(s string) error {
	ok := s != "" && len(s) <= UsernameMaxLen && s[0] >= 'a' && s[0] <= 'z'
	for i := 1; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
	}
	if !ok {
		return fail("owner", "%s is not an account name", quote(s))
	}
	return nil
}

// Engine accepts a database engine name.
func Engine(e string) error {
	if e != EngineMariaDB && e != EnginePostgreSQL {
		return fail("engine", "%s is not a database engine (%s or %s)", quote(e), EngineMariaDB, EnginePostgreSQL)
	}
	return nil
}

// mariadbPrivileges are the database-level privileges an account's user may
// hold in MariaDB 10.11, in the order of mysql.db's columns. GRANT OPTION is
// deliberately absent (a user could pass its grants on), and so are the
// global ones (FILE, SUPER, PROCESS, ...), which would reach beyond the
// account's databases.
var mariadbPrivileges = []string{
	"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "REFERENCES",
	"INDEX", "ALTER", "CREATE TEMPORARY TABLES", "LOCK TABLES", "CREATE VIEW",
	"SHOW VIEW", "CREATE ROUTINE", "ALTER ROUTINE", "EXECUTE", "EVENT",
	"TRIGGER", "DELETE HISTORY",
}

// postgresPrivileges are PostgreSQL's database privileges. CONNECT is
// implied by any grant.
var postgresPrivileges = []string{"CONNECT", "CREATE", "TEMPORARY"}

// DatabasePrivilegeNames lists the privileges DatabasePrivileges accepts for
// engine besides "ALL" (nil for an unknown engine).
func DatabasePrivilegeNames(engine string) []string {
	switch engine {
	case EngineMariaDB:
		return slices.Clone(mariadbPrivileges)
	case EnginePostgreSQL:
		return slices.Clone(postgresPrivileges)
	}
	return nil
}

// DatabasePrivileges checks a grant's privilege list against the engine's
// allow-list and returns it in canonical form: upper case, words separated
// by one space ("CREATE_TEMPORARY_TABLES" and "create temporary tables" are
// both "CREATE TEMPORARY TABLES"), "ALL PRIVILEGES" as "ALL", sorted,
// without repeats, and ALL expanded to the engine's full list so that
// comparing with what the server holds is a set comparison. An empty list is
// refused: revoking everything is done by leaving the database out.
func DatabasePrivileges(engine string, privs []string) ([]string, error) {
	const field = "privileges"
	allowed := DatabasePrivilegeNames(engine)
	if allowed == nil {
		return nil, Engine(engine)
	}
	if len(privs) == 0 {
		return nil, fail(field, "at least one privilege is required (ALL or some of %s)", strings.Join(allowed, ", "))
	}
	if len(privs) > 64 {
		return nil, fail(field, "%d privileges given; at most 64", len(privs))
	}
	var out []string
	for _, p := range privs {
		c, ok := canonicalPrivilege(p)
		switch {
		case !ok:
			return nil, fail(field, "%s is not a privilege name", quote(p))
		case c == "ALL" || c == "ALL PRIVILEGES":
			out = append(out, allowed...)
		case engine == EnginePostgreSQL && c == "TEMP":
			out = append(out, "TEMPORARY")
		case slices.Contains(allowed, c):
			out = append(out, c)
		default:
			return nil, fail(field, "%s is not a privilege a database user may hold on %s (ALL or some of %s)", quote(p), engine, strings.Join(allowed, ", "))
		}
	}
	if engine == EnginePostgreSQL && !slices.Contains(out, "CONNECT") {
		out = append(out, "CONNECT")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// canonicalPrivilege upper-cases an ASCII privilege name and turns '_' and
// runs of spaces into single spaces. Anything but ASCII letters, '_' and
// single inner spaces is refused, so no look-alike or SQL can pass.
func canonicalPrivilege(p string) (string, bool) {
	if p == "" || len(p) > 32 {
		return "", false
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, c-'a'+'A')
		case c >= 'A' && c <= 'Z':
			b = append(b, c)
		case c == '_' || c == ' ':
			if len(b) == 0 || b[len(b)-1] == ' ' || i == len(p)-1 {
				return "", false
			}
			b = append(b, ' ')
		default:
			return "", false
		}
	}
	return string(b), true
}

// MaxDatabaseHosts bounds the hosts one database user is created for.
const MaxDatabaseHosts = 32

// DatabaseHost accepts a host a database user may connect from, in the
// form MariaDB's account host part takes it: "localhost" (socket logins),
// an IP address, or an IPv4 network as a CIDR prefix, which it returns as
// "address/netmask" (MariaDB's notation). Host names are refused (the
// servers run with skip-name-resolve) and so are the wildcards '%' and '_':
// "any host" must be spelled 0.0.0.0/0 to be granted, so that nobody opens
// a database to the world by accident of a pattern.
func DatabaseHost(h string) (string, error) {
	const field = "hosts"
	if h == "localhost" {
		return h, nil
	}
	if pfx, err := netip.ParsePrefix(h); err == nil && !strings.Contains(h, "%") {
		if !pfx.Addr().Is4() {
			return "", fail(field, "%s: networks are IPv4 only (MariaDB has no IPv6 netmasks); list IPv6 addresses one by one", quote(h))
		}
		if pfx.Masked() != pfx {
			return "", fail(field, "%s has host bits set; the network is %s", quote(h), pfx.Masked())
		}
		if pfx.Bits() == 32 {
			return pfx.Addr().String(), nil
		}
		mask := ^uint32(0) << (32 - pfx.Bits()) // Go shifts past the width give 0
		return pfx.Addr().String() + "/" + netip.AddrFrom4([4]byte{byte(mask >> 24), byte(mask >> 16), byte(mask >> 8), byte(mask)}).String(), nil
	}
	a, err := netip.ParseAddr(h)
	if err != nil || a.Zone() != "" || strings.Contains(h, "%") {
		return "", fail(field, "%s is not localhost, an IP address or an IPv4 CIDR network", quote(h))
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.IsUnspecified() || a.IsMulticast() {
		return "", fail(field, "%s is not a unicast address", quote(h))
	}
	return a.String(), nil
}

// DatabasePassword checks a database user's password: Password's rules,
// printable ASCII without spaces, at least two of the classes lowercase,
// uppercase, digits and symbols, and not containing the user name or the
// account name (case-insensitive).
//
// ASCII only, because the agent computes the servers' password hashes
// itself (so the password never travels to the server or into its logs):
// PostgreSQL clients SASLprep-normalise a password before SCRAM, which is
// the identity on ASCII only. Spaces are out because they are trimmed or
// split by too many of the client config files customers paste them into.
func DatabasePassword(pw, user string) error {
	const field = "password"
	if err := Password(pw); err != nil {
		return err
	}
	var lower, upper, digit, other bool
	for i := 0; i < len(pw); i++ {
		switch c := pw[i]; {
		case c <= ' ' || c >= 0x7f:
			return fail(field, "must be printable ASCII without spaces")
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= '0' && c <= '9':
			digit = true
		default:
			other = true
		}
	}
	classes := 0
	for _, b := range []bool{lower, upper, digit, other} {
		if b {
			classes++
		}
	}
	if classes < 2 {
		return fail(field, "must mix at least two of lowercase letters, uppercase letters, digits and symbols")
	}
	lpw := strings.ToLower(pw)
	if user != "" && strings.Contains(lpw, strings.ToLower(user)) {
		return fail(field, "must not contain the user name")
	}
	if owner := DatabaseOwner(user); len(owner) >= 3 && strings.Contains(lpw, owner) {
		return fail(field, "must not contain the account name")
	}
	return nil
}

// GeneratedPasswordLen is the length of GenerateDatabasePassword's
// passwords: 24 characters of a 64-character alphabet, 144 bits.
const GeneratedPasswordLen = 24

const passwordAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-."

// GenerateDatabasePassword returns a random password for user from
// crypto/rand that DatabasePassword accepts. The alphabet has 64 characters,
// so taking 6 bits per byte has no modulo bias; '-' and '.' need no quoting
// in URLs, option files or shells.
func GenerateDatabasePassword(user string) string {
	for {
		var b [GeneratedPasswordLen]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
		for i := range b {
			b[i] = passwordAlphabet[b[i]&63]
		}
		if pw := string(b[:]); DatabasePassword(pw, user) == nil {
			return pw
		}
	}
}
