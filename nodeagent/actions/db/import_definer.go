package db

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
)

// DEFINERs of a dump made on another system (a cPanel archive).
//
// A view, routine, trigger or event runs with its definer's privileges
// when it is SQL SECURITY DEFINER, so the definer a dump names decides what
// the object may reach; setting any definer but oneself takes SET USER (or
// SUPER), a global privilege that would let a hostile dump make an object
// that runs as root. The loader never has it. Instead:
//
//  1. the dump's DEFINER=user@host clauses are taken out as it streams to
//     the loader (the throw-away user limited to the database), which so
//     becomes the definer of every object; the clause each object had is
//     remembered by the object's name. A clause the filter misses names
//     someone else than the loader and fails the load: nothing is gained
//     by hiding one.
//  2. after the load the admin re-owns every view, routine, trigger and
//     event of the database — found in information_schema, not in the dump
//     — to a user chosen here: the user the dump's definer maps to (the
//     archive's own database users, under their new names), else a user
//     that holds the database, else none (the object keeps the dropped
//     loader as definer and fails when used). Never root, never a user
//     outside the account: the dump's words are only a key into users.
//
// Statements are built from quoted identifiers and parameters, or from the
// server's own SHOW CREATE text with its definer prefix replaced.

// DefinerChange is what became of one object's definer.
type DefinerChange struct {
	Kind   string // VIEW, PROCEDURE, FUNCTION, TRIGGER, EVENT
	Name   string
	From   string // the dump's definer user ("" if it named none)
	To     string // user@host now; "" if no user could take it
	Mapped bool   // From is one of the users given
}

// ImportForeignDump is ImportDump for a dump of another system whose
// objects may name definers: users maps the dump's definer user names
// (host aside) to users here.
func (m *Module) ImportForeignDump(ctx context.Context, env *actions.Env, name string, dump io.Reader, users map[string]string) ([]DefinerChange, error) {
	f := &definerFilter{seen: map[string]string{}}
	var changes []DefinerChange
	err := m.importMaria(ctx, env, name, dump, true, func(r io.Reader) io.Reader {
		f.r = bufio.NewReaderSize(r, 64<<10)
		f.atStart = true
		return f
	}, func(md *mariadb, loader string) error {
		var err error
		changes, err = md.reown(ctx, name, loader, f.seen, users)
		return err
	})
	return changes, err
}

var (
	definerUserRe = "(?:`((?:[^`]|``)+)`|'((?:[^'\\\\]|\\\\.)*)'|([A-Za-z0-9_$.-]+))"
	definerHostRe = "(?:`(?:[^`]|``)*`|'(?:[^'\\\\]|\\\\.)*'|[A-Za-z0-9_.%:-]+)"
	// definerRe is a DEFINER clause naming a user (DEFINER=CURRENT_USER is
	// the loader itself and stays).
	definerRe = regexp.MustCompile(`(?i)\bDEFINER\s*=\s*` + definerUserRe + `\s*@\s*` + definerHostRe)
	// objectRe finds the object a DEFINER clause belongs to.
	objectRe = regexp.MustCompile("(?i)\\b(VIEW|TRIGGER|PROCEDURE|FUNCTION|EVENT)\\s+(?:(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)\\s*\\.\\s*)?(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))")
)

// definerFilter takes DEFINER=... clauses out of a mariadb-dump stream
// (not from its INSERT lines, which are data) and notes, by "KIND name",
// the definer user each object had. A line longer than its buffer passes
// as it is.
type definerFilter struct {
	r       *bufio.Reader
	atStart bool
	pending []byte
	seen    map[string]string
	// want is the definer met whose object is not named yet (the view's
	// clause is on the line before its name).
	want      string
	wantLines int
}

