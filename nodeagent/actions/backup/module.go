// Package backup backs accounts up with restic and restores them: the
// home (maildirs included), one snapshot per database with the dump
// streamed into restic, and one of the account's state as JSON, all
// tagged with the backup's id in one repository per account per target.
//
// restic runs as an argument vector from a fixed path, under nice and
// ionice, at most Concurrency at a time per node; the repository
// password reaches it through a pipe on fd 3 only.
package backup

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// ModuleName is the module's stable name.
const ModuleName = "backup"

// DefaultConcurrency is how many backup actions run at once on a node.
const DefaultConcurrency = 2

// Action names.
const (
	BackupAccountName = "backup.account"
	RestoreBackupName = "backup.restore"
	VerifyBackupName  = "backup.verify"
	ForgetBackupName  = "backup.forget"
)

// Module is the backup area of a node that hosts accounts. It holds what
// the actions share: the concurrency limit, the per-repository locks, the
// repositories known to be initialised and the progress hook.
type Module struct {
	// Progress, when set, receives progress while a backup runs, at most
	// about once a second per action. The agent forwards it on its stream
	// (AgentMessage.backup_progress). Set it before tasks run.
	Progress func(*agentpb.BackupProgress)

	sem   chan struct{}
	locks actions.KeyedLocks
	db    *db.Module
	mail  *mail.Module
	certs Certificates

	mu     sync.Mutex
	inited map[string]bool
	keyMu  sync.Mutex

	// snapshotTime, when set (tests only), gives the time recorded in a
	// backup's snapshots (restic backup --time): retention tests make
	// backups "days apart" in a second.
	snapshotTime func(backupID string) time.Time
	// missingEngine, when set (tests only), makes an installed engine
	// count as missing, as on a node without it.
	missingEngine func(engine string) bool
}

var _ actions.Module = (*Module)(nil)

// Certificates reads the keys of the certificates sites serve and serves
// keys again (the tls module).
type Certificates interface {
	// CertificateKey returns the PKCS#8 DER key site serves with the leaf
	// of chainPEM; the caller clears it.
	CertificateKey(ctx context.Context, env *actions.Env, site string, chainPEM []byte) ([]byte, error)
	// ServeKey serves chainPEM with keyDER on site (and its mail hosts).
	ServeKey(ctx context.Context, env *actions.Env, site string, mail bool, chainPEM, keyDER []byte) error
}

// NewModule returns the backup module of one agent: databases are dumped
// and restored through dbm, mailbox hashes read and restored through
// mailm, installed certificates' keys through certs; at most concurrency
// backup actions run at once (<= 0: the default).
func NewModule(dbm *db.Module, mailm *mail.Module, certs Certificates, concurrency int) *Module {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	return &Module{sem: make(chan struct{}, concurrency), db: dbm, mail: mailm, certs: certs, inited: map[string]bool{}}
}

// Name implements actions.Module.
func (*Module) Name() string { return ModuleName }

// Setup implements actions.Module: it makes the node's SSH key for backup
// nodes. No daemon is run.
func (m *Module) Setup(_ context.Context, env *actions.Env) ([]services.Spec, error) {
	_, err := m.sshKeyPath(env)
	return nil, err
}

// acquire takes a slot of the node's concurrency limit.
func (m *Module) acquire(ctx context.Context) (func(), error) {
	select {
	case m.sem <- struct{}{}:
		return func() { <-m.sem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a backup slot: %w", ctx.Err())
	}
}

// dir is the module's directory in the agent's data dir (0700).
func (m *Module) dir(env *actions.Env) string { return filepath.Join(env.DataDir, "backup") }

// sshKeyPath returns the node's ed25519 key for backup nodes, made on
// first use (OpenSSH format, 0600 root).
func (m *Module) sshKeyPath(env *actions.Env) (string, error) {
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	_, path, err := EnsureSSHKey(env.DataDir)
	return path, err
}

// EnsureSSHKey makes (once) the node's SSH key for reaching backup nodes
// in dataDir/backup/id_ed25519 and returns its public key in
// authorized_keys form ("ssh-ed25519 AAAA...") and the key file's path.
// The agent reports the public key in NodeFacts.backup_ssh_public_key.
func EnsureSSHKey(dataDir string) (pub, path string, err error) {
	dir := filepath.Join(dataDir, "backup")
	path = filepath.Join(dir, "id_ed25519")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return "", "", gerr
		}
		blk, merr := ssh.MarshalPrivateKey(priv, "npanel backup")
		if merr != nil {
			return "", "", merr
		}
		b = pem.EncodeToMemory(blk)
		if err := atomicfile.WriteFile(path, b, 0o600, nil); err != nil {
			return "", "", fmt.Errorf("write backup ssh key: %w", err)
		}
	} else if err != nil {
		return "", "", err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return "", "", fmt.Errorf("backup ssh key %s: %w", path, err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), path, nil
}

