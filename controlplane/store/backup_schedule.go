package store

import (
	"context"
	"time"
)

// What the backup controller needs beyond backups.go: the done notices of
// the backup nodes' access tasks, and a target update that records its
// access task as the one in flight.
const backupTargetDoneKind = "backup-target"

// KindBackupTargetOutcomes: finished access tasks, named by target.
var KindBackupTargetOutcomes = Kind{label: "backup-target-outcomes", prefix: prefixDone + backupTargetDoneKind + "/", name: firstSegment}

// UpdateBackupTargetAccess is UpdateBackupTarget whose tracked task is
// recorded as the target's AccessTaskID.
func (s *Store) UpdateBackupTargetAccess(ctx context.Context, name string, fn func(t *BackupTarget) ([]*ObjectTask, error), audit AuditEvent) (*BackupTarget, error) {
	return updateRecord(ctx, s, backupTargetKey(name), backupTargetDoneKind+"/"+name,
		func(t *BackupTarget) ([]*ObjectTask, error) {
			t.UpdatedAt = time.Now().UTC()
			return fn(t)
		},
		func(t *BackupTarget, task string, _ int64) { t.AccessTaskID = task },
		audit)
}

// BackupTargetOutcomes returns the ids of target name's finished tasks not
// consumed yet.
func (s *Store) BackupTargetOutcomes(ctx context.Context, name string) ([]string, error) {
	return s.outcomes(ctx, backupTargetDoneKind, name)
}

// ForgetBackupTargetOutcome removes one done notice once consumed.
func (s *Store) ForgetBackupTargetOutcome(ctx context.Context, name, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(backupTargetDoneKind, name, task))
	return err
}
