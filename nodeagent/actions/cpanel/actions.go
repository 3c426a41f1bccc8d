// Package cpanel imports cPanel account archives (cpmove-USER.tar.gz and
// backup-DATE_USER.tar.gz) from the node's import area: analyze reports
// what an archive holds and what an import would do with each item;
// import fills an account the control plane created from that report
// with the archive's files, maildirs, database data and cron jobs.
//
// Archives are untrusted. They are read as a stream, every entry is
// validated before anything uses it (an entry leaving the tree, a device,
// an absurd size or a compression bomb refuses the whole archive, naming
// the entry), and all writes go through an os.Root of the account's home.
package cpanel

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Action names.
const (
	AnalyzeName = "cpanel.analyze"
	ImportName  = "cpanel.import"
)

// Bounds on a request.
const (
	maxMailboxes = 10_000
	maxDatabases = 1_000
)

// nodeCertFile is the node's certificate in the agent's data dir (leaf
// first); secrets are sealed to its public key.
const nodeCertFile = "node.crt"

// Module holds what the import actions share: the db and mail modules
// that restore dumps and locate maildirs.
type Module struct {
	db   *db.Module
	mail *mail.Module
	// Limits bound the archives read (zero: the defaults).
	Limits Limits
	// Fetch is how archives are pulled from old servers (fetch.go).
	Fetch FetchOptions
	// PublicKey returns the key secrets found in an archive are sealed
	// to: this node's own (from its certificate in the data dir).
	PublicKey func(env *actions.Env) (crypto.PublicKey, error)
	// locks serialises imports into one account: two would race on its
	// files and databases.
	locks actions.KeyedLocks
}

// NewModule returns the cPanel import of one agent.
func NewModule(dbm *db.Module, mailm *mail.Module) *Module {
	return &Module{db: dbm, mail: mailm, PublicKey: nodePublicKey}
}

// nodePublicKey reads the node's public key from its certificate.
func nodePublicKey(env *actions.Env) (crypto.PublicKey, error) {
	if env.DataDir == "" {
		return nil, errors.New("no data dir: cannot find the node's key")
	}
	b, err := os.ReadFile(filepath.Join(env.DataDir, nodeCertFile))
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("node certificate: no PEM certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	return c.PublicKey, nil
}

// Analyze is analyze_cpanel_backup.
type Analyze struct {
	m         *Module
	req       *agentpb.AnalyzeCpanelBackupAction
	allowTest bool
}

// Import is import_cpanel_backup.
type Import struct {
	m         *Module
	req       *agentpb.ImportCpanelBackupAction
	allowTest bool
}

// NewAnalyze builds the action from its wire form.
func (m *Module) NewAnalyze(req *agentpb.AnalyzeCpanelBackupAction) *Analyze {
	return &Analyze{m: m, req: req}
}

// NewImport builds the action from its wire form.
func (m *Module) NewImport(req *agentpb.ImportCpanelBackupAction) *Import {
	return &Import{m: m, req: req}
}

// Name implements actions.Action.
func (*Analyze) Name() string { return AnalyzeName }

// Name implements actions.Action.
func (*Import) Name() string { return ImportName }

// AllowTestUsernames implements actions.TestNameAware.
func (a *Import) AllowTestUsernames() { a.allowTest = true }

// AllowTestUsernames implements actions.TestNameAware.
func (a *Analyze) AllowTestUsernames() { a.allowTest = true }

// Validate implements actions.Action.
func (a *Analyze) Validate() error {
	if a.req == nil {
		return errors.New("empty request")
	}
	if u := a.req.GetUsername(); u != "" {
		if err := validate.UsernameOrTest(u, a.allowTest); err != nil {
			return err
		}
	}
	return validate.CpanelArchivePath(a.req.GetPath())
}

// Validate implements actions.Action.
func (a *Import) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("empty request")
	}
	if err := validate.CpanelArchivePath(r.GetPath()); err != nil {
		return err
	}
	if err := validate.UsernameOrTest(r.GetUsername(), a.allowTest); err != nil {
		return err
	}
	if len(r.GetMailboxes()) > maxMailboxes {
		return fmt.Errorf("%d mailboxes; at most %d", len(r.GetMailboxes()), maxMailboxes)
	}
	seen := map[string]bool{}
	for _, mb := range r.GetMailboxes() {
		addr, _, _, err := validate.MailAddress(mb)
		if err != nil {
			return err
		}
		if addr != mb || seen[addr] {
			return fmt.Errorf("mailbox %q: not canonical or listed twice", mb)
		}
		seen[addr] = true
	}
	if len(r.GetDatabases()) > maxDatabases {
		return fmt.Errorf("%d databases; at most %d", len(r.GetDatabases()), maxDatabases)
	}
	targets := map[string]bool{}
	for from, to := range r.GetDatabases() {
		owner, _, _ := strings.Cut(from, "_")
		if err := validate.DatabaseName(from, owner); err != nil {
			return fmt.Errorf("database %q of the archive: %w", from, err)
		}
		if err := validate.DatabaseName(to, r.GetUsername()); err != nil {
			return fmt.Errorf("database %q: %w", to, err)
		}
		if targets[to] {
			return fmt.Errorf("database %q is the target of two of the archive's", to)
		}
		targets[to] = true
	}
	return nil
}

// openArchive opens path in the node's import area, through a root on
// it: a symlink in the area cannot point the action elsewhere.
func openArchive(env *actions.Env, p string) (*os.File, int64, error) {
	if env == nil || env.Profile == nil {
		return nil, 0, errors.New("no platform profile: the agent must be started with one")
	}
	dir := env.Profile.Cpanel().ImportDir
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no import area %s on this node", dir)
	}
	if err != nil {
		return nil, 0, err
	}
	defer root.Close()
	f, err := root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no archive %s in the import area", p)
	}
	if err != nil {
		return nil, 0, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "%s is not a regular file", p)
	}
	return f, st.Size(), nil
}

// refused gives an archive's refusal its reason.
func refused(err error) error {
	var ee *EntryError
	if errors.As(err, &ee) || errors.Is(err, ErrCorrupt) {
		return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	return err
}

// Apply implements actions.Action. It writes nothing.
func (a *Analyze) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	f, size, err := openArchive(env, a.req.GetPath())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pub, err := a.m.PublicKey(env)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	seal := func(plain []byte, context string) ([]byte, error) { return pki.Seal(pub, plain, context) }
	rep, err := AnalyzeArchive(ctxReader{ctx, f}, size, a.m.Limits, seal, a.req.GetUsername())
	if err != nil {
		return nil, refused(err)
	}
	return &agentpb.AnalyzeCpanelBackupResult{Report: rep}, nil
}

// ctxReader stops a long read when ctx is done.
type ctxReader struct {
	ctx context.Context
	f   *os.File
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.f.Read(p)
}
