package db

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// mariadb is the MariaDB engine: one pool logged in as the agent's admin
// account over the server's unix socket.
//
// Values are bound as parameters. The pool runs with the driver's
// interpolateParams: go-sql-driver then escapes each value into the
// statement client-side (honouring the session's NO_BACKSLASH_ESCAPES)
// instead of preparing it on the server. That is what makes a parameter
// possible at all in CREATE USER / ALTER USER ... IDENTIFIED BY PASSWORD ?,
// which the server does not prepare, and it saves a round trip per
// statement. The one value bound there is a hash the agent computed (hex),
// so even the driver's escaping has nothing to do.
type mariadb struct {
	db     *sql.DB
	paths  platform.DBPaths
	cred   string // option file with the admin credentials
	socket string
}

// mariadbPool opens a small pool over socket.
func mariadbPool(socket, user, password string) (*sql.DB, error) {
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd = "unix", socket, user, password
	c.InterpolateParams = true
	c.AllowNativePasswords = true
	c.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

func openMariaDB(ctx context.Context, paths platform.DBPaths, cred string, supervised bool) (*mariadb, error) {
	ok, err := fileExists(cred)
	if err != nil {
		return nil, fmt.Errorf("mariadb: admin credentials: %w", err)
	}
	if !ok {
		if !supervised {
			return nil, fmt.Errorf("mariadb: admin credentials %s are missing (provisioned with the node)", cred)
		}
		if err := bootstrapMariaDB(ctx, paths.MariaDBSocket, paths.MariaDBAdminUser, cred); err != nil {
			return nil, err
		}
	}
	b, err := readCredFile(cred)
	if err != nil {
		return nil, fmt.Errorf("mariadb: admin credentials: %w", err)
	}
	user, pw, err := parseOptionFile(b)
	if err != nil {
		return nil, fmt.Errorf("mariadb: admin credentials %s: %w", cred, err)
	}
	db, err := mariadbPool(paths.MariaDBSocket, user, pw)
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("mariadb: connect as %s over %s: %w", user, paths.MariaDBSocket, err)
	}
	return &mariadb{db: db, paths: paths, cred: cred, socket: paths.MariaDBSocket}, nil
}

// bootstrapMariaDB creates the agent's admin account on a fresh supervised
// server. root@localhost authenticates by unix_socket there
// (mariadb-install-db --auth-root-authentication-method=socket) and the
// agent runs as root, so it logs in as root without a password once, gives
// itself an account with a generated password and keeps the password in a
// 0600 option file. The password is set before the file is written: a crash
// between the two leaves no file, and the next bootstrap sets a new one.
func bootstrapMariaDB(ctx context.Context, socket, admin, cred string) error {
	root, err := mariadbPool(socket, "root", "")
	if err != nil {
		return err
	}
	defer root.Close()
	var rnd [24]byte
	_, _ = rand.Read(rnd[:])
	pw := hex.EncodeToString(rnd[:])
	acct := mysqlIdent(admin) + "@" + mysqlIdent("localhost")
	for _, q := range []string{
		"CREATE USER IF NOT EXISTS " + acct + " IDENTIFIED BY PASSWORD ?",
		"ALTER USER " + acct + " IDENTIFIED BY PASSWORD ?",
		"GRANT ALL PRIVILEGES ON *.* TO " + acct + " WITH GRANT OPTION",
	} {
		var args []any
		if strings.HasSuffix(q, "?") {
			args = []any{nativeHash(pw)}
		}
		if _, err := root.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("mariadb: create admin account %s (as root over %s): %w", admin, socket, err)
		}
	}
	if err := writeSecretFile(cred, []byte("[client]\nuser="+admin+"\npassword="+pw+"\n")); err != nil {
		return fmt.Errorf("mariadb: write admin credentials: %w", err)
	}
	return nil
}

func (m *mariadb) close() { m.db.Close() }

// mysqlIdent quotes an identifier with backticks, doubling any inside.
func mysqlIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// mysqlGrantDB quotes a database name for GRANT and REVOKE, where it is a
// LIKE pattern: '_' and '%' are escaped so that "alice_a_b" cannot also
// match "alicexa_b" (a database of account "alicexa").
func mysqlGrantDB(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `_`, `\_`, `%`, `\%`)
	return mysqlIdent(r.Replace(s))
}

