// Package db implements the database actions: per-account databases and
// database users on the node's MariaDB (the default engine) and, where it is
// installed, PostgreSQL.
//
// Every database and user belongs to one account, the owner, and is named
// "<owner>_<suffix>" (validate.DatabaseName). The owner is the boundary: a
// user can be granted on its owner's databases only, which Validate checks
// and Apply checks again before any statement is sent.
//
// The agent logs in over the servers' unix sockets with its own admin
// account (credentials in a 0600 file, see Module). Identifiers are
// validated and then quoted; values are bound as parameters wherever the
// server takes them. Passwords never reach the server: the agent computes
// the server's hash itself (mysql_native_password for MariaDB, a
// SCRAM-SHA-256 verifier for PostgreSQL) and sends only that, so no
// password can appear in a server log, a process list or an error.
package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Action names, as in metrics and logs.
const (
	EnsureDatabaseName     = "ensure_database"
	DropDatabaseName       = "drop_database"
	EnsureDatabaseUserName = "ensure_database_user"
	DropDatabaseUserName   = "drop_database_user"
	OptimizeDatabaseName   = "optimize_database"
	ListDatabasesName      = "list_databases"
)

// DefaultCharset is a MariaDB database's character set when none is given.
const DefaultCharset = "utf8mb4"

// MaxGrants bounds the grants of one database user.
const MaxGrants = 256

// mariadbCharsets are the character sets a database may be created with.
var mariadbCharsets = []string{"utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary"}

// ErrEngineUnavailable is returned for an action on an engine this node
// does not run.
var ErrEngineUnavailable = actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "database engine not available on this node")

// ErrForeignDatabase is returned for a grant on a database of another
// account.
var ErrForeignDatabase = errors.New("database belongs to another account")

func engineName(e agentpb.DatabaseEngine) string {
	switch e {
	case agentpb.DatabaseEngine_DATABASE_ENGINE_UNSPECIFIED, agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB:
		return validate.EngineMariaDB
	case agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL:
		return validate.EnginePostgreSQL
	}
	return e.String()
}

// target is what every database-scoped action carries.
type target struct {
	// Object is the database's (or the database user's) full name.
	Object string
	Owner  string
	Engine string // validate.EngineMariaDB or validate.EnginePostgreSQL

	m *Module // the module the action was built by
}

func (t target) validateDB() error {
	if err := validate.Engine(t.Engine); err != nil {
		return err
	}
	return validate.DatabaseName(t.Object, t.Owner)
}

// EnsureDatabase creates a database if it is missing.
type EnsureDatabase struct {
	target
	Charset string
}

// DropDatabase dumps a database into its owner's backup area, verifies the
// dump and drops the database.
type DropDatabase struct{ target }

// OptimizeDatabase defragments and re-analyses a database's tables.
type OptimizeDatabase struct{ target }

// EnsureDatabaseUser converges a database user's hosts, password and grants.
type EnsureDatabaseUser struct {
	target
	// Password is secret: it is never logged, echoed or put in errors.
	// Empty keeps an existing user's password.
	Password string
	// SealedPassword is the password sealed to the node's key (the form
	// the control plane sends); Apply unseals it with env.Unseal and uses
	// it as Password.
	SealedPassword []byte
	// SealedPasswordHash is a hash made elsewhere, sealed to the node's
	// key; Apply installs it as the user's stored password.
	SealedPasswordHash []byte
	Hosts              []string
	Grants             []*agentpb.DatabaseGrant
}

// DropDatabaseUser removes a database user.
type DropDatabaseUser struct{ target }

// ListDatabases reports an account's databases.
type ListDatabases struct {
	Owner  string
	Engine string

	m *Module
}

var (
	_ actions.Action = (*EnsureDatabase)(nil)
	_ actions.Action = (*DropDatabase)(nil)
	_ actions.Action = (*OptimizeDatabase)(nil)
	_ actions.Action = (*EnsureDatabaseUser)(nil)
	_ actions.Action = (*DropDatabaseUser)(nil)
	_ actions.Action = (*ListDatabases)(nil)
)

// NewEnsureDatabase builds the action from its wire form.
func (m *Module) NewEnsureDatabase(req *agentpb.EnsureDatabaseAction) *EnsureDatabase {
	return &EnsureDatabase{target: target{req.GetName(), req.GetOwner(), engineName(req.GetEngine()), m}, Charset: req.GetCharset()}
}

// NewDropDatabase builds the action from its wire form.
func (m *Module) NewDropDatabase(req *agentpb.DropDatabaseAction) *DropDatabase {
	return &DropDatabase{target{req.GetName(), req.GetOwner(), engineName(req.GetEngine()), m}}
}