// base is what every backup action carries.
type base struct {
	m         *Module
	allowTest bool
}

// AllowTestUsernames implements actions.TestNameAware.
func (b *base) AllowTestUsernames() { b.allowTest = true }

// BackupAccount backs one account up.
type BackupAccount struct {
	base
	req *agentpb.BackupAccountAction
}

// RestoreBackup restores part or all of a backup.
type RestoreBackup struct {
	base
	req *agentpb.RestoreBackupAction
}

// VerifyBackup reads a backup back and compares it with its snapshots.
type VerifyBackup struct {
	base
	req *agentpb.VerifyBackupAction
}

// ForgetBackup removes a backup, or an account's whole repository.
type ForgetBackup struct {
	base
	req *agentpb.ForgetBackupAction
}

var (
	_ actions.Action        = (*BackupAccount)(nil)
	_ actions.Action        = (*RestoreBackup)(nil)
	_ actions.Action        = (*VerifyBackup)(nil)
	_ actions.Action        = (*ForgetBackup)(nil)
	_ actions.TestNameAware = (*BackupAccount)(nil)
)

// NewBackupAccount builds the action from its wire form.
func (m *Module) NewBackupAccount(req *agentpb.BackupAccountAction) *BackupAccount {
	return &BackupAccount{base{m: m}, req}
}

// NewRestoreBackup builds the action from its wire form.
func (m *Module) NewRestoreBackup(req *agentpb.RestoreBackupAction) *RestoreBackup {
	return &RestoreBackup{base{m: m}, req}
}

// NewVerifyBackup builds the action from its wire form.
func (m *Module) NewVerifyBackup(req *agentpb.VerifyBackupAction) *VerifyBackup {
	return &VerifyBackup{base{m: m}, req}
}

// NewForgetBackup builds the action from its wire form.
func (m *Module) NewForgetBackup(req *agentpb.ForgetBackupAction) *ForgetBackup {
	return &ForgetBackup{base{m: m}, req}
}

// Name implements actions.Action.
func (*BackupAccount) Name() string { return BackupAccountName }

// Name implements actions.Action.
func (*RestoreBackup) Name() string { return RestoreBackupName }

// Name implements actions.Action.
func (*VerifyBackup) Name() string { return VerifyBackupName }

// Name implements actions.Action.
func (*ForgetBackup) Name() string { return ForgetBackupName }

// session is one action's hold on a repository: a concurrency slot, the
// repository's lock and an opened, initialised repository.
type session struct {
	rr      *resticRun
	release func()
}

// open takes a slot and the repository's lock, unseals and derives the
// repository and initialises it when init is set.
func (m *Module) open(ctx context.Context, env *actions.Env, r *agentpb.BackupRepository, init bool) (*session, error) {
	if env == nil || env.Profile == nil {
		return nil, errors.New("no platform profile: the agent must be started with one")
	}
	if _, err := os.Stat(resticBin); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "restic is not installed on this node (%s)", resticBin)
	}
	rel, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := m.locks.Lock(ctx, r.GetTarget()+"/"+r.GetUsername())
	if err != nil {
		rel()
		return nil, err
	}
	release := func() { unlock(); rel() }
	repo, err := m.openRepository(env, r)
	if err != nil {
		release()
		return nil, err
	}
	secrets := []string{string(repo.password)}
	for _, e := range repo.env {
		if v, ok := strings.CutPrefix(e, "AWS_SECRET_ACCESS_KEY="); ok {
			secrets = append(secrets, v)
		}
	}
	if err := os.MkdirAll(filepath.Join(m.dir(env), "cache"), 0o700); err != nil {
		repo.cleanup()
		release()
		return nil, err
	}
	s := &session{
		rr:      &resticRun{repo: repo, cacheDir: filepath.Join(m.dir(env), "cache"), secrets: secrets},
		release: func() { repo.cleanup(); release() },
	}
	if init {
		if err := m.ensureInit(ctx, s.rr); err != nil {
			s.release()
			return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
		}
	}
	return s, nil
}

// logger returns env's logger or a silent one.
func logger(env *actions.Env) interface {
	Info(string, ...any)
	Warn(string, ...any)
} {
	if env.Logger != nil {
		return env.Logger
	}
	return discard{}
}

type discard struct{}

func (discard) Info(string, ...any) {}
func (discard) Warn(string, ...any) {}
