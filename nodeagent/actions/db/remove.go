package db

import (
	"context"
	"fmt"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// RemoveOwner drops every database and database user of an account on
// every engine the node runs, each database dumped into the account's
// backup area first (as DropDatabase does). The account action calls it
// when the account is deleted, before its Unix user goes: a database user
// left behind could still log in, and a new account reusing the name would
// find the old databases. Engines the node does not run are skipped.
func RemoveOwner(ctx context.Context, env *actions.Env, owner string) (dumps []string, err error) {
	if owner == "" || strings.ContainsAny(owner, `_%\`) {
		return nil, fmt.Errorf("remove databases: %q is not an account name", owner)
	}
	for _, engineName := range runningEngines(env) {
		e, _, unlock, err := begin(ctx, env, engineName, "")
		if err != nil {
			return dumps, fmt.Errorf("remove databases of %q: %w", owner, err)
		}
		unlock()
		dbs, err := e.list(ctx, owner)
		if err != nil {
			return dumps, err
		}
		for _, d := range dbs {
			res, err := (&DropDatabase{target{d.Name, owner, engineName}}).Apply(ctx, env)
			if err != nil {
				return dumps, err
			}
			if r, ok := res.(*agentpb.DatabaseResult); ok && r.Dump != "" {
				dumps = append(dumps, r.Dump)
			}
		}
		users, err := e.users(ctx, owner)
		if err != nil {
			return dumps, err
		}
		for _, u := range users {
			if _, err := (&DropDatabaseUser{target{u, owner, engineName}}).Apply(ctx, env); err != nil {
				return dumps, err
			}
		}
	}
	return dumps, nil
}

// runningEngines lists the engines whose daemon the agent reports running.
func runningEngines(env *actions.Env) []string {
	if env.Services == nil {
		return nil
	}
	var out []string
	for _, st := range env.Services.Status() {
		switch st.Name {
		case validate.EngineMariaDB, validate.EnginePostgreSQL:
			out = append(out, st.Name)
		}
	}
	return out
}
