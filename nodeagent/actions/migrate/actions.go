package migrate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const agentpbUnavailable = agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE

// MaxAuthorization bounds how long an authorization may last: a migration
// that has not finished its syncs in a week is re-authorized.
const MaxAuthorization = 7 * 24 * time.Hour

// Limits on lists in a request.
const (
	maxDatabases = 1000
	maxFrom      = 16
)

// migrationID accepts the control plane's migration ids; they name files.
func migrationID(s string) error {
	if s == "" || len(s) > 64 {
		return errors.New("migration id: 1 to 64 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || (c == '-' || c == '_') && i > 0) {
			return fmt.Errorf("migration id %q: only letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

// publicKey parses an ed25519 key in authorized_keys form.
func publicKey(field, s string) (ssh.PublicKey, error) {
	if len(s) > 512 || strings.ContainsAny(s, "\n\r") {
		return nil, fmt.Errorf("%s: not one key line", field)
	}
	pk, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", field, err)
	}
	if len(opts) > 0 || len(rest) > 0 {
		return nil, fmt.Errorf("%s: options or a second key are not allowed", field)
	}
	if pk.Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("%s: %s key; want ssh-ed25519", field, pk.Type())
	}
	return pk, nil
}

// databases validates the migration's databases of username's.
func databases(ds []*agentpb.BackupDatabase, username string) error {
	if len(ds) > maxDatabases {
		return fmt.Errorf("%d databases; at most %d", len(ds), maxDatabases)
	}
	seen := map[string]bool{}
	for _, d := range ds {
		if d == nil {
			return errors.New("database is required")
		}
		if err := validate.Engine(d.GetEngine()); err != nil {
			return err
		}
		if err := validate.DatabaseName(d.GetName(), username); err != nil {
			return err
		}
		k := d.GetEngine() + "/" + d.GetName()
		if seen[k] {
			return fmt.Errorf("database %s listed twice", k)
		}
		seen[k] = true
	}
	return nil
}

// --- migration_key (source) ---

// MigrationKey makes (or returns) the migration's key pair on the source.
type MigrationKey struct {
	m         *Module
	req       *agentpb.MigrationKeyAction
	allowTest bool
}

// NewMigrationKey returns the action of req.
func (m *Module) NewMigrationKey(req *agentpb.MigrationKeyAction) *MigrationKey {
	return &MigrationKey{m: m, req: req}
}

func (*MigrationKey) Name() string { return "migration_key" }

// AllowTestUsernames implements actions.TestNameAware.
func (a *MigrationKey) AllowTestUsernames() { a.allowTest = true }

func (a *MigrationKey) Validate() error {
	if err := migrationID(a.req.GetMigrationId()); err != nil {
		return err
	}
	return validate.UsernameOrTest(a.req.GetUsername(), a.allowTest)
}

// Apply returns the public key; the private key stays in the data dir.
func (a *MigrationKey) Apply(_ context.Context, env *actions.Env) (proto.Message, error) {
	s, err := a.m.migrationKey(env.DataDir, a.req.GetMigrationId(), true)
	if err != nil {
		return nil, fmt.Errorf("migration key: %w", err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
	return &agentpb.MigrationKeyResult{PublicKey: pub}, nil
}

// --- authorize_migration (target) ---

// AuthorizeMigration lets the source's key into the endpoint.
type AuthorizeMigration struct {
	m         *Module
	req       *agentpb.AuthorizeMigrationAction
	allowTest bool
	now       func() time.Time
}

// NewAuthorizeMigration returns the action of req.
func (m *Module) NewAuthorizeMigration(req *agentpb.AuthorizeMigrationAction) *AuthorizeMigration {
	return &AuthorizeMigration{m: m, req: req, now: time.Now}
}

func (*AuthorizeMigration) Name() string { return "authorize_migration" }

// AllowTestUsernames implements actions.TestNameAware.
func (a *AuthorizeMigration) AllowTestUsernames() { a.allowTest = true }

func (a *AuthorizeMigration) Validate() error {
	r := a.req
	if err := migrationID(r.GetMigrationId()); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.GetUsername(), a.allowTest); err != nil {
		return err
	}
	if _, err := publicKey("public key", r.GetPublicKey()); err != nil {
		return err
	}
	if n := len(r.GetFromAddresses()); n == 0 || n > maxFrom {
		return fmt.Errorf("from addresses: 1 to %d", maxFrom)
	}
	for _, f := range r.GetFromAddresses() {
		if err := fromAddress(f); err != nil {
			return err
		}
	}
	exp := time.Unix(r.GetExpiresUnix(), 0)
	now := a.now()
	if !exp.After(now) {
		return fmt.Errorf("expires %s: in the past", exp.UTC().Format(time.RFC3339))
	}
	if exp.Sub(now) > MaxAuthorization+time.Minute {
		return fmt.Errorf("expires %s: more than %s ahead", exp.UTC().Format(time.RFC3339), MaxAuthorization)
	}
	if err := databases(r.GetDatabases(), r.GetUsername()); err != nil {
		return err
	}
	// The account's ids on the source (recorded; everything the receiver
	// writes is the target account's): never root's.
	if r.GetSourceUid() == 0 || r.GetSourceGid() == 0 {
		return errors.New("source uid and gid are required (and never root's)")
	}
	return nil
}

// fromAddress accepts an IP or a CIDR; a prefix shorter than /8 (v4) or
// /32 (v6) is refused: it would let most of the Internet in.
func fromAddress(s string) error {
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" || ip.IsUnspecified() {
			return fmt.Errorf("from address %q: not a host address", s)
		}
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("from address %q: not an IP address or CIDR", s)
	}
	if p.Addr().Is4() && p.Bits() < 8 || !p.Addr().Is4() && p.Bits() < 32 {
		return fmt.Errorf("from address %q: prefix too wide", s)
	}
	return nil
}

// Apply stores the authorization (replacing an earlier one of the same
// migration) and returns the endpoint's host key and address.
func (a *AuthorizeMigration) Apply(_ context.Context, env *actions.Env) (proto.Message, error) {
	listen, hk, err := a.m.endpoint()
	if err != nil {
		return nil, err
	}
	r := a.req
	pk, _ := publicKey("public key", r.GetPublicKey())
	az := &authorization{
		MigrationID: r.GetMigrationId(),
		Username:    r.GetUsername(),
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
		From:        r.GetFromAddresses(),
		ExpiresUnix: r.GetExpiresUnix(),
		SourceUID:   r.GetSourceUid(),
		SourceGID:   r.GetSourceGid(),
	}
	for _, d := range r.GetDatabases() {
		az.Databases = append(az.Databases, authzedDB{Engine: d.GetEngine(), Name: d.GetName()})
	}
	if err := a.m.saveAuthorization(env.DataDir, az); err != nil {
		return nil, fmt.Errorf("store authorization: %w", err)
	}
	if err := a.m.pruneExpired(env.DataDir, time.Now()); err != nil {
		env.Logger.Warn("prune expired migration authorizations", "err", err)
	}
	return &agentpb.AuthorizeMigrationResult{
		HostKey:  strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk.PublicKey()))),
		Endpoint: listen,
	}, nil
}

