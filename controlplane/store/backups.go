package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/pki"
)

// Backups: targets (where repositories live), one record per backup and
// per restore (spec and observed status in one record, updated through
// compare-and-swap like certificates), and each account's restic
// repository password, sealed under the replicas' key-encryption key. The
// records of an account's backups outlive the account: restoreAccount
// needs them, and the plan's retention removes them.
const (
	prefixBackupTargets = prefix + "backup-targets/"
	prefixBackups       = prefix + "backups/"  // backups/<account>/<id>
	prefixRestores      = prefix + "restores/" // restores/<account>/<id>
	prefixBackupKeys    = prefix + "backup-keys/"
	backupDoneKind      = "backup"
	restoreDoneKind     = "restore"
	// maxBackupEvents bounds the events a backup or restore keeps.
	maxBackupEvents = 50
)

var (
	// KindBackups: an event per backup; Value decodes with DecodeBackup.
	KindBackups = Kind{label: "backups", prefix: prefixBackups}
	// KindRestores: an event per restore; Value decodes with DecodeRestore.
	KindRestores = Kind{label: "restores", prefix: prefixRestores}
	// KindBackupTargets: an event per target.
	KindBackupTargets = Kind{label: "backup-targets", prefix: prefixBackupTargets}
	// KindBackupOutcomes and KindRestoreOutcomes: finished tasks, named by
	// backup (restore) id.
	KindBackupOutcomes  = Kind{label: "backup-outcomes", prefix: prefixDone + backupDoneKind + "/", name: firstSegment}
	KindRestoreOutcomes = Kind{label: "restore-outcomes", prefix: prefixDone + restoreDoneKind + "/", name: firstSegment}
)

// BackupTargetKind is GraphQL's BackupTargetKind.
type BackupTargetKind string

const (
	TargetLocal BackupTargetKind = "LOCAL" // the account's node's own backup area
	TargetNode  BackupTargetKind = "NODE"  // a node with role backup, over SFTP
	TargetS3    BackupTargetKind = "S3"
)

// BackupTarget is where repositories are kept.
type BackupTarget struct {
	Name string           `json:"name"`
	Kind BackupTargetKind `json:"kind"`
	// NODE: the backup node; SFTP access to it as it last reported
	// (EnsureBackupAccessAction), which the source nodes pin.
	Node        string `json:"node,omitempty"`
	SFTPAddress string `json:"sftpAddress,omitempty"`
	SFTPUser    string `json:"sftpUser,omitempty"`
	HostKey     string `json:"hostKey,omitempty"`
	// AccessKeys are the source nodes' keys the backup node last accepted
	// (node → public key), so the controller knows when to send it again.
	AccessKeys map[string]string `json:"accessKeys,omitempty"`
	AccessErr  string            `json:"accessError,omitempty"`
	// AccessTaskID is the EnsureBackupAccessAction in flight, if any
	// (UpdateBackupTargetAccess).
	AccessTaskID string `json:"accessTaskId,omitempty"`
	// S3: the secret key is sealed under the KEK (SealBackupTargetSecret).
	Endpoint    string      `json:"endpoint,omitempty"`
	Bucket      string      `json:"bucket,omitempty"`
	Prefix      string      `json:"prefix,omitempty"`
	Region      string      `json:"region,omitempty"`
	AccessKeyID string      `json:"accessKeyId,omitempty"`
	SecretKey   *pki.Sealed `json:"secretKey,omitempty"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// BackupPolicy is a plan's backup settings. A plan without one is not
// backed up on a schedule (createBackup still works with a default target).
type BackupPolicy struct {
	Target string `json:"target"`
	// Disabled stops scheduled backups; Hour is the UTC hour the daily
	// window starts (-1: the default window, each account at a time of
	// its own within it).
	Disabled bool `json:"disabled,omitempty"`
	Hour     int  `json:"hour"`
	// Retention, in backups: the newest of each of the last N days, M
	// weeks and K months.
	KeepDaily   int `json:"keepDaily"`
	KeepWeekly  int `json:"keepWeekly"`
	KeepMonthly int `json:"keepMonthly"`
}

// BackupState is a backup's state (GraphQL BackupStatus).
type BackupState string

const (
	BackupPending   BackupState = "PENDING"
	BackupRunning   BackupState = "RUNNING"
	BackupSucceeded BackupState = "SUCCEEDED"
	BackupPartial   BackupState = "PARTIAL" // some items failed; the rest is kept
	BackupFailed    BackupState = "FAILED"
	BackupDeleting  BackupState = "DELETING"
)

// BackupEvent is one step of a backup's or restore's history.
type BackupEvent struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"` // queued, started, progress, succeeded, partial, failed, verified, ...
	Message string    `json:"message,omitempty"`
}

