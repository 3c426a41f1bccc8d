package db

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// postgres is the PostgreSQL engine: a small pool on the maintenance
// database "postgres", and short-lived connections to an account's
// database where a statement must run inside it (schema grants, VACUUM,
// table counts, REASSIGN OWNED).
//
// PostgreSQL takes no parameters in utility statements (CREATE ROLE, GRANT,
// CREATE DATABASE). Identifiers are validated and quoted with
// pgx.Identifier; the only literal ever built is a SCRAM-SHA-256 verifier
// the agent computed itself (base64, '$' and ':' only, checked before use),
// so the password is never sent to the server. Catalog queries bind their
// values as parameters.
type postgres struct {
	pool     *pgxpool.Pool
	paths    platform.DBPaths
	cred     string
	user, pw string
}

const pgMaintenanceDB = "postgres"

func openPostgres(ctx context.Context, paths platform.DBPaths, cred string) (*postgres, error) {
	b, err := readCredFile(cred)
	if err != nil {
		return nil, fmt.Errorf("postgresql: admin credentials: %w", err)
	}
	user, pw, err := parsePgpass(b)
	if err != nil {
		return nil, fmt.Errorf("postgresql: admin credentials %s: %w", cred, err)
	}
	p := &postgres{paths: paths, cred: cred, user: user, pw: pw}
	cfg, err := pgxpool.ParseConfig(p.connString(pgMaintenanceDB))
	if err != nil {
		return nil, fmt.Errorf("postgresql: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgAdminSearchPath
	cfg.MaxConns = 4
	cfg.MaxConnIdleTime = 5 * time.Minute
	p.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgresql: %w", err)
	}
	if err := p.pool.Ping(ctx); err != nil {
		p.pool.Close()
		return nil, fmt.Errorf("postgresql: connect as %s over %s: %w", user, paths.PgSocketDir, err)
	}
	return p, nil
}

func (p *postgres) close() { p.pool.Close() }

func (p *postgres) connString(db string) string {
	q := url.Values{}
	q.Set("host", p.paths.PgSocketDir)
	q.Set("port", strconv.Itoa(p.paths.PgPort))
	q.Set("user", p.user)
	q.Set("password", p.pw)
	q.Set("dbname", db)
	q.Set("sslmode", "disable")
	q.Set("connect_timeout", "10")
	return "postgres:///?" + q.Encode()
}

// pgAdminSearchPath is the search_path of every connection of the admin
// (a superuser), sent at connection start: a client's setting overrides
// those of ALTER DATABASE ... SET and ALTER ROLE ... SET, which a tenant's
// dump may have made while its role owned the database (see
// resetDatabaseSettings). Unqualified names then resolve in pg_catalog
// alone, never to a tenant's function or operator (aclexplode,
// quote_ident, =) that would run as the superuser; the admin's SQL
// names a tenant's objects with their schema.
const pgAdminSearchPath = "pg_catalog, pg_temp"

// connectDB opens one connection to database db as the admin.
func (p *postgres) connectDB(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.connString(db))
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", db, err)
	}
	cfg.RuntimeParams["search_path"] = pgAdminSearchPath
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database %q: %w", db, err)
	}
	return c, nil
}

func pgIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// scramIterations is PostgreSQL's default (scram_iterations).
const scramIterations = 4096

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for
// pw (RFC 5802/7677, the format of pg_authid.rolpassword). Passwords are
// printable ASCII (validate.DatabasePassword), on which SASLprep, applied by
// every client before SCRAM, changes nothing.
func scramVerifier(pw string, salt []byte, iter int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, pw, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(server)), nil
}

func newScramVerifier(pw string) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return scramVerifier(pw, salt, scramIterations)
}

// scramMatches says whether verifier v was computed from pw.
func scramMatches(v, pw string) bool {
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	iterSalt, _, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	its, saltB64, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return false
	}
	iter, err := strconv.Atoi(its)
	if err != nil || iter < 1 || iter > 1<<20 {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return false
	}
	w, err := scramVerifier(pw, salt, iter)
	return err == nil && subtle.ConstantTimeCompare([]byte(w), []byte(v)) == 1
}