// unescapeGrantDB turns mysql.db's Db column (a pattern) back into a name;
// ok is false for a pattern with an unescaped wildcard, which no grant of
// ours creates.
func unescapeGrantDB(p string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			i++
			b.WriteByte(p[i])
		case c == '_' || c == '%':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// nativeHash is mysql_native_password's stored form of pw:
// "*" + HEX(SHA1(SHA1(pw))), what PASSWORD(pw) returns. Computing it here
// lets CREATE/ALTER USER ... IDENTIFIED BY PASSWORD carry the hash only, so
// the password itself is never sent to the server.
func nativeHash(pw string) string {
	h1 := sha1.Sum([]byte(pw))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}

func (m *mariadb) databaseExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := m.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up database %q: %w", name, err)
	}
	return n > 0, nil
}

func (m *mariadb) ensureDatabase(ctx context.Context, name, charset string) (bool, error) {
	if !slices.Contains(mariadbCharsets, charset) {
		return false, fmt.Errorf("create database %q: charset %q is not allowed", name, charset)
	}
	// One statement, no look-up first: IF NOT EXISTS makes a concurrent
	// creator harmless, and the server reports 1 row affected when it
	// created the database, 0 (and a note) when it was there.
	r, err := m.db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+mysqlIdent(name)+" CHARACTER SET "+charset)
	if err != nil {
		return false, fmt.Errorf("create database %q: %w", name, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("create database %q: %w", name, err)
	}
	return n == 0, nil
}

func (m *mariadb) dropDatabase(ctx context.Context, name string) error {
	if _, err := m.db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+mysqlIdent(name)); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	return nil
}

func (m *mariadb) dumpCommand(name string) dumpCmd {
	return dumpCmd{argv: []string{
		m.paths.MariadbDump,
		// Must come first; keeps the password off the command line.
		"--defaults-extra-file=" + m.cred,
		"--socket=" + m.socket,
		"--single-transaction", "--routines", "--triggers", "--events",
		"--hex-blob", "--default-character-set=utf8mb4",
		name,
	}}
}

func (m *mariadb) dumpTrailer() string { return "-- Dump completed" }