// BackupItemFailure is one item a backup or restore could not handle.
type BackupItemFailure struct {
	Item  string `json:"item"`
	Error string `json:"error"`
}

// BackupContents is what a backup holds.
type BackupContents struct {
	Files     bool     `json:"files"`
	Databases []string `json:"databases,omitempty"`
	Mailboxes []string `json:"mailboxes,omitempty"`
	Zones     []string `json:"zones,omitempty"`
}

// BackupProgress is what a running backup, restore or verify has done.
type BackupProgress struct {
	FilesDone  uint64    `json:"filesDone"`
	BytesDone  uint64    `json:"bytesDone"`
	TotalFiles uint64    `json:"totalFiles"`
	TotalBytes uint64    `json:"totalBytes"`
	At         time.Time `json:"at"`
}

// Backup is one backup of one account.
type Backup struct {
	ID      string `json:"id"` // NewBackupID: begins with the account
	Account string `json:"account"`
	// AccountID and Owner are the account's, kept for access checks
	// once the account is deleted.
	AccountID string `json:"accountId"`
	Owner     string `json:"owner"`
	Node      string `json:"node"` // the node that runs it (the account's)
	Target    string `json:"target"`
	// Scheduled: made by the schedule, not a user.
	Scheduled bool   `json:"scheduled,omitempty"`
	Requester string `json:"requester,omitempty"`
	// Retention applied after this backup succeeds (the plan's).
	Retention *BackupPolicy `json:"retention,omitempty"`

	// VerifyRequested is bumped by verifyBackup; the controller verifies
	// while Status.VerifiedGeneration is behind it.
	VerifyRequested int64 `json:"verifyRequested,omitempty"`
	// Deleting asks the controller to forget the snapshots, then to
	// delete the record.
	Deleting bool `json:"deleting,omitempty"`

	Generation int64     `json:"generation"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`

	Status BackupStatus `json:"status"`
}

// BackupStatus is what the backup controller observed; written by it (and
// Progress by the gateway) only.
type BackupStatus struct {
	State       BackupState         `json:"state,omitempty"`
	StartedAt   time.Time           `json:"startedAt,omitzero"`
	FinishedAt  time.Time           `json:"finishedAt,omitzero"`
	SizeBytes   uint64              `json:"sizeBytes,omitempty"`
	AddedBytes  uint64              `json:"addedBytes,omitempty"`
	FileCount   uint64              `json:"fileCount,omitempty"`
	Contents    BackupContents      `json:"contents"`
	SnapshotIDs []string            `json:"snapshotIds,omitempty"`
	Failed      []BackupItemFailure `json:"failed,omitempty"`
	Error       string              `json:"error,omitempty"`
	Progress    *BackupProgress     `json:"progress,omitempty"`

	VerifiedAt         time.Time `json:"verifiedAt,omitzero"`
	VerifyOK           bool      `json:"verifyOk,omitempty"`
	VerifyProblems     []string  `json:"verifyProblems,omitempty"`
	VerifiedGeneration int64     `json:"verifiedGeneration,omitempty"`

	// The task in flight, if any (one at most).
	TaskID         string `json:"taskId,omitempty"`
	TaskGeneration int64  `json:"taskGeneration,omitempty"`

	Events []BackupEvent `json:"events,omitempty"`
}

// RestoreWhat is GraphQL's RestoreWhat.
type RestoreWhat string