// pgVerifierLiteral quotes a verifier as a string literal after checking
// it has only the characters a verifier has.
func pgVerifierLiteral(v string) (string, error) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("+/=$:-", c) >= 0) {
			return "", errors.New("verifier has unexpected characters")
		}
	}
	return "'" + v + "'", nil
}

func (p *postgres) databaseExists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := p.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up database %q: %w", name, err)
	}
	return ok, nil
}

// ensureDatabase creates the database from template0 in UTF8 and takes the
// default CONNECT and TEMPORARY privileges away from PUBLIC: without that
// every database user of every account could connect to it.
func (p *postgres) ensureDatabase(ctx context.Context, name, _ string) (bool, error) {
	existed, err := p.databaseExists(ctx, name)
	if err != nil || existed {
		return existed, err
	}
	if _, err := p.pool.Exec(ctx, "CREATE DATABASE "+pgIdent(name)+" ENCODING 'UTF8' TEMPLATE template0"); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: created meanwhile
			return true, nil
		}
		return false, fmt.Errorf("create database %q: %w", name, err)
	}
	if _, err := p.pool.Exec(ctx, "REVOKE ALL ON DATABASE "+pgIdent(name)+" FROM PUBLIC"); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = p.pool.Exec(rctx, "DROP DATABASE IF EXISTS "+pgIdent(name))
		return false, fmt.Errorf("create database %q: revoke from PUBLIC: %w", name, err)
	}
	return false, nil
}

func (p *postgres) dropDatabase(ctx context.Context, name string) error {
	// FORCE ends the sessions still connected; they would block the drop.
	if _, err := p.pool.Exec(ctx, "DROP DATABASE IF EXISTS "+pgIdent(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	// Its owner role owned objects only inside it: free now.
	return p.dropOwnerRole(ctx, name)
}

func (p *postgres) dumpCommand(name string) dumpCmd {
	return dumpCmd{
		argv: []string{
			p.paths.PgDump,
			"--host=" + p.paths.PgSocketDir,
			"--port=" + strconv.Itoa(p.paths.PgPort),
			"--username=" + p.user,
			"--no-password",
			"--format=plain",
			"--no-owner", "--no-privileges",
			// The name is validated ([a-z0-9_]): never read as a conninfo string.
			"--dbname=" + name,
		},
		// The password reaches pg_dump through the 0600 pgpass file, never
		// its argv or environment.
		env: []string{"PATH=/usr/bin:/bin", "PGPASSFILE=" + p.cred, "PGCONNECT_TIMEOUT=10"},
	}
}

func (p *postgres) dumpTrailer() string { return "-- PostgreSQL database dump complete" }

func (p *postgres) optimize(ctx context.Context, name string) (int, error) {
	c, err := p.connectDB(ctx, name)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.Background())
	n, err := pgTableCount(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("optimize %q: %w", name, err)
	}
	if _, err := c.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return 0, fmt.Errorf("optimize %q: %w", name, err)
	}
	return n, nil
}

