package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Migrations: one record per move of an account from one node to
// another (spec, requests and observed steps in one record, updated
// through compare-and-swap like backups), and a lock per account naming
// the migration that holds it: one migration per account at a time.
const (
	prefixMigrations     = prefix + "migrations/"      // migrations/<id>
	prefixMigrationLocks = prefix + "migration-locks/" // migration-locks/<account id> = <id>
	migrationDoneKind    = "migration"
)

var (
	// KindMigrations: an event per migration; Value decodes with
	// DecodeMigration.
	KindMigrations = Kind{label: "migrations", prefix: prefixMigrations}
	// KindMigrationOutcomes: finished tasks of migrations, named by
	// migration id.
	KindMigrationOutcomes = Kind{label: "migration-outcomes", prefix: prefixDone + migrationDoneKind + "/", name: firstSegment}
)

// MigrationStatus is GraphQL's MigrationStatus.
type MigrationStatus string

const (
	MigrationPending    MigrationStatus = "PENDING"
	MigrationPresync    MigrationStatus = "PRESYNC"
	MigrationCutover    MigrationStatus = "CUTOVER"
	MigrationVerifying  MigrationStatus = "VERIFYING"
	MigrationDone       MigrationStatus = "DONE"
	MigrationRolledBack MigrationStatus = "ROLLED_BACK"
	MigrationFailed     MigrationStatus = "FAILED"
	MigrationCancelled  MigrationStatus = "CANCELLED"
)

// StepStatus is one step's state.
type StepStatus string

const (
	StepPending StepStatus = "PENDING"
	StepRunning StepStatus = "RUNNING"
	StepDone    StepStatus = "DONE"
	StepFailed  StepStatus = "FAILED"
	StepSkipped StepStatus = "SKIPPED"
)

// MigrationStep is one step of a migration: a task on a node (TaskID) or
// a change the control plane makes in the store.
type MigrationStep struct {
	Name       string     `json:"name"`
	Status     StepStatus `json:"status"`
	Node       string     `json:"node,omitempty"`
	TaskID     string     `json:"taskId,omitempty"`
	Attempts   int        `json:"attempts,omitempty"`
	StartedAt  time.Time  `json:"startedAt,omitzero"`
	FinishedAt time.Time  `json:"finishedAt,omitzero"`
	Bytes      uint64     `json:"bytes,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Migration is one move of one account.
type Migration struct {
	ID        string `json:"id"`
	Account   string `json:"account"` // the account's id
	Username  string `json:"username"`
	Owner     string `json:"owner"`
	FromNode  string `json:"fromNode"`
	ToNode    string `json:"toNode,omitempty"` // "" until the scheduler picks it
	Requester string `json:"requester,omitempty"`
	// Schedule: not started before (zero: at once).
	Schedule time.Time `json:"schedule,omitzero"`
	// Drain names the node drain that made it; DrainParallel caps the
	// drain's migrations running at once.
	Drain         string `json:"drain,omitempty"`
	DrainParallel int    `json:"drainParallel,omitempty"`

	// Restore: the source node was DOWN when the migration started; the
	// account comes back from its newest backup (BackupID, through
	// restore RestoreID) instead of rsync.
	Restore   bool   `json:"restore,omitempty"`
	BackupID  string `json:"backupId,omitempty"`
	RestoreID string `json:"restoreId,omitempty"`

	Status MigrationStatus `json:"status"`
	Steps  []MigrationStep `json:"steps,omitempty"`
	Error  string          `json:"error,omitempty"`

	// What the steps learnt: the source's one-time public key, the
	// target endpoint and the host key the source pins, the account's
	// uid/gid on the source, and the password hashes sealed to the
	// target (never clear).
	SourcePublicKey string            `json:"sourcePublicKey,omitempty"`
	TargetHostKey   string            `json:"targetHostKey,omitempty"`
	TargetEndpoint  string            `json:"targetEndpoint,omitempty"`
	SourceUID       uint32            `json:"sourceUid,omitempty"`
	SourceGID       uint32            `json:"sourceGid,omitempty"`
	SealedMailboxes map[string][]byte `json:"sealedMailboxes,omitempty"`
	SealedDBUsers   map[string][]byte `json:"sealedDbUsers,omitempty"`
	// SealedCertKeys are the private keys the account's certificates
	// (installed and ordered) are served with, by certificate id, sealed
	// to the target (CertificateKeySealContext); CertKeysNotExported
	// says why a key could not be, by id: that certificate is reported
	// unserved at the switch (an ordered one is ordered again), never
	// moved silently.
	SealedCertKeys      map[string][]byte `json:"sealedCertKeys,omitempty"`
	CertKeysNotExported map[string]string `json:"certKeysNotExported,omitempty"`
	// ExportedCertChains are the chains whose keys SealedCertKeys holds,
	// by id: the target installs that chain, never another with the key.
	ExportedCertChains map[string]string `json:"exportedCertChains,omitempty"`
	// CertsAtSource is what the source served of each certificate when
	// the switch pointed it at the target: a rollback gives it back.
	CertsAtSource map[string]CertAtSource `json:"certsAtSource,omitempty"`

	// CutOver: the account's records point at the target (rollback
	// points them back). SuspendedAt is when the source was suspended;
	// DowntimeMs runs from then until the target is ACTIVE.
	CutOver     bool      `json:"cutOver,omitempty"`
	SuspendedAt time.Time `json:"suspendedAt,omitzero"`
	DowntimeMs  int64     `json:"downtimeMs,omitempty"`

	// Requests: cancel (before cutover), rollback (after cutover, until
	// finalized), finalize (remove the source copy; automatic at
	// FinalizeAfter).
	CancelRequested   bool      `json:"cancelRequested,omitempty"`
	RollbackRequested bool      `json:"rollbackRequested,omitempty"`
	FinalizeRequested bool      `json:"finalizeRequested,omitempty"`
	FinalizeAfter     time.Time `json:"finalizeAfter,omitzero"`
	FinalizedAt       time.Time `json:"finalizedAt,omitzero"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// CertAtSource is a certificate's served state on a migration's source.
type CertAtSource struct {
	State         CertState `json:"state"`
	ChainPEM      string    `json:"chainPEM"`
	Serial        string    `json:"serial,omitempty"`
	Issuer        string    `json:"issuer,omitempty"`
	NotBefore     time.Time `json:"notBefore,omitzero"`
	NotAfter      time.Time `json:"notAfter,omitzero"`
	RenewAt       time.Time `json:"renewAt,omitzero"`
	IssuedDomains []string  `json:"issuedDomains,omitempty"`
}

// ForgetSecrets drops what the migration keeps only for its switch onto
// the target (the sealed hashes and keys); with source, also what a
// rollback would give back, once none can come any more.
func (m *Migration) ForgetSecrets(source bool) {
	m.SealedMailboxes, m.SealedDBUsers, m.SealedCertKeys, m.ExportedCertChains = nil, nil, nil, nil
	if source {
		m.CertsAtSource = nil
	}
}

// Closed reports whether the migration is over and holds its account no
// more: cancelled, rolled back, finalized, or failed before cutover. A
// migration that failed after cutover still holds it: rollback is open.
func (m *Migration) Closed() bool {
	switch m.Status {
	case MigrationCancelled, MigrationRolledBack:
		return true
	case MigrationFailed:
		return !m.CutOver
	case MigrationDone:
		return !m.FinalizedAt.IsZero()
	}
	return false
}

// Step returns the step named name, nil when there is none.
func (m *Migration) Step(name string) *MigrationStep {
	for i := range m.Steps {
		if m.Steps[i].Name == name {
			return &m.Steps[i]
		}
	}
	return nil
}

// NewMigrationID returns a new migration id of account username
// ("alice-m20261206t031500-3f9a").
func NewMigrationID(username string, now time.Time) string {
	return newAccountObjectID(username, "m", now)
}

func migrationKey(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("migration %q: %w", id, ErrNotFound)
	}
	return prefixMigrations + id, nil
}

