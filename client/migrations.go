package client

import (
	"context"
	"encoding/json"
	"time"
)

// Migration mirrors the GraphQL Migration type.
type Migration struct {
	ID                string          `json:"id"`
	Account           string          `json:"account"`
	AccountID         string          `json:"accountId"`
	FromNode          string          `json:"fromNode"`
	ToNode            *string         `json:"toNode"`
	Status            string          `json:"status"`
	Steps             []MigrationStep `json:"steps"`
	DowntimeMs        *int64          `json:"downtimeMs"`
	Error             *string         `json:"error"`
	Schedule          *time.Time      `json:"schedule"`
	Drain             *string         `json:"drain"`
	FromBackup        bool            `json:"fromBackup"`
	CancelRequested   bool            `json:"cancelRequested"`
	RollbackRequested bool            `json:"rollbackRequested"`
	FinalizeAfter     *time.Time      `json:"finalizeAfter"`
	FinalizedAt       *time.Time      `json:"finalizedAt"`
	CreatedAt         time.Time       `json:"createdAt"`
	UpdatedAt         time.Time       `json:"updatedAt"`
}

// MigrationStep is one step of a migration.
type MigrationStep struct {
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	Node       *string    `json:"node"`
	StartedAt  *time.Time `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	Bytes      int64      `json:"bytes"`
	Error      *string    `json:"error"`
}

// AtRest reports whether nothing more happens to m without a request:
// finished, or DONE waiting for its finalize or a rollback.
func (m *Migration) AtRest() bool {
	switch m.Status {
	case "DONE":
		return !m.RollbackRequested
	case "FAILED", "CANCELLED", "ROLLED_BACK":
		return true
	}
	return false
}

// MigrateAccountInput mirrors the GraphQL input.
type MigrateAccountInput struct {
	Account  string     `json:"account"`
	ToNode   string     `json:"toNode,omitempty"`
	Schedule *time.Time `json:"schedule,omitempty"`
}

// MigrationFilter mirrors the GraphQL filter; empty fields match all.
type MigrationFilter struct {
	Account string `json:"account,omitempty"`
	Node    string `json:"node,omitempty"`
	Status  string `json:"status,omitempty"`
	Drain   string `json:"drain,omitempty"`
}

const migrationFields = `id account accountId fromNode toNode status downtimeMs error schedule drain fromBackup
cancelRequested rollbackRequested finalizeAfter finalizedAt createdAt updatedAt
steps{name status node startedAt finishedAt bytes error}`

// MigrateAccount starts moving an account to another node.
func (c *Client) MigrateAccount(ctx context.Context, in MigrateAccountInput) (*Migration, error) {
	var out struct{ MigrateAccount Migration }
	err := c.Do(ctx, `mutation($in:MigrateAccountInput!){migrateAccount(input:$in){`+migrationFields+`}}`, map[string]any{"in": in}, &out)
	if err != nil {
		return nil, err
	}
	return &out.MigrateAccount, nil
}

// MigrationAction runs cancelMigration, rollbackMigration or
// finalizeMigration.
func (c *Client) MigrationAction(ctx context.Context, mutation, id string) (*Migration, error) {
	var out map[string]Migration
	err := c.Do(ctx, `mutation($id:ID!){r:`+mutation+`(id:$id){`+migrationFields+`}}`, map[string]any{"id": id}, &out)
	if err != nil {
		return nil, err
	}
	m := out["r"]
	return &m, nil
}

// Migration returns one migration, nil when there is none the caller
// may see.
func (c *Client) Migration(ctx context.Context, id string) (*Migration, error) {
	var out struct{ Migration *Migration }
	err := c.Do(ctx, `query($id:ID!){migration(id:$id){`+migrationFields+`}}`, map[string]any{"id": id}, &out)
	return out.Migration, err
}

// Migrations returns one page of migrations and the cursor for the next
// ("" at the end).
func (c *Client) Migrations(ctx context.Context, f MigrationFilter, first int, after string) ([]Migration, string, error) {
	var out struct {
		Migrations struct {
			Edges []struct {
				Node Migration `json:"node"`
			} `json:"edges"`
			PageInfo struct {
				HasNextPage bool    `json:"hasNextPage"`
				EndCursor   *string `json:"endCursor"`
			} `json:"pageInfo"`
		}
	}
	vars := map[string]any{"f": f, "n": first}
	if after != "" {
		vars["a"] = after
	}
	err := c.Do(ctx, `query($f:MigrationFilter,$n:Int,$a:String){migrations(filter:$f,first:$n,after:$a){edges{node{`+migrationFields+`}} pageInfo{hasNextPage endCursor}}}`, vars, &out)
	if err != nil {
		return nil, "", err
	}
	ms := make([]Migration, 0, len(out.Migrations.Edges))
	for _, e := range out.Migrations.Edges {
		ms = append(ms, e.Node)
	}
	next := ""
	if out.Migrations.PageInfo.HasNextPage && out.Migrations.PageInfo.EndCursor != nil {
		next = *out.Migrations.PageInfo.EndCursor
	}
	return ms, next, nil
}

// MigrationEvents follows a migration: its state now, then each change,
// until it is at rest.
func (c *Client) MigrationEvents(ctx context.Context, id string) (<-chan Migration, error) {
	raw, err := c.Subscribe(ctx, `subscription($id:ID!){migrationEvents(id:$id){`+migrationFields+`}}`, map[string]any{"id": id})
	if err != nil {
		return nil, err
	}
	out := make(chan Migration)
	go func() {
		defer close(out)
		for data := range raw {
			var d struct{ MigrationEvents Migration }
			if json.Unmarshal(data, &d) != nil {
				return
			}
			select {
			case out <- d.MigrationEvents:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// DrainNodeMigrate drains a node and moves every account off it,
// parallel at a time.
func (c *Client) DrainNodeMigrate(ctx context.Context, node string, parallel int) error {
	return c.Do(ctx, `mutation($n:String!,$p:Int){drainNode(name:$n,migrate:true,parallel:$p){name}}`, map[string]any{"n": node, "p": parallel}, nil)
}
