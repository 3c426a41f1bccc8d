package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Objects inside a tenant's PostgreSQL database are never owned by a
// superuser: owned by one, a SECURITY DEFINER function, a view (which
// reads its tables with its owner's privileges: a view over pg_authid), a
// rule or a trigger of the tenant's would run as a superuser. What no
// database user of the tenant owns — what a migration's dump made, what
// a dropped user owned — belongs instead to the database's owner role:
// NOLOGIN, no superuser and no other attribute, a member of nothing, one
// per database. Its name has a '-', which validate.DatabaseUser never
// lets a tenant's role name have, so a tenant can neither create nor
// become it. The superuser admin can still GRANT on its objects as on its
// own, and a database user holding ALL on the database reaches them by
// the grants the imports give (grantImported) or its own GRANTs.
func pgOwnerRole(db string) string {
	h := sha256.Sum256([]byte(db))
	return "np-owner-" + hex.EncodeToString(h[:8])
}

// ensureOwnerRole creates database db's owner role if it does not exist
// (and takes back any attribute it may have been given) and returns its
// name.
func (p *postgres) ensureOwnerRole(ctx context.Context, db string) (string, error) {
	role := pgOwnerRole(db)
	const attrs = " NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
	_, err := p.pool.Exec(ctx, "CREATE ROLE "+pgIdent(role)+attrs)
	var pe *pgconn.PgError
	// duplicate_object; unique_violation when made concurrently.
	if errors.As(err, &pe) && (pe.Code == "42710" || pe.Code == "23505") {
		_, err = p.pool.Exec(ctx, "ALTER ROLE "+pgIdent(role)+attrs)
	}
	if err != nil {
		return "", fmt.Errorf("owner role of database %q: %w", db, err)
	}
	return role, nil
}

// dropOwnerRole drops database db's owner role, if any, once db is gone:
// it owned objects only inside db. What still depends on it elsewhere can
// only be privileges someone granted to it in another database (any role
// name can be a grantee); they are dropped with it, so a grant cannot
// keep the role alive.
func (p *postgres) dropOwnerRole(ctx context.Context, db string) error {
	role := pgOwnerRole(db)
	_, err := p.pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgIdent(role))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "2BP01" { // dependent_objects_still_exist
		if err != nil {
			return fmt.Errorf("drop the owner role of database %q: %w", db, err)
		}
		return nil
	}
	dbs, err := p.roleDatabases(ctx, role)
	if err != nil {
		return fmt.Errorf("drop the owner role of database %q: %w", db, err)
	}
	for _, d := range dbs {
		c, err := p.connectDB(ctx, d)
		if err != nil {
			return fmt.Errorf("drop the owner role of database %q: %w", db, err)
		}
		_, err = c.Exec(ctx, "DROP OWNED BY "+pgIdent(role))
		c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("drop the owner role of database %q: in %q: %w", db, d, err)
		}
	}
	if _, err := p.pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgIdent(role)); err != nil {
		return fmt.Errorf("drop the owner role of database %q: %w", db, err)
	}
	return nil
}

// roleDatabases lists the databases role has dependencies in, and the
// maintenance database (where DROP OWNED also drops its privileges on
// shared objects).
func (p *postgres) roleDatabases(ctx context.Context, role string) ([]string, error) {
	rows, err := p.pool.Query(ctx, `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
		ORDER BY 1`, role)
	if err != nil {
		return nil, err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if !slices.Contains(dbs, pgMaintenanceDB) {
		dbs = append(dbs, pgMaintenanceDB)
	}
	return dbs, nil
}