const (
	RestoreAll      RestoreWhat = "ALL"
	RestoreFiles    RestoreWhat = "FILES"
	RestoreDatabase RestoreWhat = "DATABASE"
	RestoreMailbox  RestoreWhat = "MAILBOX"
	RestoreZone     RestoreWhat = "ZONE"
)

// Restore is one restore of (part of) a backup.
type Restore struct {
	ID        string      `json:"id"` // NewRestoreID: begins with the account
	Backup    string      `json:"backup"`
	Account   string      `json:"account"`
	AccountID string      `json:"accountId"`
	Owner     string      `json:"owner"`
	What      RestoreWhat `json:"what"`
	Path      string      `json:"path,omitempty"`
	// DATABASE: the database backed up, and the name to restore it as
	// (its own name IN_PLACE).
	Database     string `json:"database,omitempty"`
	DatabaseInto string `json:"databaseInto,omitempty"`
	Mailbox      string `json:"mailbox,omitempty"`
	InPlace      bool   `json:"inPlace,omitempty"`
	// Node restores onto; for ALL it may differ from the account's node
	// (disaster recovery: the original node is gone).
	Node      string `json:"node"`
	Requester string `json:"requester,omitempty"`

	Generation int64     `json:"generation"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`

	Status RestoreStatus `json:"status"`
}

// RestoreStatus is what the controller observed.
type RestoreStatus struct {
	State      BackupState         `json:"state,omitempty"` // PENDING, RUNNING, SUCCEEDED, PARTIAL, FAILED
	StartedAt  time.Time           `json:"startedAt,omitzero"`
	FinishedAt time.Time           `json:"finishedAt,omitzero"`
	Restored   []string            `json:"restored,omitempty"`
	Failed     []BackupItemFailure `json:"failed,omitempty"`
	Error      string              `json:"error,omitempty"`
	// Step is where a multi-step restore (ALL onto another node) is.
	Step string `json:"step,omitempty"`
	// HeldCertificates are the installed certificates whose keys the
	// backup holds, held for the restore as it placed the account: the
	// node serves those, and no other site's.
	HeldCertificates []string        `json:"heldCertificates,omitempty"`
	Progress         *BackupProgress `json:"progress,omitempty"`
	TaskID           string          `json:"taskId,omitempty"`
	TaskGeneration   int64           `json:"taskGeneration,omitempty"`
	Events           []BackupEvent   `json:"events,omitempty"`
}

// NewBackupID returns a new backup id of account: the account, the UTC
// time and a random suffix ("alice-20261206t031500-3f9a"). The account
// (user names have no '-') leads so the record's key follows from the id.
func NewBackupID(account string, now time.Time) string {
	return newAccountObjectID(account, "", now)
}

// NewRestoreID is NewBackupID for restores ("alice-r20261206t031500-3f9a").
func NewRestoreID(account string, now time.Time) string {
	return newAccountObjectID(account, "r", now)
}

func newAccountObjectID(account, kind string, now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return account + "-" + kind + now.UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:])
}

// AccountOfBackupID returns the account a backup or restore id names.
func AccountOfBackupID(id string) (string, bool) {
	acct, _, ok := strings.Cut(id, "-")
	return acct, ok && acct != ""
}

func backupKey(id string) (string, error) {
	acct, ok := AccountOfBackupID(id)
	if !ok || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("backup %q: %w", id, ErrNotFound)
	}
	return prefixBackups + acct + "/" + id, nil
}

func restoreKey(id string) (string, error) {
	acct, ok := AccountOfBackupID(id)
	if !ok || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("restore %q: %w", id, ErrNotFound)
	}
	return prefixRestores + acct + "/" + id, nil
}

// BackupObject and RestoreObject name the task object of a backup's and a
// restore's tasks.
func BackupObject(id string) string  { return backupDoneKind + "/" + id }
func RestoreObject(id string) string { return restoreDoneKind + "/" + id }

// AddEvent appends an event, keeping the newest maxBackupEvents.
func (st *BackupStatus) AddEvent(at time.Time, kind, msg string) {
	st.Events = addBackupEvent(st.Events, at, kind, msg)
}