func migrationLockKey(account string) string { return prefixMigrationLocks + account }

// MigrationObject names the task object of a migration's tasks.
func MigrationObject(id string) string { return migrationDoneKind + "/" + id }

// DecodeMigration decodes an event of KindMigrations.
func DecodeMigration(ev Event) (*Migration, error) {
	return decodeJSON[Migration]([]byte(ev.Name), ev.Value)
}

// CreateMigration writes a new migration and takes its account's lock:
// ErrConflict (naming the migration that holds it) when the account is
// being migrated already.
func (s *Store) CreateMigration(ctx context.Context, m *Migration, audit AuditEvent) error {
	key, err := migrationKey(m.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	m.CreatedAt, m.UpdatedAt = now, now
	if m.Status == "" {
		m.Status = MigrationPending
	}
	lock := migrationLockKey(m.Account)
	ops := []clientv3.Op{clientv3.OpPut(key, mustJSON(m)), clientv3.OpPut(lock, m.ID)}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(key), absent(lock)).Then(ops...).Else(clientv3.OpGet(lock)).Commit()
	if err != nil {
		return fmt.Errorf("create migration %s: %w", m.ID, err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			return fmt.Errorf("account %s is being migrated (migration %s): %w", m.Username, kvs[0].Value, ErrConflict)
		}
		return fmt.Errorf("migration %s exists: %w", m.ID, ErrConflict)
	}
	return nil
}

