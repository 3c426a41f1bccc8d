package db

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/validate"
)

// This file fingerprints a database table by table, so that a migration's
// last pass (the source suspended: nothing writes) re-sends only the
// tables that changed since its first one. A fingerprint that cannot be
// taken is left empty: the caller then copies the whole database.

// TableSum is one base table's fingerprint: Schema digests its definition
// (MariaDB's SHOW CREATE TABLE, with AUTO_INCREMENT, so that a row added
// and deleted again still counts as a change), Data its rows. Data is ""
// when the server could not compute it.
type TableSum struct {
	Name   string `json:"name"`
	Schema string `json:"schema"`
	Data   string `json:"data"`
}

// DatabaseSums fingerprints a whole database: its tables (MariaDB: every
// kind but views and sequences), and in Objects everything else (views,
// routines, triggers, events, MariaDB's sequences with their state; for
// PostgreSQL also every table's columns, constraints and indexes, the
// sequences' positions, types and enum values, row security and
// policies, rules, and the large objects with their bytes).
type DatabaseSums struct {
	Engine  string     `json:"engine"`
	Tables  []TableSum `json:"tables"`
	Objects string     `json:"objects"`
}

// Checksums fingerprints database name of engine (which must exist). The
// tables come sorted by name.
func (m *Module) Checksums(ctx context.Context, env *actions.Env, engine, name string) (DatabaseSums, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return DatabaseSums{}, err
	}
	ok, err := e.databaseExists(ctx, name)
	if err != nil {
		return DatabaseSums{}, err
	}
	if !ok {
		return DatabaseSums{}, fmt.Errorf("database %q does not exist", name)
	}
	var s DatabaseSums
	switch e := e.(type) {
	case *mariadb:
		s, err = e.checksums(ctx, name)
	case *postgres:
		s, err = e.checksums(ctx, name)
	default:
		return DatabaseSums{}, fmt.Errorf("%w: %T", ErrEngineUnavailable, e)
	}
	if err != nil {
		return DatabaseSums{}, fmt.Errorf("checksums of %q: %w", name, err)
	}
	s.Engine = engine
	slices.SortFunc(s.Tables, func(a, b TableSum) int { return strings.Compare(a.Name, b.Name) })
	return s, nil
}

// digest hashes fields unambiguously (each length-prefixed; NULL apart
// from "").
type digest struct{ h hash.Hash }

func newDigest() *digest { return &digest{h: sha256.New()} }

func (d *digest) add(vals ...sql.NullString) {
	var n [9]byte
	for _, v := range vals {
		if !v.Valid {
			n[0] = 0
		} else {
			n[0] = 1
		}
		binary.BigEndian.PutUint64(n[1:], uint64(len(v.String)))
		d.h.Write(n[:])
		d.h.Write([]byte(v.String))
	}
}

func (d *digest) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// hashRows adds every row of a query (all its columns) to d.
func hashRows(ctx context.Context, db *sql.DB, d *digest, q string, args ...any) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		d.add(vals...)
	}
	return rows.Err()
}

