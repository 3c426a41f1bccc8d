package client

import (
	"context"
	"strings"
	"time"
)

// Database mirrors the GraphQL Database type.
type Database struct {
	Name      string   `json:"name"`
	Engine    string   `json:"engine"`
	State     string   `json:"state"`
	Reason    *string  `json:"reason"`
	SizeBytes *int64   `json:"sizeBytes"`
	Tables    *int     `json:"tables"`
	Users     []string `json:"users"`
	Live      bool     `json:"live"`
	// MeasuredAt is when the node reported size, tables and users.
	MeasuredAt *time.Time `json:"measuredAt"`
	CreatedAt  time.Time  `json:"createdAt"`
}

// DatabaseGrant is the privileges a user holds on one database.
type DatabaseGrant struct {
	Database   string   `json:"database"`
	Privileges []string `json:"privileges"`
}

// DatabaseUser mirrors the GraphQL DatabaseUser type.
type DatabaseUser struct {
	Name      string          `json:"name"`
	Engine    string          `json:"engine"`
	State     string          `json:"state"`
	Reason    *string         `json:"reason"`
	Grants    []DatabaseGrant `json:"grants"`
	CreatedAt time.Time       `json:"createdAt"`
}

// DatabaseUserPayload is a user after a change; Password is set only when
// the server generated it, and is shown this once.
type DatabaseUserPayload struct {
	User     DatabaseUser `json:"user"`
	Password *string      `json:"password"`
}

// DeletedDatabase is what deleteDatabase returns.
type DeletedDatabase struct {
	Name      string  `json:"name"`
	State     string  `json:"state"`
	Reason    *string `json:"reason"`
	Dump      *string `json:"dump"`
	DumpBytes *int64  `json:"dumpBytes"`
}

// DeletedDatabaseUser is what deleteDatabaseUser returns.
type DeletedDatabaseUser struct {
	Name   string  `json:"name"`
	State  string  `json:"state"`
	Reason *string `json:"reason"`
}

// OptimizedDatabase is what optimizeDatabase returns.
type OptimizedDatabase struct {
	Name   string  `json:"name"`
	Status string  `json:"status"`
	Tables *int    `json:"tables"`
	Reason *string `json:"reason"`
}

const (
	databaseFields = `name engine state reason sizeBytes tables users live measuredAt createdAt`
	dbUserFields   = `name engine state reason grants{database privileges} createdAt`
)