func (m *mariadb) optimize(ctx context.Context, name string) (int, error) {
	rows, err := m.db.QueryContext(ctx, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", name)
	if err != nil {
		return 0, fmt.Errorf("optimize %q: list tables: %w", name, err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return 0, fmt.Errorf("optimize %q: %w", name, err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("optimize %q: %w", name, err)
	}
	for _, t := range tables {
		// Table names are the customer's own and are quoted, not validated.
		r, err := m.db.QueryContext(ctx, "OPTIMIZE TABLE "+mysqlIdent(name)+"."+mysqlIdent(t))
		if err != nil {
			return 0, fmt.Errorf("optimize %q.%q: %w", name, t, err)
		}
		for r.Next() {
			var tbl, op, typ, text string
			if err := r.Scan(&tbl, &op, &typ, &text); err != nil {
				r.Close()
				return 0, fmt.Errorf("optimize %q.%q: %w", name, t, err)
			}
			if strings.EqualFold(typ, "error") {
				r.Close()
				return 0, fmt.Errorf("optimize %q.%q: %s", name, t, text)
			}
		}
		r.Close()
		if err := r.Err(); err != nil {
			return 0, fmt.Errorf("optimize %q.%q: %w", name, t, err)
		}
	}
	return len(tables), nil
}

// privColumns maps mysql.db's privilege columns to privilege names, in
// the order of validate's allow-list; Grant_priv is read to revoke it.
var privColumns = []struct{ col, priv string }{
	{"Select_priv", "SELECT"}, {"Insert_priv", "INSERT"}, {"Update_priv", "UPDATE"},
	{"Delete_priv", "DELETE"}, {"Create_priv", "CREATE"}, {"Drop_priv", "DROP"},
	{"References_priv", "REFERENCES"}, {"Index_priv", "INDEX"}, {"Alter_priv", "ALTER"},
	{"Create_tmp_table_priv", "CREATE TEMPORARY TABLES"}, {"Lock_tables_priv", "LOCK TABLES"},
	{"Create_view_priv", "CREATE VIEW"}, {"Show_view_priv", "SHOW VIEW"},
	{"Create_routine_priv", "CREATE ROUTINE"}, {"Alter_routine_priv", "ALTER ROUTINE"},
	{"Execute_priv", "EXECUTE"}, {"Event_priv", "EVENT"}, {"Trigger_priv", "TRIGGER"},
	{"Delete_history_priv", "DELETE HISTORY"}, {"Grant_priv", "GRANT OPTION"},
}

var dbGrantQuery = func() string {
	cols := make([]string, len(privColumns))
	for i, c := range privColumns {
		cols[i] = c.col
	}
	return "SELECT Db, " + strings.Join(cols, ", ") + " FROM mysql.db WHERE User = ? AND Host = ?"
}()

// heldGrants reads what user@host holds per database pattern.
func (m *mariadb) heldGrants(ctx context.Context, user, host string) (map[string][]string, error) {
	rows, err := m.db.QueryContext(ctx, dbGrantQuery, user, host)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	held := map[string][]string{}
	for rows.Next() {
		var pattern string
		flags := make([]string, len(privColumns))
		dest := []any{&pattern}
		for i := range flags {
			dest = append(dest, &flags[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		var privs []string
		for i, f := range flags {
			if f == "Y" {
				privs = append(privs, privColumns[i].priv)
			}
		}
		slices.Sort(privs)
		held[pattern] = privs
	}
	return held, rows.Err()
}

type mariaAccount struct {
	host, plugin, auth string
}

func (m *mariadb) accounts(ctx context.Context, user string) ([]mariaAccount, error) {
	rows, err := m.db.QueryContext(ctx, "SELECT Host, plugin, authentication_string FROM mysql.user WHERE User = ? ORDER BY Host", user)
	if err != nil {
		return nil, fmt.Errorf("look up user %q: %w", user, err)
	}
	defer rows.Close()
	var out []mariaAccount
	for rows.Next() {
		var a mariaAccount
		if err := rows.Scan(&a.host, &a.plugin, &a.auth); err != nil {
			return nil, fmt.Errorf("look up user %q: %w", user, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func account(user, host string) string { return mysqlIdent(user) + "@" + mysqlIdent(host) }

// ensureUser converges user@host for every host, then each account's
// grants. Accounts created by this call are dropped again when a later step
// fails, so a failed first ensure leaves no half-made user behind; an
// earlier user's changed password or grants are not rolled back (the
// control plane re-sends the whole spec until it applies).
func (m *mariadb) ensureUser(ctx context.Context, u userSpec, log *slog.Logger) (res *agentpb.DatabaseUserResult, err error) {
	res = &agentpb.DatabaseUserResult{}
	have, err := m.accounts(ctx, u.name)
	if err != nil {
		return res, err
	}
	res.Existed = len(have) > 0
	hash := ""
	if u.password != "" {
		hash = nativeHash(u.password)
	} else if u.hash != "" {
		hash = u.hash
	} else {
		for _, a := range have {
			if a.plugin == "mysql_native_password" && len(a.auth) == 41 {
				hash = a.auth
				break
			}
		}
		if hash == "" {
			if !res.Existed {
				return res, fmt.Errorf("create database user %q: a password is required", u.name)
			}
			if len(have) < len(u.hosts) {
				return res, fmt.Errorf("database user %q: a password is required to add hosts (its current one is not a native password hash)", u.name)
			}
		}
	}
	var created []string
	defer func() {
		if err == nil || len(created) == 0 {
			return
		}
		// Use a fresh context: ctx may be what failed.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, h := range created {
			if _, derr := m.db.ExecContext(rctx, "DROP USER IF EXISTS "+account(u.name, h)); derr != nil {
				log.Error("roll back created database user", "user", u.name, "host", h, "err", derr)
			}
		}
	}()

	byHost := map[string]mariaAccount{}
	for _, a := range have {
		byHost[a.host] = a
	}
	for _, h := range u.hosts {
		a, ok := byHost[h]
		switch {
		case !ok:
			if _, err := m.db.ExecContext(ctx, "CREATE USER "+account(u.name, h)+" IDENTIFIED BY PASSWORD ?", hash); err != nil {
				return res, fmt.Errorf("create database user %q@%q: %w", u.name, h, err)
			}
			created = append(created, h)
		case (u.password != "" || u.hash != "") && (a.plugin != "mysql_native_password" || a.auth != hash):
			if _, err := m.db.ExecContext(ctx, "ALTER USER "+account(u.name, h)+" IDENTIFIED BY PASSWORD ?", hash); err != nil {
				return res, fmt.Errorf("set password of database user %q@%q: %w", u.name, h, err)
			}
			res.PasswordChanged = true
		}
	}
	for _, a := range have {
		if !slices.Contains(u.hosts, a.host) {
			if _, err := m.db.ExecContext(ctx, "DROP USER IF EXISTS "+account(u.name, a.host)); err != nil {
				return res, fmt.Errorf("remove host %q of database user %q: %w", a.host, u.name, err)
			}
		}
	}

	want := map[string][]string{}
	for _, g := range u.grants {
		// The owner check once more, right before the statement: nothing
		// outside the owner's namespace is ever granted.
		if err := checkGrantDB(g.Database, u.owner); err != nil {
			return res, err
		}
		want[g.Database] = g.Privileges
	}
	for _, h := range u.hosts {
		// An account created just now holds nothing (DROP USER removes an
		// earlier namesake's grants), so there is nothing to read back.
		if err := m.convergeGrants(ctx, u.name, h, want, slices.Contains(created, h)); err != nil {
			return res, err
		}
	}
	res.Hosts = u.hosts
	res.Grants = u.grants
	if len(created) > 0 || res.PasswordChanged {
		log.Info("database user ensured", "user", u.name, "created", len(created) > 0, "passwordChanged", res.PasswordChanged)
	}
	return res, nil
}

// convergeGrants makes user@host hold exactly want: missing privileges are
// granted and extra ones revoked per database, never a blanket revoke
// first, so a user never loses access it keeps for a moment in between.
func (m *mariadb) convergeGrants(ctx context.Context, user, host string, want map[string][]string, fresh bool) error {
	held := map[string][]string{}
	if !fresh {
		var err error
		if held, err = m.heldGrants(ctx, user, host); err != nil {
			return fmt.Errorf("read grants of %q@%q: %w", user, host, err)
		}
	}
	heldByName := map[string][]string{}
	for pattern, privs := range held {
		name, ok := unescapeGrantDB(pattern)
		if !ok {
			// A wildcard grant nPanel never makes: revoke it as it is.
			if err := m.revoke(ctx, mysqlIdent(pattern), privs, user, host); err != nil {
				return err
			}
			continue
		}
		heldByName[name] = privs
	}
	for name, privs := range heldByName {
		if _, ok := want[name]; !ok {
			if err := m.revoke(ctx, mysqlGrantDB(name), privs, user, host); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		w, h := want[name], heldByName[name]
		var add, drop []string
		for _, p := range w {
			if !slices.Contains(h, p) {
				add = append(add, p)
			}
		}
		for _, p := range h {
			if !slices.Contains(w, p) {
				drop = append(drop, p)
			}
		}
		if len(add) > 0 {
			if _, err := m.db.ExecContext(ctx, "GRANT "+strings.Join(add, ", ")+" ON "+mysqlGrantDB(name)+".* TO "+account(user, host)); err != nil {
				return fmt.Errorf("grant on %q to %q@%q: %w", name, user, host, err)
			}
		}
		if err := m.revoke(ctx, mysqlGrantDB(name), drop, user, host); err != nil {
			return err
		}
	}
	return nil
}

// revoke revokes privs (names from privColumns only, never input) on the
// quoted database pattern.
func (m *mariadb) revoke(ctx context.Context, quotedDB string, privs []string, user, host string) error {
	if len(privs) == 0 {
		return nil
	}
	for _, p := range privs {
		if !slices.ContainsFunc(privColumns, func(c struct{ col, priv string }) bool { return c.priv == p }) {
			return fmt.Errorf("revoke: unexpected privilege %q", p)
		}
	}
	if _, err := m.db.ExecContext(ctx, "REVOKE "+strings.Join(privs, ", ")+" ON "+quotedDB+".* FROM "+account(user, host)); err != nil {
		return fmt.Errorf("revoke on %s from %q@%q: %w", quotedDB, user, host, err)
	}
	return nil
}

func (m *mariadb) dropUser(ctx context.Context, name, _ string) (bool, error) {
	have, err := m.accounts(ctx, name)
	if err != nil || len(have) == 0 {
		return false, err
	}
	accts := make([]string, len(have))
	for i, a := range have {
		accts[i] = account(name, a.host)
	}
	if _, err := m.db.ExecContext(ctx, "DROP USER IF EXISTS "+strings.Join(accts, ", ")); err != nil {
		return true, fmt.Errorf("drop database user %q: %w", name, err)
	}
	return true, nil
}

// users lists the owner's database users.
func (m *mariadb) users(ctx context.Context, owner string) ([]string, error) {
	rows, err := m.db.QueryContext(ctx, "SELECT DISTINCT User FROM mysql.user WHERE User LIKE ? ORDER BY User", owner+`\_%`)
	if err != nil {
		return nil, fmt.Errorf("list database users of %q: %w", owner, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("list database users of %q: %w", owner, err)
		}
		if validate.DatabaseUser(u, owner) == nil {
			out = append(out, u)
		}
	}
	return out, rows.Err()
}

// list reports the owner's databases. Sizes are InnoDB's and Aria's own
// accounting (data_length + index_length, which counts allocated pages and
// lags behind writes until statistics are refreshed), the figure MariaDB
// tools show.
func (m *mariadb) list(ctx context.Context, owner string) ([]*agentpb.DatabaseInfo, error) {
	like := owner + `\_%`
	rows, err := m.db.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? ORDER BY SCHEMA_NAME", like)
	if err != nil {
		return nil, fmt.Errorf("list databases of %q: %w", owner, err)
	}
	var out []*agentpb.DatabaseInfo
	idx := map[string]int{}
	for rows.Next() {
		d := &agentpb.DatabaseInfo{Engine: validate.EngineMariaDB, Users: []string{}}
		if err := rows.Scan(&d.Name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list databases of %q: %w", owner, err)
		}
		// LIKE's '_' after the escaped one matches any name; keep only the
		// owner's by the validator's rule.
		if validate.DatabaseName(d.Name, owner) != nil {
			continue
		}
		idx[d.Name] = len(out)
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list databases of %q: %w", owner, err)
	}
	if len(out) == 0 {
		return out, nil
	}
	// Sizes and table counts with the schemas named one by one: MariaDB
	// then opens the metadata of those databases only, where a LIKE or a
	// join would make it read every table on the node.
	args := make([]any, len(out))
	for i, d := range out {
		args[i] = d.Name
	}
	trows, err := m.db.QueryContext(ctx, `SELECT TABLE_SCHEMA, COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0), COUNT(*)
		FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA IN (?`+strings.Repeat(", ?", len(out)-1)+`)
		GROUP BY TABLE_SCHEMA`, args...)
	if err != nil {
		return nil, fmt.Errorf("list database sizes of %q: %w", owner, err)
	}
	for trows.Next() {
		var name string
		var size int64
		var n int32
		if err := trows.Scan(&name, &size, &n); err != nil {
			trows.Close()
			return nil, fmt.Errorf("list database sizes of %q: %w", owner, err)
		}
		if i, ok := idx[name]; ok {
			out[i].SizeBytes, out[i].Tables = size, n
		}
	}
	trows.Close()
	if err := trows.Err(); err != nil {
		return nil, fmt.Errorf("list database sizes of %q: %w", owner, err)
	}
	// Users with access: any row in mysql.db naming the database. The Db
	// column holds the escaped pattern our grants write.
	urows, err := m.db.QueryContext(ctx, "SELECT DISTINCT Db, User FROM mysql.db WHERE Db LIKE ? ORDER BY User", owner+`%`)
	if err != nil {
		return nil, fmt.Errorf("list database users of %q: %w", owner, err)
	}
	defer urows.Close()
	for urows.Next() {
		var pattern, user string
		if err := urows.Scan(&pattern, &user); err != nil {
			return nil, fmt.Errorf("list database users of %q: %w", owner, err)
		}
		name, ok := unescapeGrantDB(pattern)
		if !ok {
			continue
		}
		if i, ok := idx[name]; ok && !slices.Contains(out[i].Users, user) {
			out[i].Users = append(out[i].Users, user)
		}
	}
	return out, urows.Err()
}