func pgTableCount(ctx context.Context, c *pgx.Conn) (int, error) {
	var n int
	err := c.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`).Scan(&n)
	return n, err
}

func (p *postgres) ensureUser(ctx context.Context, u userSpec, log *slog.Logger) (res *agentpb.DatabaseUserResult, err error) {
	res = &agentpb.DatabaseUserResult{}
	var verifier *string
	err = p.pool.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", u.name).Scan(&verifier)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return res, fmt.Errorf("look up database user %q: %w", u.name, err)
	default:
		res.Existed = true
	}
	created := false
	if !res.Existed || (u.password != "" && (verifier == nil || !scramMatches(*verifier, u.password))) ||
		(u.hash != "" && (verifier == nil || *verifier != u.hash)) {
		if u.password == "" && u.hash == "" {
			return res, fmt.Errorf("create database user %q: a password is required", u.name)
		}
		v := u.hash
		if v == "" {
			if v, err = newScramVerifier(u.password); err != nil {
				return res, fmt.Errorf("database user %q: %w", u.name, err)
			}
		}
		lit, err := pgVerifierLiteral(v)
		if err != nil {
			return res, fmt.Errorf("database user %q: %w", u.name, err)
		}
		if res.Existed {
			if _, err := p.pool.Exec(ctx, "ALTER ROLE "+pgIdent(u.name)+" PASSWORD "+lit); err != nil {
				return res, fmt.Errorf("set password of database user %q: %w", u.name, err)
			}
			res.PasswordChanged = true
		} else {
			if _, err := p.pool.Exec(ctx, "CREATE ROLE "+pgIdent(u.name)+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD "+lit); err != nil {
				return res, fmt.Errorf("create database user %q: %w", u.name, err)
			}
			created = true
		}
	}
	defer func() {
		if err != nil && created {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, derr := p.dropUser(rctx, u.name, u.owner); derr != nil {
				log.Error("roll back created database user", "user", u.name, "err", derr)
			}
		}
	}()

	want := map[string][]string{}
	for _, g := range u.grants {
		if err := checkGrantDB(g.Database, u.owner); err != nil {
			return res, err
		}
		want[g.Database] = g.Privileges
	}
	held := map[string][]string{}
	rows, err := p.pool.Query(ctx, `SELECT d.datname, a.privilege_type FROM pg_database d
		CROSS JOIN LATERAL aclexplode(d.datacl) a
		WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)`, u.name)
	if err != nil {
		return res, fmt.Errorf("read grants of %q: %w", u.name, err)
	}
	for rows.Next() {
		var db, priv string
		if err := rows.Scan(&db, &priv); err != nil {
			rows.Close()
			return res, fmt.Errorf("read grants of %q: %w", u.name, err)
		}
		held[db] = append(held[db], priv)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("read grants of %q: %w", u.name, err)
	}

	dbs := make([]string, 0, len(want)+len(held))
	for d := range want {
		dbs = append(dbs, d)
	}
	for d := range held {
		if _, ok := want[d]; !ok {
			dbs = append(dbs, d)
		}
	}
	slices.Sort(dbs)
	for _, d := range dbs {
		w, h := want[d], held[d]
		var add, drop []string
		for _, x := range w {
			if !slices.Contains(h, x) {
				add = append(add, x)
			}
		}
		for _, x := range h {
			if !slices.Contains(w, x) {
				if !slices.Contains(validate.DatabasePrivilegeNames(validate.EnginePostgreSQL), x) {
					return res, fmt.Errorf("revoke on %q: unexpected privilege %q", d, x)
				}
				drop = append(drop, x)
			}
		}
		if len(add) > 0 {
			if _, err := p.pool.Exec(ctx, "GRANT "+strings.Join(add, ", ")+" ON DATABASE "+pgIdent(d)+" TO "+pgIdent(u.name)); err != nil {
				return res, fmt.Errorf("grant on %q to %q: %w", d, u.name, err)
			}
		}
		if len(drop) > 0 {
			if _, err := p.pool.Exec(ctx, "REVOKE "+strings.Join(drop, ", ")+" ON DATABASE "+pgIdent(d)+" FROM "+pgIdent(u.name)); err != nil {
				return res, fmt.Errorf("revoke on %q from %q: %w", d, u.name, err)
			}
		}
		// CREATE on the database lets a user make schemas; to make tables
		// in the default schema it needs CREATE on "public" (PostgreSQL 15
		// no longer grants that to PUBLIC). The two are kept together.
		if slices.Contains(w, "CREATE") != slices.Contains(h, "CREATE") || slices.Contains(w, "CREATE") {
			if err := p.convergeSchemaCreate(ctx, d, u.name, slices.Contains(w, "CREATE")); err != nil {
				return res, err
			}
		}
	}
	res.Hosts, res.Grants = u.hosts, u.grants
	if created || res.PasswordChanged {
		log.Info("database user ensured", "user", u.name, "created", created, "passwordChanged", res.PasswordChanged)
	}
	return res, nil
}

func (p *postgres) convergeSchemaCreate(ctx context.Context, db, user string, want bool) error {
	c, err := p.connectDB(ctx, db)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	var has bool
	err = c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
		WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE'
		  AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1))`, user).Scan(&has)
	if err != nil {
		return fmt.Errorf("read schema grants of %q in %q: %w", user, db, err)
	}
	switch {
	case want && !has:
		_, err = c.Exec(ctx, "GRANT CREATE ON SCHEMA public TO "+pgIdent(user))
	case !want && has:
		_, err = c.Exec(ctx, "REVOKE CREATE ON SCHEMA public FROM "+pgIdent(user))
	}
	if err != nil {
		return fmt.Errorf("schema grant of %q in %q: %w", user, db, err)
	}
	return nil
}