// --- revoke_migration (both) ---

// RevokeMigration removes the migration's key pair and authorization.
type RevokeMigration struct {
	m   *Module
	req *agentpb.RevokeMigrationAction
}

// NewRevokeMigration returns the action of req.
func (m *Module) NewRevokeMigration(req *agentpb.RevokeMigrationAction) *RevokeMigration {
	return &RevokeMigration{m: m, req: req}
}

func (*RevokeMigration) Name() string { return "revoke_migration" }

func (a *RevokeMigration) Validate() error { return migrationID(a.req.GetMigrationId()) }

// Apply removes the state and closes the migration's open connections.
func (a *RevokeMigration) Apply(_ context.Context, env *actions.Env) (proto.Message, error) {
	id := a.req.GetMigrationId()
	if err := a.m.removeState(env.DataDir, id); err != nil {
		return nil, fmt.Errorf("revoke migration: %w", err)
	}
	a.m.closeConns(id)
	return &agentpb.RevokeMigrationResult{}, nil
}

// --- sync_migration (source) ---

// SyncMigration pushes one pass to the target.
type SyncMigration struct {
	m         *Module
	req       *agentpb.SyncMigrationAction
	allowTest bool
}

// NewSyncMigration returns the action of req.
func (m *Module) NewSyncMigration(req *agentpb.SyncMigrationAction) *SyncMigration {
	return &SyncMigration{m: m, req: req}
}

func (*SyncMigration) Name() string { return "sync_migration" }

// AllowTestUsernames implements actions.TestNameAware.
func (a *SyncMigration) AllowTestUsernames() { a.allowTest = true }

func (a *SyncMigration) Validate() error {
	r := a.req
	if err := migrationID(r.GetMigrationId()); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.GetUsername(), a.allowTest); err != nil {
		return err
	}
	if _, _, err := targetEndpoint(r.GetTargetEndpoint()); err != nil {
		return err
	}
	if _, err := publicKey("target host key", r.GetTargetHostKey()); err != nil {
		return err
	}
	if err := databases(r.GetDatabases(), r.GetUsername()); err != nil {
		return err
	}
	if !r.GetFiles() && len(r.GetDatabases()) == 0 {
		return errors.New("nothing to sync: neither files nor databases")
	}
	return nil
}

// targetEndpoint accepts IP:port or hostname:port (never with a wildcard
// or empty host: the control plane fills in the target's address).
func targetEndpoint(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("target endpoint %q: not host:port", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("target endpoint %q: bad port", s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() || ip.Zone() != "" {
			return "", 0, fmt.Errorf("target endpoint %q: not a host address", s)
		}
		return host, p, nil
	}
	if _, err := validate.Domain(host); err != nil {
		return "", 0, fmt.Errorf("target endpoint %q: host is neither an IP address nor a host name", s)
	}
	return host, p, nil
}
