package store

import "github.com/npanel/npanel/protos/agentpb"

// The typed results of the backup actions (backup.proto).

func (t *Task) BackupResult() (*agentpb.BackupResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetBackup)
}

func (t *Task) RestoreResult() (*agentpb.RestoreResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetRestore)
}

func (t *Task) VerifyResult() (*agentpb.VerifyResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetVerify)
}

func (t *Task) ForgetResult() (*agentpb.ForgetResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetForget)
}

func (t *Task) BackupAccessResult() (*agentpb.BackupAccessResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetBackupAccess)
}