func valid(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// checksums: SHOW CREATE TABLE and CHECKSUM TABLE per table; the
// other objects' definitions (definers included: they decide what the
// object can do) from information_schema.
func (m *mariadb) checksums(ctx context.Context, name string) (DatabaseSums, error) {
	var s DatabaseSums
	// Every kind but views: BASE TABLE, SYSTEM VERSIONED, SEQUENCE
	// (apart, below), and any kind a later server adds. A system-versioned
	// table gets no data checksum: CHECKSUM TABLE of one never equals its
	// copy's (it reads the period columns, or the history, and a dump
	// carries only the current rows, stamped anew by the load), so that
	// table could not be loaded alone anyway; its database goes whole.
	rows, err := m.db.QueryContext(ctx, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME", name)
	if err != nil {
		return s, err
	}
	var seqs []string
	versioned := map[string]bool{}
	for rows.Next() {
		var t, typ string
		if err := rows.Scan(&t, &typ); err != nil {
			rows.Close()
			return s, err
		}
		switch typ {
		case "SEQUENCE":
			seqs = append(seqs, t)
			continue
		case "SYSTEM VERSIONED":
			versioned[t] = true
		}
		s.Tables = append(s.Tables, TableSum{Name: t})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	// One connection: SHOW CREATE TABLE and CHECKSUM TABLE need no USE,
	// every name is qualified.
	for i := range s.Tables {
		t := &s.Tables[i]
		var tn, create string
		if err := m.db.QueryRowContext(ctx, "SHOW CREATE TABLE "+mysqlIdent(name)+"."+mysqlIdent(t.Name)).Scan(&tn, &create); err != nil {
			return s, fmt.Errorf("table %q: %w", t.Name, err)
		}
		d := newDigest()
		d.add(valid(create))
		t.Schema = d.sum()
	}
	var q []string
	idx := map[string]int{}
	for i, t := range s.Tables {
		if !versioned[t.Name] {
			q = append(q, mysqlIdent(name)+"."+mysqlIdent(t.Name))
			idx[name+"."+t.Name] = i
		}
	}
	if len(q) > 0 {
		rows, err := m.db.QueryContext(ctx, "CHECKSUM TABLE "+strings.Join(q, ", "))
		if err != nil {
			return s, err
		}
		for rows.Next() {
			var tn string
			var sum sql.NullString
			if err := rows.Scan(&tn, &sum); err != nil {
				rows.Close()
				return s, err
			}
			// NULL (the table went, or its engine cannot) stays "".
			if i, ok := idx[tn]; ok && sum.Valid {
				s.Tables[i].Data = sum.String
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return s, err
		}
	}
	d := newDigest()
	for _, q := range []string{
		`SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, DEFINER, SECURITY_TYPE, ALGORITHM, CHARACTER_SET_CLIENT, COLLATION_CONNECTION
			FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME`,
		`SELECT ROUTINE_TYPE, ROUTINE_NAME, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC, SQL_DATA_ACCESS,
			SECURITY_TYPE, SQL_MODE, ROUTINE_COMMENT, DEFINER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION
			FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME`,
		`SELECT SPECIFIC_NAME, ROUTINE_TYPE, ORDINAL_POSITION, PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER
			FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = ? ORDER BY SPECIFIC_NAME, ROUTINE_TYPE, ORDINAL_POSITION`,
		`SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_STATEMENT, ACTION_TIMING,
			SQL_MODE, DEFINER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION
			FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, TRIGGER_NAME`,
		`SELECT EVENT_NAME, DEFINER, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, INTERVAL_VALUE, INTERVAL_FIELD,
			SQL_MODE, STARTS, ENDS, STATUS, ON_COMPLETION, EVENT_COMMENT
			FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME`,
	} {
		if err := hashRows(ctx, m.db, d, q, name); err != nil {
			return s, err
		}
	}
	// A sequence is no table here: its definition and state (the next
	// value not yet handed to a cache: every value served is below it, and
	// a dump restarts there) go into Objects, so that one that moved
	// makes the whole database go, never a table by table load.
	for _, q := range seqs {
		qn := mysqlIdent(name) + "." + mysqlIdent(q)
		d.add(valid("sequence"), valid(q))
		var tn, create string
		if err := m.db.QueryRowContext(ctx, "SHOW CREATE TABLE "+qn).Scan(&tn, &create); err != nil {
			return s, fmt.Errorf("sequence %q: %w", q, err)
		}
		d.add(valid(create))
		if err := hashRows(ctx, m.db, d, "SELECT * FROM "+qn); err != nil {
			return s, fmt.Errorf("sequence %q: %w", q, err)
		}
	}
	s.Objects = d.sum()
	return s, nil
}

// checksums: per table (relkind r, outside the system schemas) the row
// count and the sum of a 64-bit hash of each row's text (order does not
// matter: a table has none); the schema of everything (columns, defaults,
// constraints, indexes, triggers, views, functions) and the sequences'
// positions go into Objects, as pg_catalog prints them, and so do the
// large objects (pg_catalog's own tables, not among the relations). Rows
// are printed under pinned settings, not the server's or the role's.
func (p *postgres) checksums(ctx context.Context, name string) (DatabaseSums, error) {
	var s DatabaseSums
	c, err := p.connectDB(ctx, name)
	if err != nil {
		return s, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	// One snapshot for the whole fingerprint.
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return s, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// A row's text depends on these: two servers configured apart must
	// still print the same rows alike.
	for _, q := range []string{
		"SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL IntervalStyle = 'postgres'",
		"SET LOCAL extra_float_digits = 1", "SET LOCAL bytea_output = 'hex'", "SET LOCAL lc_monetary = 'C'",
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return s, fmt.Errorf("%s: %w", q, err)
		}
	}
	const userRels = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`
	rows, err := tx.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND `+userRels+` ORDER BY 1, 2`)
	if err != nil {
		return s, err
	}
	type rel struct{ ns, name string }
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.ns, &r.name); err != nil {
			rows.Close()
			return s, err
		}
		rels = append(rels, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	for _, r := range rels {
		qn := pgIdent(r.ns) + "." + pgIdent(r.name)
		var n int64
		var sum string
		// numeric: a bigint sum would overflow. ROW(t.*): t alone
		// would be a column of that name if the table has one.
		if err := tx.QueryRow(ctx, "SELECT count(*), COALESCE(sum(hashtextextended(ROW(t.*)::text, 0)::numeric), 0)::text FROM ONLY "+qn+" t").Scan(&n, &sum); err != nil {
			return s, fmt.Errorf("table %s: %w", qn, err)
		}
		s.Tables = append(s.Tables, TableSum{Name: r.ns + "." + r.name, Schema: "-", Data: fmt.Sprintf("%d:%s", n, sum)})
	}
	d := newDigest()
	for qi, q := range []string{
		`SELECT n.nspname, c.relname, c.relkind::text, a.attnum::text, a.attname, format_type(a.atttypid, a.atttypmod),
			a.attnotnull::text, COALESCE(pg_get_expr(ad.adbin, ad.adrelid), ''), a.attidentity::text, a.attgenerated::text
			FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
			WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ` + userRels + ` ORDER BY 1, 2, a.attnum`,
		`SELECT n.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid) FROM pg_constraint co
			JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userRels + ` ORDER BY 1, 2, 3`,
		`SELECT n.nspname, c.relname, pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('i', 'I') AND ` + userRels + ` ORDER BY 1, 2`,
		`SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text FROM pg_trigger t
			JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND ` + userRels + ` ORDER BY 1, 2, 3`,
		`SELECT n.nspname, c.relname, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('v', 'm') AND ` + userRels + ` ORDER BY 1, 2`,
		`SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid) FROM pg_proc p
			JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND ` + userRels + ` ORDER BY 1, 2, 3`,
		`SELECT schemaname, sequencename, COALESCE(last_value::text, ''), start_value::text, increment_by::text,
			min_value::text, max_value::text, cycle::text FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`,
		`SELECT nspname FROM pg_namespace n WHERE ` + userRels + ` ORDER BY 1`,
		`SELECT extname, extversion FROM pg_extension ORDER BY 1`,
		// Types: every type of the user's schemas, enums' values, domains'
		// constraints, composite types' attributes.
		`SELECT n.nspname, t.typname, t.typtype::text, format_type(t.typbasetype, t.typtypmod), t.typnotnull::text,
			COALESCE(t.typdefault, ''), COALESCE(rs.rngsubtype::regtype::text, '') FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
			LEFT JOIN pg_range rs ON rs.rngtypid = t.oid
			WHERE ` + userRels + ` ORDER BY 1, 2`,
		`SELECT n.nspname, t.typname, e.enumsortorder::text, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
			JOIN pg_namespace n ON n.oid = t.typnamespace ORDER BY 1, 2, e.enumsortorder`,
		`SELECT n.nspname, t.typname, co.conname, pg_get_constraintdef(co.oid) FROM pg_constraint co
			JOIN pg_type t ON t.oid = co.contypid JOIN pg_namespace n ON n.oid = t.typnamespace ORDER BY 1, 2, 3`,
		`SELECT n.nspname, c.relname, a.attnum::text, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
			JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped AND ` + userRels + ` ORDER BY 1, 2, 3`,
		// Row security and rules (a view's own _RETURN rule is its
		// definition, above).
		`SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity::text, c.relforcerowsecurity::text, c.relpersistence::text
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind NOT IN ('i', 'I', 't') AND ` + userRels + ` ORDER BY 1, 2`,
		`SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, COALESCE(qual, ''), COALESCE(with_check, '')
			FROM pg_policies ORDER BY 1, 2, 3`,
		`SELECT schemaname, tablename, rulename, definition FROM pg_rules ORDER BY 1, 2, 3`,
		// Large objects (pg_catalog's, so apart from the tables): which
		// there are, and every page's bytes. Not their privileges, nor
		// the relations': a copy leaves the old system's out, the target
		// grants its own.
		`SELECT oid::text FROM pg_largeobject_metadata ORDER BY oid`,
		`SELECT count(*)::text, COALESCE(sum(hashtextextended(loid::text || '/' || pageno::text || '/' || md5(data), 0)::numeric), 0)::text
			FROM pg_largeobject`,
	} {
		d.add(valid(fmt.Sprint("query ", qi)))
		rows, err := tx.Query(ctx, q)
		if err != nil {
			return s, err
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				rows.Close()
				return s, err
			}
			row := make([]sql.NullString, len(vals))
			for i, v := range vals {
				if v != nil {
					row[i] = valid(fmt.Sprint(v))
				}
			}
			d.add(row...)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return s, err
		}
	}
	s.Objects = d.sum()
	return s, nil
}

// ChangedTables compares the source's fingerprint with the target's and
// returns the tables whose rows or definition differ. ok is false when
// the difference cannot be made up table by table, with why: the table
// lists differ, a fingerprint is missing, the other objects differ, or
// the engine (PostgreSQL) is copied only as a whole.
func ChangedTables(src, dst DatabaseSums) (changed []string, ok bool, why string) {
	if src.Engine != dst.Engine {
		return nil, false, "engines differ"
	}
	if src.Objects == "" || dst.Objects == "" {
		return nil, false, "no fingerprint of the views, routines, triggers and events"
	}
	if src.Objects != dst.Objects {
		return nil, false, "views, routines, triggers, events or schema differ"
	}
	if len(src.Tables) != len(dst.Tables) {
		return nil, false, fmt.Sprintf("%d tables here, %d on the other side", len(src.Tables), len(dst.Tables))
	}
	for i, t := range src.Tables {
		o := dst.Tables[i]
		if t.Name != o.Name {
			return nil, false, fmt.Sprintf("table %q is not on both sides", t.Name)
		}
		if t.Data == "" || o.Data == "" || t.Schema == "" || o.Schema == "" {
			return nil, false, fmt.Sprintf("table %q has no checksum", t.Name)
		}
		if t != o {
			changed = append(changed, t.Name)
		}
	}
	if len(changed) > 0 && src.Engine != validate.EngineMariaDB {
		// A PostgreSQL table cannot be replaced alone by the restricted
		// loader (the tables are the database's owner role's, its role owns none).
		return nil, false, fmt.Sprintf("%d tables changed; %s databases are copied whole", len(changed), src.Engine)
	}
	return changed, true, ""
}

// ErrTableName is the error of a table name that is not given to a dump
// tool's argv (it would read as an option).
var ErrTableName = errors.New("table name cannot be passed to the dump tool")

// TablesDumpCommand returns mariadb-dump for some tables of database name
// (DROP TABLE IF EXISTS, CREATE TABLE, rows and their triggers; no
// routines or events, which stay as they are). MariaDB only.
func (m *Module) TablesDumpCommand(ctx context.Context, env *actions.Env, engine, name string, tables []string) (Command, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return Command{}, err
	}
	md, ok := e.(*mariadb)
	if !ok {
		return Command{}, fmt.Errorf("dumping single tables: %s is copied whole", engine)
	}
	if len(tables) == 0 {
		return Command{}, errors.New("no tables")
	}
	argv := []string{
		md.paths.MariadbDump,
		// Must come first; keeps the password off the command line.
		"--defaults-extra-file=" + md.cred,
		"--socket=" + md.socket,
		"--single-transaction", "--skip-routines", "--triggers", "--skip-events",
		"--hex-blob", "--default-character-set=utf8mb4",
		name,
	}
	if err := tableArgs(tables); err != nil {
		return Command{}, err
	}
	argv = append(argv, tables...)
	return Command{Argv: argv, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Trailer: md.dumpTrailer()}, nil
}

// tableArgs checks table names for mariadb-dump's argv. The tenant names
// its tables: one starting with '-' would be an option of a tool that
// runs as root; NUL cannot be passed, and no MariaDB name holds one.
func tableArgs(tables []string) error {
	for _, t := range tables {
		if t == "" || strings.HasPrefix(t, "-") || strings.ContainsRune(t, 0) || len(t) > 64*4 {
			return fmt.Errorf("%w: %q", ErrTableName, t)
		}
	}
	return nil
}
