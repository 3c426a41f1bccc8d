package store

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

// TaskError is a failed task's error as its agent reported it. Callers
// branch on Reason, never on the text.
type TaskError struct {
	Reason  agentpb.ErrorReason
	Message string
}

func (e *TaskError) Error() string { return e.Message }

// Err is nil for a succeeded task, a *TaskError for a failed one, and an
// error saying so for one still pending.
func (t *Task) Err() error {
	switch t.Status {
	case TaskSucceeded:
		return nil
	case TaskFailed:
		return &TaskError{Reason: t.Reason, Message: t.Error}
	}
	return fmt.Errorf("task %s is %s", t.ID, t.Status)
}

// encodeResult keeps only r's typed result: its status, error and ids are
// fields of the task record already.
func encodeResult(r *agentpb.TaskResult) ([]byte, error) {
	if r.GetResult() == nil {
		return nil, nil
	}
	b, err := proto.Marshal(&agentpb.TaskResult{Result: r.GetResult()})
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}

// ResultMessage returns the message of the task's typed result, nil when
// it has none (an action without a result, or a task not done).
func (t *Task) ResultMessage() (proto.Message, error) {
	r, err := t.decodeResult()
	if err != nil || r.GetResult() == nil {
		return nil, err
	}
	m := r.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("result"))
	return m.Get(fd).Message().Interface(), nil
}

func (t *Task) decodeResult() (*agentpb.TaskResult, error) {
	r := &agentpb.TaskResult{}
	if err := proto.Unmarshal(t.Result, r); err != nil {
		return nil, fmt.Errorf("task %s (%s): decode result: %w", t.ID, t.Action, err)
	}
	return r, nil
}

// resultCase names the oneof case r holds ("none" for none).
func resultCase(r *agentpb.TaskResult) string {
	m := r.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("result")); fd != nil {
		return string(fd.Name())
	}
	return "none"
}

// typedResult returns t's result as the message get extracts. It is an
// error, never a zero value, when t did not succeed (the *TaskError), when
// the result does not decode or when it holds another kind of result:
// a zero serial or an empty listing taken for the node's answer would be
// acted on.
func typedResult[M interface {
	proto.Message
	comparable
}](t *Task, get func(*agentpb.TaskResult) M) (M, error) {
	var zero M
	if err := t.Err(); err != nil {
		return zero, err
	}
	r, err := t.decodeResult()
	if err != nil {
		return zero, err
	}
	m := get(r)
	if m == zero {
		return zero, fmt.Errorf("task %s (%s): result is %s, want %s", t.ID, t.Action, resultCase(r), zero.ProtoReflect().Descriptor().Name())
	}
	return m, nil
}

// The typed accessors of a task's result, one per kind of result.

func (t *Task) PingResult() (*agentpb.PingResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetPing)
}

func (t *Task) AccountResult() (*agentpb.AccountResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetAccount)
}

func (t *Task) RestartServiceResult() (*agentpb.RestartServiceResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetRestartService)
}

// ZoneResult is the result of ensureZone, deleteZone, rotateZoneKeys and
// refreshSecondaryZone.
func (t *Task) ZoneResult() (*agentpb.ZoneResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetZone)
}

func (t *Task) SyncSecondaryZonesResult() (*agentpb.SyncSecondaryZonesResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetSyncSecondaryZones)
}

func (t *Task) CheckPrimaryZonesResult() (*agentpb.CheckPrimaryZonesResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetCheckPrimaryZones)
}

// DatabaseResult is the result of ensureDatabase, dropDatabase and
// optimizeDatabase.
func (t *Task) DatabaseResult() (*agentpb.DatabaseResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetDatabase)
}

func (t *Task) DatabaseUserResult() (*agentpb.DatabaseUserResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetDatabaseUser)
}

func (t *Task) DomainLogResult() (*agentpb.DomainLogResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetDomainLog)
}

func (t *Task) ListDatabasesResult() (*agentpb.ListDatabasesResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetListDatabases)
}

// CertificateResult is the result of the four certificate actions.
func (t *Task) CertificateResult() (*agentpb.CertificateResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetCertificate)
}

// The results of a migration's steps (migrate.proto).

func (t *Task) MigrationKeyResult() (*agentpb.MigrationKeyResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMigrationKey)
}

func (t *Task) AuthorizeMigrationResult() (*agentpb.AuthorizeMigrationResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetAuthorizeMigration)
}

func (t *Task) SyncMigrationResult() (*agentpb.SyncMigrationResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetSyncMigration)
}

func (t *Task) ExportCredentialsResult() (*agentpb.ExportCredentialsResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetExportCredentials)
}

// TrafficResult, ServiceLogResult and NodeMetricsResult are the typed
// results of the observability query tasks.

func (t *Task) TrafficResult() (*agentpb.TrafficResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetTraffic)
}

func (t *Task) ServiceLogResult() (*agentpb.ServiceLogResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetServiceLog)
}

func (t *Task) NodeMetricsResult() (*agentpb.NodeMetricsResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetNodeMetrics)
}