func (f *definerFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		s, err := f.r.ReadSlice('\n')
		whole := f.atStart && (err == nil || errors.Is(err, io.EOF))
		f.atStart = err == nil
		if whole && len(s) > 0 {
			s = f.line(s)
		}
		f.pending = append(f.pending[:0], s...)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if len(f.pending) > 0 {
				break
			}
			return 0, err
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func (f *definerFilter) line(s []byte) []byte {
	t := bytes.TrimLeft(s, " \t")
	if hasPrefixFold(t, "INSERT ") || hasPrefixFold(t, "REPLACE ") {
		return s
	}
	rest := s
	if m := definerRe.FindSubmatchIndex(s); m != nil {
		user := ""
		switch {
		case m[2] >= 0:
			user = strings.ReplaceAll(string(s[m[2]:m[3]]), "``", "`")
		case m[4] >= 0:
			user = unquoteSQLString(string(s[m[4]:m[5]]))
		case m[6] >= 0:
			user = string(s[m[6]:m[7]])
		}
		f.want, f.wantLines = user, 3
		out := append(append([]byte{}, s[:m[0]]...), s[m[1]:]...)
		rest = out[m[0]:]
		s = definerRe.ReplaceAll(out, nil) // more than one on the line: all go
	}
	if f.wantLines > 0 {
		if m := objectRe.FindSubmatch(rest); m != nil {
			name := string(m[3])
			if m[2] != nil {
				name = strings.ReplaceAll(string(m[2]), "``", "`")
			}
			kind := strings.ToUpper(string(m[1]))
			if _, ok := f.seen[kind+" "+name]; !ok {
				f.seen[kind+" "+name] = f.want
			}
			f.wantLines = 0
		} else {
			f.wantLines--
		}
	}
	return s
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && strings.EqualFold(string(b[:len(p)]), p)
}

func unquoteSQLString(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// reown gives every object of database name, which the loader defined, to
// the user seen and users say, as the package comment describes.
func (md *mariadb) reown(ctx context.Context, name, loader string, seen, users map[string]string) ([]DefinerChange, error) {
	conn, err := md.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	// The session's database and sql_mode change here: the connection is
	// discarded, not given back to the admin's pool.
	defer func() {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	if _, err := conn.ExecContext(ctx, "USE "+mysqlIdent(name)); err != nil {
		return nil, err
	}
	fallback, err := databaseUser(ctx, conn, name)
	if err != nil {
		return nil, err
	}
	// Belt and braces: only a user of the database's account (its names
	// start with the account's, which has no '_') may take an object.
	acct, _, _ := strings.Cut(name, "_")
	ours := func(u string) bool { return strings.HasPrefix(u, acct+"_") }
	if !ours(fallback[0]) {
		fallback = [2]string{}
	}
	var objs [][2]string // kind, name
	for _, q := range []struct{ kind, query string }{
		{"VIEW", "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY 1"},
		{"", "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY 1, 2"},
		{"TRIGGER", "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY ACTION_ORDER, 1"},
		{"EVENT", "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY 1"},
	} {
		rows, err := conn.QueryContext(ctx, q.query, name)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var kind, n string
			if q.kind == "" {
				err = rows.Scan(&kind, &n)
			} else {
				kind = q.kind
				err = rows.Scan(&n)
			}
			if err != nil {
				rows.Close()
				return nil, err
			}
			objs = append(objs, [2]string{kind, n})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var changes []DefinerChange
	for _, o := range objs {
		ch := DefinerChange{Kind: o[0], Name: o[1], From: seen[o[0]+" "+o[1]]}
		var user, host string
		if to, ok := users[ch.From]; ok && ch.From != "" && ours(to) {
			if h, err := userHost(ctx, conn, to); err != nil {
				return nil, err
			} else if h != "" {
				user, host, ch.Mapped = to, h, true
			}
		}
		if user == "" && fallback[0] != "" {
			user, host = fallback[0], fallback[1]
		}
		if user != "" {
			if err := setDefiner(ctx, conn, name, o[0], o[1], loader, user, host); err != nil {
				return nil, fmt.Errorf("%s %s: %w", strings.ToLower(o[0]), o[1], err)
			}
			ch.To = user + "@" + host
		}
		changes = append(changes, ch)
	}
	return changes, nil
}

// databaseUser is a user (not a loader) holding database name, the first
// by name ("" if none).
func databaseUser(ctx context.Context, conn *sql.Conn, name string) ([2]string, error) {
	esc := strings.NewReplacer(`\`, `\\`, `_`, `\_`, `%`, `\%`).Replace(name)
	var u [2]string
	err := conn.QueryRowContext(ctx, `SELECT User, Host FROM mysql.db WHERE (Db = ? OR Db = ?) AND User NOT LIKE 'npimport\_%' AND User <> ''
		ORDER BY User, Host = 'localhost' DESC, Host LIMIT 1`, esc, name).Scan(&u[0], &u[1])
	if errors.Is(err, sql.ErrNoRows) {
		return u, nil
	}
	return u, err
}

// userHost is the host of user to define objects with: localhost if it
// has one ("" if the user does not exist).
func userHost(ctx context.Context, conn *sql.Conn, user string) (string, error) {
	var h string
	err := conn.QueryRowContext(ctx, "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host = 'localhost' DESC, Host LIMIT 1", user).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return h, err
}

// setDefiner makes user@host the definer of an object of db that loader
// defined.
func setDefiner(ctx context.Context, conn *sql.Conn, db, kind, name, loader, user, host string) error {
	switch kind {
	case "PROCEDURE", "FUNCTION":
		// mysql.proc holds routines; a new session reads the definer from it.
		_, err := conn.ExecContext(ctx, "UPDATE mysql.proc SET definer = ? WHERE db = ? AND name = ? AND type = ?", user+"@"+host, db, name, kind)
		return err
	case "EVENT":
		// ALTER EVENT wants a clause: the event's own status, restated.
		var status string
		if err := conn.QueryRowContext(ctx, "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?", db, name).Scan(&status); err != nil {
			return err
		}
		clause := map[string]string{"ENABLED": "ENABLE", "DISABLED": "DISABLE", "SLAVESIDE_DISABLED": "DISABLE ON SLAVE"}[status]
		if clause == "" {
			return fmt.Errorf("event status %q", status)
		}
		_, err := conn.ExecContext(ctx, "ALTER DEFINER = "+account(user, host)+" EVENT "+mysqlIdent(db)+"."+mysqlIdent(name)+" "+clause)
		return err
	}
	// Views and triggers have no ALTER DEFINER of their own: the server's
	// SHOW CREATE text, whose prefix names the loader as definer, is run
	// again as CREATE OR REPLACE with the new definer in that prefix.
	var stmt, mode string
	var err error
	if kind == "VIEW" {
		var n, cs, coll string
		err = conn.QueryRowContext(ctx, "SHOW CREATE VIEW "+mysqlIdent(db)+"."+mysqlIdent(name)).Scan(&n, &stmt, &cs, &coll)
	} else {
		var n, cs, coll, dbColl string
		var created sql.NullString
		err = conn.QueryRowContext(ctx, "SHOW CREATE TRIGGER "+mysqlIdent(db)+"."+mysqlIdent(name)).Scan(&n, &mode, &stmt, &cs, &coll, &dbColl, &created)
	}
	if err != nil {
		return err
	}
	old := "DEFINER=" + account(loader, "localhost")
	i := strings.Index(stmt, old)
	j := strings.Index(stmt, " "+kind+" ")
	if !strings.HasPrefix(stmt, "CREATE ") || i < 0 || j < 0 || i > j {
		return fmt.Errorf("SHOW CREATE %s does not name the loader as definer before the %s: %.80q", kind, strings.ToLower(kind), stmt)
	}
	stmt = "CREATE OR REPLACE " + stmt[len("CREATE "):i] + "DEFINER=" + account(user, host) + stmt[i+len(old):]
	if kind == "TRIGGER" {
		if _, err := conn.ExecContext(ctx, "SET SESSION sql_mode = ?", mode); err != nil {
			return err
		}
		// The next object is recreated in the mode reown started with.
		defer conn.ExecContext(context.WithoutCancel(ctx), "SET SESSION sql_mode = DEFAULT") //nolint:errcheck
	}
	_, err = conn.ExecContext(ctx, stmt)
	return err
}