// NewOptimizeDatabase builds the action from its wire form.
func (m *Module) NewOptimizeDatabase(req *agentpb.OptimizeDatabaseAction) *OptimizeDatabase {
	return &OptimizeDatabase{target{req.GetName(), req.GetOwner(), engineName(req.GetEngine()), m}}
}

// NewEnsureDatabaseUser builds the action from its wire form.
func (m *Module) NewEnsureDatabaseUser(req *agentpb.EnsureDatabaseUserAction) *EnsureDatabaseUser {
	a := &EnsureDatabaseUser{
		target:             target{req.GetName(), req.GetOwner(), engineName(req.GetEngine()), m},
		Password:           req.GetPassword(),
		SealedPassword:     slices.Clone(req.GetSealedPassword()),
		SealedPasswordHash: slices.Clone(req.GetSealedPasswordHash()),
		Hosts:              slices.Clone(req.GetHosts()),
	}
	for _, g := range req.GetGrants() {
		a.Grants = append(a.Grants, &agentpb.DatabaseGrant{Database: g.GetDatabase(), Privileges: slices.Clone(g.GetPrivileges())})
	}
	return a
}

// NewDropDatabaseUser builds the action from its wire form.
func (m *Module) NewDropDatabaseUser(req *agentpb.DropDatabaseUserAction) *DropDatabaseUser {
	return &DropDatabaseUser{target{req.GetName(), req.GetOwner(), engineName(req.GetEngine()), m}}
}

// NewListDatabases builds the action from its wire form.
func (m *Module) NewListDatabases(req *agentpb.ListDatabasesAction) *ListDatabases {
	return &ListDatabases{Owner: req.GetUsername(), Engine: engineName(req.GetEngine()), m: m}
}

// Name implements actions.Action.
func (a *EnsureDatabase) Name() string { return EnsureDatabaseName }

// Name implements actions.Action.
func (a *DropDatabase) Name() string { return DropDatabaseName }

// Name implements actions.Action.
func (a *OptimizeDatabase) Name() string { return OptimizeDatabaseName }

// Name implements actions.Action.
func (a *EnsureDatabaseUser) Name() string { return EnsureDatabaseUserName }

// Name implements actions.Action.
func (a *DropDatabaseUser) Name() string { return DropDatabaseUserName }

// Name implements actions.Action.
func (a *ListDatabases) Name() string { return ListDatabasesName }

// Validate implements actions.Action.
func (a *EnsureDatabase) Validate() error {
	if err := a.validateDB(); err != nil {
		return err
	}
	if a.Charset != "" {
		if a.Engine == validate.EnginePostgreSQL {
			if a.Charset != "UTF8" && a.Charset != "utf8" {
				return fmt.Errorf("charset %q: PostgreSQL databases are UTF8", a.Charset)
			}
		} else if !slices.Contains(mariadbCharsets, a.Charset) {
			return fmt.Errorf("charset %q is not one of %v", a.Charset, mariadbCharsets)
		}
	}
	return nil
}

// Validate implements actions.Action.
func (a *DropDatabase) Validate() error { return a.validateDB() }

// Validate implements actions.Action.
func (a *OptimizeDatabase) Validate() error { return a.validateDB() }

// Validate implements actions.Action.
func (a *DropDatabaseUser) Validate() error {
	if err := validate.Engine(a.Engine); err != nil {
		return err
	}
	return validate.DatabaseUser(a.Object, a.Owner)
}

// Validate implements actions.Action.
func (a *ListDatabases) Validate() error {
	if err := validate.Engine(a.Engine); err != nil {
		return err
	}
	// The owner shape is all that matters: it becomes a LIKE prefix.
	return validate.DatabaseName(a.Owner+"_x", a.Owner)
}

// Validate implements actions.Action. Errors never contain the password.
func (a *EnsureDatabaseUser) Validate() error {
	_, _, err := a.normalize()
	return err
}