// MigrationOfAccount returns the id of the migration holding account
// (by id), "" when none does.
func (s *Store) MigrationOfAccount(ctx context.Context, account string) (string, error) {
	resp, err := s.cli.Get(ctx, migrationLockKey(account))
	if err != nil {
		return "", fmt.Errorf("migration of %s: %w", account, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// GetMigration reads one migration.
func (s *Store) GetMigration(ctx context.Context, id string) (*Migration, error) {
	m, _, err := s.GetMigrationRev(ctx, id)
	return m, err
}

// GetMigrationRev reads one migration with the revision it was last
// written at.
func (s *Store) GetMigrationRev(ctx context.Context, id string) (*Migration, int64, error) {
	key, err := migrationKey(id)
	if err != nil {
		return nil, 0, err
	}
	return getJSON[Migration](ctx, s.cli, key)
}

// WatchMigration follows migration id's record from the revision after
// afterRev.
func (s *Store) WatchMigration(ctx context.Context, id string, afterRev int64) (<-chan WatchBatch, error) {
	key, err := migrationKey(id)
	if err != nil {
		return nil, err
	}
	return s.Watch(ctx, Kind{label: "migration " + id, prefix: key, exact: true}, afterRev), nil
}

// ListMigrations reads every migration, in id order.
func (s *Store) ListMigrations(ctx context.Context) ([]Migration, error) {
	ms, _, err := listJSON[Migration](ctx, s.cli, prefixMigrations)
	return ms, err
}

// UpdateMigration applies fn to the migration and writes it back if
// nobody wrote it meanwhile (retrying otherwise), with the tasks fn
// returns; a tracked task is recorded on the step that is running. The
// transaction that closes the migration releases its account's lock.
func (s *Store) UpdateMigration(ctx context.Context, id string, fn func(m *Migration) ([]*ObjectTask, error), audit AuditEvent) (*Migration, error) {
	key, err := migrationKey(id)
	if err != nil {
		return nil, err
	}
	for {
		m, rev, err := getJSON[Migration](ctx, s.cli, key)
		if err != nil {
			return nil, err
		}
		wasClosed := m.Closed()
		tasks, err := fn(m)
		if err == ErrUnchanged {
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		m.UpdatedAt = now
		var ops []clientv3.Op
		var nodes []clientv3.Cmp
		for _, t := range tasks {
			tr, tops, err := taskOps(t.Node, t.Spec, MigrationObject(id), t.CreatedBy, nil, now)
			if err != nil {
				return nil, err
			}
			t.ID = tr.ID
			if t.Track {
				for i := range m.Steps {
					if m.Steps[i].Status == StepRunning && m.Steps[i].TaskID == "" {
						m.Steps[i].TaskID, m.Steps[i].Node = tr.ID, t.Node
						break
					}
				}
			}
			ops = append(ops, tops...)
			nodes = append(nodes, present(nodeKey(t.Node)))
		}
		ops = append(ops, clientv3.OpPut(key, mustJSON(m)))
		if !wasClosed && m.Closed() {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value(migrationLockKey(m.Account)), "=", m.ID)},
				[]clientv3.Op{clientv3.OpDelete(migrationLockKey(m.Account))}, nil))
		}
		if audit.Action != "" {
			ops = append(ops, auditPut(audit))
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(key, rev)).Then(clientv3.OpTxn(nodes, ops, nil)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update migration %s: %w", id, err)
		}
		if !resp.Succeeded {
			continue
		}
		if !resp.Responses[0].GetResponseTxn().GetSucceeded() {
			return nil, fmt.Errorf("update migration %s: %w", id, ErrNoNode)
		}
		return m, nil
	}
}

// MigrationOutcomes returns the ids of migration id's finished tasks the
// controller has not consumed yet.
func (s *Store) MigrationOutcomes(ctx context.Context, id string) ([]string, error) {
	return s.outcomes(ctx, migrationDoneKind, id)
}

// ForgetMigrationOutcome removes one done notice once consumed.
func (s *Store) ForgetMigrationOutcome(ctx context.Context, id, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(migrationDoneKind, id, task))
	return err
}

// MoveAccount applies fn to account id and, when fn changed its node,
// moves the account's allocation (one account and its disk) from the old
// node to the new one, in one transaction guarded by the revisions read:
// a placement on either node meanwhile makes it read again. fn returning
// ErrUnchanged writes nothing.
func (s *Store) MoveAccount(ctx context.Context, id string, fn func(*Account) error, audit AuditEvent) (*Account, error) {
	for {
		a, rev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		from := a.Node
		if err := fn(a); err != nil {
			return nil, err
		}
		cmps := []clientv3.Cmp{unchanged(accountKey(id), rev)}
		ops := []clientv3.Op{clientv3.OpPut(accountKey(id), mustJSON(a))}
		if from != "" && a.Node != "" && from != a.Node {
			for _, n := range []struct {
				node  string
				delta int
			}{{from, -1}, {a.Node, 1}} {
				al, arev, err := getJSON[Alloc](ctx, s.cli, allocKey(n.node))
				switch {
				case err == ErrNotFound:
					al = &Alloc{}
					cmps = append(cmps, absent(allocKey(n.node)))
				case err != nil:
					return nil, err
				default:
					cmps = append(cmps, unchanged(allocKey(n.node), arev))
				}
				al.Accounts = max(al.Accounts+n.delta, 0)
				al.DiskMB = max(al.DiskMB+int64(n.delta)*a.DiskMB, 0)
				ops = append(ops, clientv3.OpPut(allocKey(n.node), mustJSON(al)))
			}
		}
		if audit.Action != "" {
			ops = append(ops, auditPut(audit))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("move account %s: %w", id, err)
		}
		if resp.Succeeded {
			return a, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}
