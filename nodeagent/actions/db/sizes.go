package db

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/validate"
)

// DatabaseSize is one database of the node and the bytes it takes.
type DatabaseSize struct {
	Engine, Name string // engine is validate.EngineMariaDB or EnginePostgreSQL
	Bytes        int64
}

// Sizes reports every non-system database of the engines this node runs
// (as Setup decides), through the module's cached admin connections; an
// engine that does not answer is an error, and the other's sizes are
// still returned. It is for the metrics collector,
// which caches it: the MariaDB query reads the metadata of every table.
func (m *Module) Sizes(ctx context.Context, env *actions.Env) ([]DatabaseSize, error) {
	if env == nil || env.Profile == nil || !slices.Contains(env.Modules, ModuleName) {
		return nil, nil
	}
	var out []DatabaseSize
	var errs []error
	for _, name := range []string{validate.EngineMariaDB, validate.EnginePostgreSQL} {
		if name == validate.EnginePostgreSQL {
			// Setup runs PostgreSQL only where its admin credentials exist.
			if ok, _ := fileExists(postgresCredPath(env, env.Profile.DB())); !ok {
				continue
			}
		}
		e, err := m.engineFor(ctx, env, name)
		if errors.Is(err, ErrEngineUnavailable) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var s []DatabaseSize
		switch e := e.(type) {
		case *mariadb:
			s, err = e.sizes(ctx)
		case *postgres:
			s, err = e.sizes(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s database sizes: %w", name, err))
		}
		out = append(out, s...)
	}
	return out, errors.Join(errs...)
}

// sizes: data and index lengths as in list, for every schema at once.
func (m *mariadb) sizes(ctx context.Context) ([]DatabaseSize, error) {
	rows, err := m.db.QueryContext(ctx, `SELECT s.SCHEMA_NAME, COALESCE(SUM(t.DATA_LENGTH + t.INDEX_LENGTH), 0)
		FROM information_schema.SCHEMATA s LEFT JOIN information_schema.TABLES t
		  ON t.TABLE_SCHEMA = s.SCHEMA_NAME AND t.TABLE_TYPE = 'BASE TABLE'
		WHERE s.SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
		GROUP BY s.SCHEMA_NAME ORDER BY s.SCHEMA_NAME`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DatabaseSize
	for rows.Next() {
		d := DatabaseSize{Engine: validate.EngineMariaDB}
		if err := rows.Scan(&d.Name, &d.Bytes); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (p *postgres) sizes(ctx context.Context) ([]DatabaseSize, error) {
	rows, err := p.pool.Query(ctx, `SELECT datname, pg_database_size(oid) FROM pg_database
		WHERE NOT datistemplate AND datname <> $1 ORDER BY datname`, pgMaintenanceDB)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DatabaseSize, error) {
		d := DatabaseSize{Engine: validate.EnginePostgreSQL}
		err := r.Scan(&d.Name, &d.Bytes)
		return d, err
	})
}