// dropUser removes the role. Objects it owns in a database are handed to
// that database's owner role first (REASSIGN OWNED, run inside each
// database the role has dependencies in), so dropping a user never drops
// a customer's tables — and never hands them to the superuser admin, as
// whom its SECURITY DEFINER functions, views and rules would then run
// (see pgOwnerRole). DROP OWNED then removes its remaining privileges.
func (p *postgres) dropUser(ctx context.Context, name, _ string) (bool, error) {
	var exists bool
	if err := p.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up database user %q: %w", name, err)
	}
	if !exists {
		return false, nil
	}
	dbs, err := p.roleDatabases(ctx, name)
	if err != nil {
		return true, fmt.Errorf("drop database user %q: %w", name, err)
	}
	for _, d := range dbs {
		// In the maintenance database a tenant has no CREATE (nor on its
		// schema public): nothing of a customer's to keep, only temporary
		// objects of its sessions, and the privileges on shared objects
		// (its databases' grants) that DROP OWNED run there revokes.
		// Whatever else it owned there goes with it rather than to a role.
		q := "DROP OWNED BY " + pgIdent(name)
		if d != pgMaintenanceDB {
			owner, err := p.ensureOwnerRole(ctx, d)
			if err != nil {
				return true, fmt.Errorf("drop database user %q: %w", name, err)
			}
			q = "REASSIGN OWNED BY " + pgIdent(name) + " TO " + pgIdent(owner) + "; " + q
		}
		c, err := p.connectDB(ctx, d)
		if err != nil {
			return true, fmt.Errorf("drop database user %q: %w", name, err)
		}
		_, err = c.Exec(ctx, q)
		c.Close(context.Background())
		if err != nil {
			return true, fmt.Errorf("drop database user %q: in %q: %w", name, d, err)
		}
	}
	if _, err := p.pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgIdent(name)); err != nil {
		return true, fmt.Errorf("drop database user %q: %w", name, err)
	}
	return true, nil
}

// users lists the owner's database users (roles).
func (p *postgres) users(ctx context.Context, owner string) ([]string, error) {
	rows, err := p.pool.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname`, owner+`\_%`)
	if err != nil {
		return nil, fmt.Errorf("list database users of %q: %w", owner, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list database users of %q: %w", owner, err)
	}
	out := names[:0]
	for _, n := range names {
		if validate.DatabaseUser(n, owner) == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// list reports the owner's databases: pg_database_size and, from inside
// each database, its table count (PostgreSQL has no cross-database catalog
// of tables, so this costs one connection per database).
func (p *postgres) list(ctx context.Context, owner string) ([]*agentpb.DatabaseInfo, error) {
	rows, err := p.pool.Query(ctx, `SELECT d.datname, pg_database_size(d.oid),
		COALESCE((SELECT array_agg(DISTINCT r.rolname ORDER BY r.rolname) FROM aclexplode(d.datacl) a
		          JOIN pg_roles r ON r.oid = a.grantee WHERE r.oid <> d.datdba), '{}')
		FROM pg_database d WHERE d.datname LIKE $1 AND NOT d.datistemplate ORDER BY d.datname`, owner+`\_%`)
	if err != nil {
		return nil, fmt.Errorf("list databases of %q: %w", owner, err)
	}
	var out []*agentpb.DatabaseInfo
	for rows.Next() {
		d := &agentpb.DatabaseInfo{Engine: validate.EnginePostgreSQL}
		if err := rows.Scan(&d.Name, &d.SizeBytes, &d.Users); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list databases of %q: %w", owner, err)
		}
		if validate.DatabaseName(d.Name, owner) == nil {
			out = append(out, d)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list databases of %q: %w", owner, err)
	}
	for i := range out {
		c, err := p.connectDB(ctx, out[i].Name)
		if err != nil {
			return nil, err
		}
		n, err := pgTableCount(ctx, c)
		c.Close(context.Background())
		if err != nil {
			return nil, fmt.Errorf("count tables of %q: %w", out[i].Name, err)
		}
		out[i].Tables = int32(n)
	}
	return out, nil
}