func optional(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Databases lists an account's databases with sizes from the node's last report.
func (c *Client) Databases(ctx context.Context, account string) ([]Database, error) {
	var out struct{ Databases []Database }
	err := c.Do(ctx, `query($a:ID!){databases(account:$a){`+databaseFields+`}}`, map[string]any{"a": account}, &out)
	return out.Databases, err
}

// DatabaseUsers lists an account's database users and their grants.
func (c *Client) DatabaseUsers(ctx context.Context, account string) ([]DatabaseUser, error) {
	var out struct{ DatabaseUsers []DatabaseUser }
	err := c.Do(ctx, `query($a:ID!){databaseUsers(account:$a){`+dbUserFields+`}}`, map[string]any{"a": account}, &out)
	return out.DatabaseUsers, err
}

// CreateDatabase creates <username>_<name>; engine "" is MariaDB, else
// "mariadb" or "postgresql" (any case).
func (c *Client) CreateDatabase(ctx context.Context, account, name, engine string) (*Database, error) {
	var out struct{ CreateDatabase Database }
	err := c.Do(ctx, `mutation($a:ID!,$n:String!,$e:DatabaseEngine){createDatabase(account:$a,name:$n,engine:$e){`+databaseFields+`}}`,
		map[string]any{"a": account, "n": name, "e": optional(strings.ToUpper(engine))}, &out)
	if err != nil {
		return nil, err
	}
	return &out.CreateDatabase, nil
}

// DeleteDatabase dumps and drops a database (full name).
func (c *Client) DeleteDatabase(ctx context.Context, account, name string) (*DeletedDatabase, error) {
	var out struct{ DeleteDatabase DeletedDatabase }
	err := c.Do(ctx, `mutation($a:ID!,$n:String!){deleteDatabase(account:$a,name:$n){name state reason dump dumpBytes}}`,
		map[string]any{"a": account, "n": name}, &out)
	if err != nil {
		return nil, err
	}
	return &out.DeleteDatabase, nil
}

// CreateDatabaseUser creates <username>_<name>; password "" has the server
// generate one, returned in the payload.
func (c *Client) CreateDatabaseUser(ctx context.Context, account, name, password, engine string) (*DatabaseUserPayload, error) {
	var out struct{ CreateDatabaseUser DatabaseUserPayload }
	err := c.Do(ctx, `mutation($a:ID!,$n:String!,$p:String,$e:DatabaseEngine){createDatabaseUser(account:$a,name:$n,password:$p,engine:$e){user{`+dbUserFields+`} password}}`,
		map[string]any{"a": account, "n": name, "p": optional(password), "e": optional(strings.ToUpper(engine))}, &out)
	if err != nil {
		return nil, err
	}
	return &out.CreateDatabaseUser, nil
}

// DeleteDatabaseUser drops a database user (full name).
func (c *Client) DeleteDatabaseUser(ctx context.Context, account, name string) (*DeletedDatabaseUser, error) {
	var out struct{ DeleteDatabaseUser DeletedDatabaseUser }
	err := c.Do(ctx, `mutation($a:ID!,$n:String!){deleteDatabaseUser(account:$a,name:$n){name state reason}}`,
		map[string]any{"a": account, "n": name}, &out)
	if err != nil {
		return nil, err
	}
	return &out.DeleteDatabaseUser, nil
}

// SetDatabasePrivileges sets exactly the privileges user holds on database;
// none revokes them all.
func (c *Client) SetDatabasePrivileges(ctx context.Context, account, database, user string, privileges []string) (*DatabaseUser, error) {
	if privileges == nil {
		privileges = []string{}
	}
	var out struct{ SetDatabasePrivileges DatabaseUser }
	err := c.Do(ctx, `mutation($a:ID!,$d:String!,$u:String!,$p:[String!]!){setDatabasePrivileges(account:$a,database:$d,user:$u,privileges:$p){`+dbUserFields+`}}`,
		map[string]any{"a": account, "d": database, "u": user, "p": privileges}, &out)
	if err != nil {
		return nil, err
	}
	return &out.SetDatabasePrivileges, nil
}

// ChangeDatabaseUserPassword sets a user's password; "" has the server
// generate one, returned in the payload.
func (c *Client) ChangeDatabaseUserPassword(ctx context.Context, account, user, password string) (*DatabaseUserPayload, error) {
	var out struct{ ChangeDatabaseUserPassword DatabaseUserPayload }
	err := c.Do(ctx, `mutation($a:ID!,$u:String!,$p:String){changeDatabaseUserPassword(account:$a,user:$u,password:$p){user{`+dbUserFields+`} password}}`,
		map[string]any{"a": account, "u": user, "p": optional(password)}, &out)
	if err != nil {
		return nil, err
	}
	return &out.ChangeDatabaseUserPassword, nil
}

// OptimizeDatabase optimizes a database's tables.
func (c *Client) OptimizeDatabase(ctx context.Context, account, name string) (*OptimizedDatabase, error) {
	var out struct{ OptimizeDatabase OptimizedDatabase }
	err := c.Do(ctx, `mutation($a:ID!,$n:String!){optimizeDatabase(account:$a,name:$n){name status tables reason}}`,
		map[string]any{"a": account, "n": name}, &out)
	if err != nil {
		return nil, err
	}
	return &out.OptimizeDatabase, nil
}
