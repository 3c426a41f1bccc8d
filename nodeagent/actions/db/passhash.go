package db

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// This file takes database users' password hashes made elsewhere (a node
// the user moved from, a cPanel import) and hands out the installed ones
// for a migration, so that applications keep their passwords.

// ErrNotPasswordHash is returned for a hash the engine cannot take as a
// stored password. Errors about hashes never quote them.
var ErrNotPasswordHash = errors.New("not a password hash of the engine (MariaDB: *HEX mysql_native_password; PostgreSQL: SCRAM-SHA-256$... or md5HEX)")

// maxDBHashLen bounds a hash; a SCRAM verifier with a long salt is well
// under it.
const maxDBHashLen = 512

// maxSealedHash bounds a sealed hash (a sealed box of at most
// maxDBHashLen bytes and its overhead).
const maxSealedHash = 4096

// NormalizePasswordHash checks h strictly for engine and returns it in
// the form the server stores: MariaDB "*" and 40 hex digits (upper case),
// PostgreSQL "SCRAM-SHA-256$iter:salt$storedkey:serverkey" (base64 parts
// that decode, 32-byte keys) or "md5" and 32 lower-case hex digits. Only
// a hash that passed goes into a statement, and then only as a literal
// of base64, hex, '$', ':' and '*' characters.
func NormalizePasswordHash(engine, h string) (string, error) {
	if len(h) > maxDBHashLen {
		return "", ErrNotPasswordHash
	}
	switch engine {
	case validate.EngineMariaDB:
		if len(h) == 41 && h[0] == '*' && isHex(h[1:]) {
			return strings.ToUpper(h), nil
		}
	case validate.EnginePostgreSQL:
		if rest, ok := strings.CutPrefix(h, "md5"); ok && len(rest) == 32 && isHex(rest) {
			return strings.ToLower(h), nil
		}
		if scramVerifierOK(h) {
			return h, nil
		}
	default:
		return "", fmt.Errorf("unknown engine %q", engine)
	}
	return "", ErrNotPasswordHash
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// scramVerifierOK checks the format of pg_authid.rolpassword for SCRAM.
func scramVerifierOK(v string) bool {
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	its, salt, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return false
	}
	iter, err := strconv.Atoi(its)
	if err != nil || iter < 1 || iter > 1<<30 || strconv.Itoa(iter) != its {
		return false
	}
	stored, server, ok := strings.Cut(keys, ":")
	if !ok {
		return false
	}
	if s, err := base64.StdEncoding.Strict().DecodeString(salt); err != nil || len(s) == 0 {
		return false
	}
	for _, k := range []string{stored, server} {
		if b, err := base64.StdEncoding.Strict().DecodeString(k); err != nil || len(b) != 32 {
			return false
		}
	}
	return true
}

// unsealHash opens the sealed password hash and checks it for the
// action's engine. Its errors never contain the hash.
func (a *EnsureDatabaseUser) unsealHash(env *actions.Env) (string, error) {
	if env == nil || env.Unseal == nil {
		return "", fmt.Errorf("database user %q: a sealed password hash needs the node's key, which this agent cannot use", a.Object)
	}
	pt, err := env.Unseal(a.SealedPasswordHash, agentpb.DatabasePasswordHashSealContext(a.Object))
	if err != nil {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "database user %q: sealed password hash: %v", a.Object, err)
	}
	h, err := NormalizePasswordHash(a.Engine, string(pt))
	clear(pt)
	if err != nil {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "database user %q: sealed password hash: %v", a.Object, err)
	}
	return h, nil
}

// UserPasswordHash returns user's installed password hash on engine, in
// the form NormalizePasswordHash accepts, for export to another node; ok
// is false when the user does not exist or is not owner's. A MariaDB user
// whose localhost account authenticates other than with a native password
// hash cannot be exported (an error).
func (m *Module) UserPasswordHash(ctx context.Context, env *actions.Env, engine, owner, user string) (hash string, ok bool, err error) {
	if err := validate.DatabaseUser(user, owner); err != nil {
		return "", false, err
	}
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return "", false, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	switch e := e.(type) {
	case *mariadb:
		var plugin, auth string
		err := e.db.QueryRowContext(ctx, `SELECT COALESCE(JSON_VALUE(Priv, '$.plugin'), ''), COALESCE(JSON_VALUE(Priv, '$.authentication_string'), '')
			FROM mysql.global_priv WHERE User = ? AND Host = 'localhost'`, user).Scan(&plugin, &auth)
		if errors.Is(err, sql.ErrNoRows) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("read password hash of %q: %w", user, err)
		}
		if plugin != "mysql_native_password" {
			return "", true, fmt.Errorf("database user %q authenticates with %q, not a password hash that can be moved", user, plugin)
		}
		hash = auth
	case *postgres:
		var v *string
		err := e.pool.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("read password hash of %q: %w", user, err)
		}
		if v == nil {
			return "", true, fmt.Errorf("database user %q has no password", user)
		}
		hash = *v
	default:
		return "", false, errors.New("unknown engine")
	}
	if hash, err = NormalizePasswordHash(engine, hash); err != nil {
		return "", true, fmt.Errorf("database user %q: installed hash: %w", user, err)
	}
	return hash, true, nil
}