// normalize validates the action and returns its hosts (localhost first,
// canonical, without repeats) and grants (canonical privileges, sorted by
// database).
func (a *EnsureDatabaseUser) normalize() ([]string, []*agentpb.DatabaseGrant, error) {
	if err := validate.Engine(a.Engine); err != nil {
		return nil, nil, err
	}
	if err := validate.DatabaseUser(a.Object, a.Owner); err != nil {
		return nil, nil, err
	}
	if a.Password != "" && len(a.SealedPassword) > 0 {
		return nil, nil, errors.New("password: give either password or sealed_password, not both")
	}
	if len(a.SealedPasswordHash) > maxSealedHash {
		return nil, nil, fmt.Errorf("sealed_password_hash: %d bytes; at most %d", len(a.SealedPasswordHash), maxSealedHash)
	}
	if len(a.SealedPasswordHash) > 0 && (a.Password != "" || len(a.SealedPassword) > 0) {
		return nil, nil, errors.New("password: give one of password, sealed_password and sealed_password_hash")
	}
	if a.Password != "" {
		if err := validate.DatabasePassword(a.Password, a.Object); err != nil {
			return nil, nil, err
		}
	}
	if len(a.Hosts) > validate.MaxDatabaseHosts {
		return nil, nil, fmt.Errorf("hosts: %d given; at most %d", len(a.Hosts), validate.MaxDatabaseHosts)
	}
	hosts := []string{"localhost"}
	for _, h := range a.Hosts {
		c, err := validate.DatabaseHost(h)
		if err != nil {
			return nil, nil, err
		}
		if c != "localhost" && a.Engine == validate.EnginePostgreSQL {
			return nil, nil, fmt.Errorf("hosts: PostgreSQL users log in over the local socket only; %q is not possible", h)
		}
		if !slices.Contains(hosts, c) {
			hosts = append(hosts, c)
		}
	}
	if len(a.Grants) > MaxGrants {
		return nil, nil, fmt.Errorf("grants: %d given; at most %d", len(a.Grants), MaxGrants)
	}
	grants := make([]*agentpb.DatabaseGrant, 0, len(a.Grants))
	seen := map[string]bool{}
	for _, g := range a.Grants {
		if err := checkGrantDB(g.Database, a.Owner); err != nil {
			return nil, nil, err
		}
		if seen[g.Database] {
			return nil, nil, fmt.Errorf("grants: database %q listed twice", g.Database)
		}
		seen[g.Database] = true
		privs, err := validate.DatabasePrivileges(a.Engine, g.Privileges)
		if err != nil {
			return nil, nil, fmt.Errorf("grant on %q: %w", g.Database, err)
		}
		grants = append(grants, &agentpb.DatabaseGrant{Database: g.Database, Privileges: privs})
	}
	slices.SortFunc(grants, func(x, y *agentpb.DatabaseGrant) int { return compareStrings(x.Database, y.Database) })
	return hosts, grants, nil
}

// checkGrantDB refuses a grant outside the owner's namespace with
// ErrForeignDatabase, so that callers can tell it from a malformed name.
func checkGrantDB(name, owner string) error {
	if err := validate.DatabaseName(name, owner); err != nil {
		if o := validate.DatabaseOwner(name); o != "" && o != owner && validate.DatabaseName(name, o) == nil {
			return fmt.Errorf("grant on %q for a user of %q: %w %q", name, owner, ErrForeignDatabase, o)
		}
		return fmt.Errorf("grant: %w", err)
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Apply implements actions.Action.
func (a *EnsureDatabase) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	e, log, unlock, err := a.m.begin(ctx, env, a.Engine, a.Object)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cs := a.Charset
	if cs == "" {
		cs = DefaultCharset
	}
	existed, err := e.ensureDatabase(ctx, a.Object, cs)
	if err != nil {
		return nil, err
	}
	if !existed {
		log.Info("database created", "database", a.Object, "engine", a.Engine)
	}
	return &agentpb.DatabaseResult{Name: a.Object, Engine: a.Engine, Existed: existed}, nil
}

// Apply implements actions.Action.
func (a *DropDatabase) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	e, log, unlock, err := a.m.begin(ctx, env, a.Engine, a.Object)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &agentpb.DatabaseResult{Name: a.Object, Engine: a.Engine}
	res.Existed, err = e.databaseExists(ctx, a.Object)
	if err != nil || !res.Existed {
		return res, err
	}
	dir, dirPath, err := dumpDir(env.Profile.BackupDir, a.Owner)
	if err != nil {
		return nil, err
	}
	res.Dump, res.DumpBytes, err = writeDump(ctx, dir, dirPath, a.Object, e.dumpCommand(a.Object), e.dumpTrailer())
	if err != nil {
		return nil, fmt.Errorf("drop database %q: nothing dropped: %w", a.Object, err)
	}
	if err := e.dropDatabase(ctx, a.Object); err != nil {
		return nil, err
	}
	log.Info("database dropped", "database", a.Object, "engine", a.Engine, "dump", res.Dump, "dumpBytes", res.DumpBytes)
	return res, nil
}

// Apply implements actions.Action.
func (a *OptimizeDatabase) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	e, _, unlock, err := a.m.begin(ctx, env, a.Engine, a.Object)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &agentpb.DatabaseResult{Name: a.Object, Engine: a.Engine}
	res.Existed, err = e.databaseExists(ctx, a.Object)
	if err != nil {
		return nil, err
	}
	if !res.Existed {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "optimize database %q: no such database", a.Object)
	}
	n, err := e.optimize(ctx, a.Object)
	if err != nil {
		return nil, err
	}
	res.Tables = int32(n)
	return res, nil
}