// AddEvent appends an event, keeping the newest maxBackupEvents.
func (st *RestoreStatus) AddEvent(at time.Time, kind, msg string) {
	st.Events = addBackupEvent(st.Events, at, kind, msg)
}

func addBackupEvent(evs []BackupEvent, at time.Time, kind, msg string) []BackupEvent {
	evs = append(evs, BackupEvent{At: at.UTC(), Kind: kind, Message: msg})
	if n := len(evs) - maxBackupEvents; n > 0 {
		evs = slices.Delete(evs, 0, n)
	}
	return evs
}

// DecodeBackup decodes an event of KindBackups.
func DecodeBackup(ev Event) (*Backup, error) { return decodeJSON[Backup]([]byte(ev.Name), ev.Value) }

// DecodeRestore decodes an event of KindRestores.
func DecodeRestore(ev Event) (*Restore, error) { return decodeJSON[Restore]([]byte(ev.Name), ev.Value) }

// --- targets ---

func backupTargetKey(name string) string { return prefixBackupTargets + name }

// CreateBackupTarget writes a new target; ErrConflict when the name is
// taken.
func (s *Store) CreateBackupTarget(ctx context.Context, t *BackupTarget, audit AuditEvent) error {
	now := time.Now().UTC()
	t.CreatedAt, t.UpdatedAt = now, now
	resp, err := s.cli.Txn(ctx).If(absent(backupTargetKey(t.Name))).
		Then(clientv3.OpPut(backupTargetKey(t.Name), mustJSON(t)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("create backup target %s: %w", t.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("backup target %q exists: %w", t.Name, ErrConflict)
	}
	return nil
}

// GetBackupTarget reads one target.
func (s *Store) GetBackupTarget(ctx context.Context, name string) (*BackupTarget, error) {
	t, _, err := getJSON[BackupTarget](ctx, s.cli, backupTargetKey(name))
	return t, err
}

// ListBackupTargets reads every target, in name order.
func (s *Store) ListBackupTargets(ctx context.Context) ([]BackupTarget, error) {
	ts, _, err := listJSON[BackupTarget](ctx, s.cli, prefixBackupTargets)
	return ts, err
}

// UpdateBackupTarget applies fn to the target and writes it back
// (compare-and-swap, retried), with the tasks fn returns.
func (s *Store) UpdateBackupTarget(ctx context.Context, name string, fn func(t *BackupTarget) ([]*ObjectTask, error), audit AuditEvent) (*BackupTarget, error) {
	return updateRecord(ctx, s, backupTargetKey(name), "backup-target/"+name,
		func(t *BackupTarget) ([]*ObjectTask, error) {
			t.UpdatedAt = time.Now().UTC()
			return fn(t)
		}, nil, audit)
}

// DeleteBackupTarget removes a target. The caller checks that no plan and
// no backup uses it.
func (s *Store) DeleteBackupTarget(ctx context.Context, name string, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(present(backupTargetKey(name))).
		Then(clientv3.OpDelete(backupTargetKey(name)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("delete backup target %s: %w", name, err)
	}
	if !resp.Succeeded {
		return ErrNotFound
	}
	return nil
}

// SealBackupTargetSecret seals an S3 secret key under kek for target name.
func SealBackupTargetSecret(kek *pki.KEK, name string, secret []byte) (*pki.Sealed, error) {
	return kek.Seal(backupTargetKey(name), secret)
}

// OpenBackupTargetSecret opens what SealBackupTargetSecret sealed.
func OpenBackupTargetSecret(kek *pki.KEK, t *BackupTarget) ([]byte, error) {
	if t.SecretKey == nil {
		return nil, nil
	}
	return kek.Open(backupTargetKey(t.Name), t.SecretKey)
}

// --- backups ---

// CreateBackup writes a new backup record (PENDING) with its audit event.
func (s *Store) CreateBackup(ctx context.Context, b *Backup, audit AuditEvent) error {
	key, err := backupKey(b.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	b.CreatedAt, b.UpdatedAt = now, now
	if b.Generation == 0 {
		b.Generation = 1
	}
	if b.Status.State == "" {
		b.Status.State = BackupPending
		b.Status.AddEvent(now, "queued", "")
	}
	ops := []clientv3.Op{clientv3.OpPut(key, mustJSON(b))}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(key)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create backup %s: %w", b.ID, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// GetBackup reads one backup.
func (s *Store) GetBackup(ctx context.Context, id string) (*Backup, error) {
	b, _, err := s.GetBackupRev(ctx, id)
	return b, err
}

// GetBackupRev reads one backup with the revision it was last written at:
// a WatchBackup from that revision misses no later write.
func (s *Store) GetBackupRev(ctx context.Context, id string) (*Backup, int64, error) {
	key, err := backupKey(id)
	if err != nil {
		return nil, 0, err
	}
	return getJSON[Backup](ctx, s.cli, key)
}

// WatchBackup follows backup id's record from the revision after afterRev.
func (s *Store) WatchBackup(ctx context.Context, id string, afterRev int64) (<-chan WatchBatch, error) {
	key, err := backupKey(id)
	if err != nil {
		return nil, err
	}
	return s.Watch(ctx, Kind{label: "backup " + id, prefix: key, exact: true}, afterRev), nil
}

// ListBackups reads at most limit backups of account with ids after after
// (from the oldest when it is ""), oldest first; more says whether any
// follow.
func (s *Store) ListBackups(ctx context.Context, account, after string, limit int) (bs []Backup, more bool, err error) {
	return pageJSON[Backup](ctx, s.cli, prefixBackups+account+"/", after, limit)
}

// ListAllBackups reads every backup of every account (the controller's
// resync and the schedule).
func (s *Store) ListAllBackups(ctx context.Context) ([]Backup, error) {
	bs, _, err := listJSON[Backup](ctx, s.cli, prefixBackups)
	return bs, err
}

// UpdateBackup applies fn to the backup and writes it back if nobody wrote
// it meanwhile (retrying otherwise), with the tasks fn returns; a tracked
// task is recorded as the one in flight.
func (s *Store) UpdateBackup(ctx context.Context, id string, fn func(b *Backup) ([]*ObjectTask, error), audit AuditEvent) (*Backup, error) {
	key, err := backupKey(id)
	if err != nil {
		return nil, err
	}
	return updateRecord(ctx, s, key, BackupObject(id),
		func(b *Backup) ([]*ObjectTask, error) {
			b.UpdatedAt = time.Now().UTC()
			return fn(b)
		},
		func(b *Backup, task string, gen int64) { b.Status.TaskID, b.Status.TaskGeneration = task, gen },
		audit)
}

// DeleteBackup removes the backup's record and its done notices.
func (s *Store) DeleteBackup(ctx context.Context, id string, audit AuditEvent) error {
	key, err := backupKey(id)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(key),
		clientv3.OpDelete(prefixDone+backupDoneKind+"/"+id+"/", clientv3.WithPrefix()),
	}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(present(key)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("delete backup %s: %w", id, err)
	}
	if !resp.Succeeded {
		return ErrNotFound
	}
	return nil
}

// BackupOutcomes returns the ids of backup id's finished tasks the
// controller has not consumed yet.
func (s *Store) BackupOutcomes(ctx context.Context, id string) ([]string, error) {
	return s.outcomes(ctx, backupDoneKind, id)
}

// ForgetBackupOutcome removes one done notice once consumed.
func (s *Store) ForgetBackupOutcome(ctx context.Context, id, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(backupDoneKind, id, task))
	return err
}

// --- restores ---

// CreateRestore writes a new restore record (PENDING).
func (s *Store) CreateRestore(ctx context.Context, r *Restore, audit AuditEvent) error {
	key, err := restoreKey(r.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	r.CreatedAt, r.UpdatedAt = now, now
	if r.Generation == 0 {
		r.Generation = 1
	}
	if r.Status.State == "" {
		r.Status.State = BackupPending
		r.Status.AddEvent(now, "queued", "")
	}
	ops := []clientv3.Op{clientv3.OpPut(key, mustJSON(r))}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(key)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create restore %s: %w", r.ID, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// GetRestoreRev reads one restore with its revision.
func (s *Store) GetRestoreRev(ctx context.Context, id string) (*Restore, int64, error) {
	key, err := restoreKey(id)
	if err != nil {
		return nil, 0, err
	}
	return getJSON[Restore](ctx, s.cli, key)
}

// WatchRestore follows restore id's record from the revision after afterRev.
func (s *Store) WatchRestore(ctx context.Context, id string, afterRev int64) (<-chan WatchBatch, error) {
	key, err := restoreKey(id)
	if err != nil {
		return nil, err
	}
	return s.Watch(ctx, Kind{label: "restore " + id, prefix: key, exact: true}, afterRev), nil
}

// ListRestores reads every restore of account, oldest first.
func (s *Store) ListRestores(ctx context.Context, account string) ([]Restore, error) {
	rs, _, err := listJSON[Restore](ctx, s.cli, prefixRestores+account+"/")
	return rs, err
}

// ListAllRestores reads every restore (the controller's resync).
func (s *Store) ListAllRestores(ctx context.Context) ([]Restore, error) {
	rs, _, err := listJSON[Restore](ctx, s.cli, prefixRestores)
	return rs, err
}

// UpdateRestore is UpdateBackup for restores.
func (s *Store) UpdateRestore(ctx context.Context, id string, fn func(r *Restore) ([]*ObjectTask, error), audit AuditEvent) (*Restore, error) {
	key, err := restoreKey(id)
	if err != nil {
		return nil, err
	}
	return updateRecord(ctx, s, key, RestoreObject(id),
		func(r *Restore) ([]*ObjectTask, error) {
			r.UpdatedAt = time.Now().UTC()
			return fn(r)
		},
		func(r *Restore, task string, gen int64) { r.Status.TaskID, r.Status.TaskGeneration = task, gen },
		audit)
}

// RestoreOutcomes returns the ids of restore id's finished tasks not
// consumed yet.
func (s *Store) RestoreOutcomes(ctx context.Context, id string) ([]string, error) {
	return s.outcomes(ctx, restoreDoneKind, id)
}

// ForgetRestoreOutcome removes one done notice once consumed.
func (s *Store) ForgetRestoreOutcome(ctx context.Context, id, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(restoreDoneKind, id, task))
	return err
}

func (s *Store) outcomes(ctx context.Context, kind, id string) ([]string, error) {
	resp, err := s.cli.Get(ctx, prefixDone+kind+"/"+id+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%s %s outcomes: %w", kind, id, err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Value))
	}
	return out, nil
}

// --- repository passwords ---

func backupKeyKey(account string) string { return prefixBackupKeys + account }

// BackupPassword returns account's restic repository password, creating
// it (32 random bytes, base64) on first use. It is stored sealed under kek
// and outlives the account, so its backups stay readable.
func (s *Store) BackupPassword(ctx context.Context, kek *pki.KEK, account string) ([]byte, error) {
	key := backupKeyKey(account)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("backup password of %s: %w", account, err)
		}
		if len(resp.Kvs) > 0 {
			var rec sealedRecord
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || rec.Sealed == nil {
				return nil, fmt.Errorf("backup password of %s: malformed record", account)
			}
			return kek.Open(key, rec.Sealed)
		}
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		pw := []byte(base64.RawURLEncoding.EncodeToString(raw[:]))
		sealed, err := kek.Seal(key, pw)
		if err != nil {
			return nil, err
		}
		put, err := s.cli.Txn(ctx).If(absent(key)).Then(clientv3.OpPut(key, mustJSON(sealedRecord{Sealed: sealed}))).Commit()
		if err != nil {
			return nil, fmt.Errorf("backup password of %s: %w", account, err)
		}
		if put.Succeeded {
			return pw, nil
		}
		// Another replica created it first: read that one.
	}
}

// DeleteBackupPassword forgets account's repository password, once none
// of its backups is left anywhere.
func (s *Store) DeleteBackupPassword(ctx context.Context, account string) error {
	_, err := s.cli.Delete(ctx, backupKeyKey(account))
	return err
}