// Apply implements actions.Action.
func (a *EnsureDatabaseUser) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	// normalize repeats Validate's checks, the owner check of every grant
	// included: this is the last point before statements are built.
	hosts, grants, err := a.normalize()
	if err != nil {
		return nil, err
	}
	password := a.Password
	if len(a.SealedPassword) > 0 {
		if password, err = a.unseal(env); err != nil {
			return nil, err
		}
	}
	var hash string
	if len(a.SealedPasswordHash) > 0 {
		if hash, err = a.unsealHash(env); err != nil {
			return nil, err
		}
	}
	e, log, unlock, err := a.m.begin(ctx, env, a.Engine, a.Object)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res, err := e.ensureUser(ctx, userSpec{name: a.Object, owner: a.Owner, password: password, hash: hash, hosts: hosts, grants: grants}, log)
	if err != nil {
		return nil, err
	}
	res.Name, res.Engine = a.Object, a.Engine
	return res, nil
}

// unseal opens the sealed password and checks it like a clear one. Its
// errors never contain the password.
func (a *EnsureDatabaseUser) unseal(env *actions.Env) (string, error) {
	if env == nil || env.Unseal == nil {
		return "", fmt.Errorf("database user %q: a sealed password needs the node's key, which this agent cannot use", a.Object)
	}
	pt, err := env.Unseal(a.SealedPassword, agentpb.DatabasePasswordSealContext(a.Object))
	if err != nil {
		return "", fmt.Errorf("database user %q: sealed password: %w", a.Object, err)
	}
	pw := string(pt)
	if pw == "" {
		return "", fmt.Errorf("database user %q: the sealed password is empty", a.Object)
	}
	if err := validate.DatabasePassword(pw, a.Object); err != nil {
		return "", err
	}
	return pw, nil
}

// Apply implements actions.Action.
func (a *DropDatabaseUser) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	e, log, unlock, err := a.m.begin(ctx, env, a.Engine, a.Object)
	if err != nil {
		return nil, err
	}
	defer unlock()
	existed, err := e.dropUser(ctx, a.Object, a.Owner)
	if err != nil {
		return nil, err
	}
	if existed {
		log.Info("database user dropped", "user", a.Object, "engine", a.Engine)
	}
	return &agentpb.DatabaseUserResult{Name: a.Object, Engine: a.Engine, Existed: existed}, nil
}

// Apply implements actions.Action.
func (a *ListDatabases) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	e, _, unlock, err := a.m.begin(ctx, env, a.Engine, "")
	if err != nil {
		return nil, err
	}
	defer unlock()
	dbs, err := e.list(ctx, a.Owner)
	if err != nil {
		return nil, err
	}
	return &agentpb.ListDatabasesResult{Databases: dbs}, nil
}

// userSpec is a validated, canonical EnsureDatabaseUser.
type userSpec struct {
	name, owner string
	password    string
	hash        string // a NormalizePasswordHash'd hash, installed as it is
	hosts       []string
	grants      []*agentpb.DatabaseGrant
}

// engine is one database server as the actions use it.
type engine interface {
	databaseExists(ctx context.Context, name string) (bool, error)
	ensureDatabase(ctx context.Context, name, charset string) (existed bool, err error)
	dropDatabase(ctx context.Context, name string) error
	dumpCommand(name string) dumpCmd
	dumpTrailer() string
	optimize(ctx context.Context, name string) (tables int, err error)
	ensureUser(ctx context.Context, u userSpec, log *slog.Logger) (*agentpb.DatabaseUserResult, error)
	dropUser(ctx context.Context, name, owner string) (existed bool, err error)
	list(ctx context.Context, owner string) ([]*agentpb.DatabaseInfo, error)
	users(ctx context.Context, owner string) ([]string, error)
}

// begin resolves the engine for env and takes the lock of one object
// (a database or user name; "" for none). Actions on one name are
// serialised: a drop racing an ensure of the same database, both re-sent
// after a reconnect, must not interleave their check and their statement.
func (m *Module) begin(ctx context.Context, env *actions.Env, engineName, key string) (engine, *slog.Logger, func(), error) {
	if env == nil || env.Profile == nil {
		return nil, nil, nil, errors.New("no platform profile: the agent must be started with one")
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := m.engineFor(ctx, env, engineName)
	if err != nil {
		// The engine is not installed, or its server does not answer.
		return nil, nil, nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	unlock := func() {}
	if key != "" {
		unlock, err = m.locks.Lock(ctx, engineName+"/"+key)
		if err != nil {
			return nil, nil, nil, err
		}
	}
	return e, log, unlock, nil
}
