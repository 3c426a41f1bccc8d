package nodeagent

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// runner applies tasks: at most once per task id (journal plus in-flight
// set), at most Concurrency at a time.
//
// The ordering per task is: apply, append to the journal (synced), leave
// the in-flight set, send the result. A re-send of the task therefore finds
// it either in flight (ignored: the result will follow) or journaled
// (answered from the journal), never in neither, and a crash before the
// append loses only a result that was never sent, so the gateway re-sends
// the task and it is applied again, which tasks are designed to allow.
type runner struct {
	a       *Agent
	journal *journal
	slots   chan struct{}
	// ctx bounds applies. It is the agent's, not the stream's: a dropped
	// stream must not abort work half done.
	ctx context.Context

	mu       sync.Mutex
	inflight map[string]struct{}
	wg       sync.WaitGroup
}

func newRunner(ctx context.Context, a *Agent, j *journal) *runner {
	return &runner{
		a:        a,
		journal:  j,
		slots:    make(chan struct{}, a.cfg.Concurrency),
		ctx:      ctx,
		inflight: make(map[string]struct{}),
	}
}

// handle takes one task from the stream. It blocks while all slots are busy,
// which stops reading the stream and so pushes back on the gateway through
// gRPC flow control; streamCtx ends the wait when the stream goes away.
func (r *runner) handle(streamCtx context.Context, t *agentpb.Task) {
	log := r.a.log
	id := t.GetId()
	if id == "" {
		// Without an id there is nothing to journal or to answer.
		log.Error("dropping task without id")
		return
	}

	r.mu.Lock()
	if _, ok := r.inflight[id]; ok {
		r.mu.Unlock()
		r.a.metrics.duplicates.Inc()
		log.Debug("duplicate task still in flight; ignored", "task", id)
		return
	}
	e, done, err := r.journal.lookup(id)
	var prev *agentpb.TaskResult
	if done {
		prev, err = e.result()
	}
	if err != nil {
		// An unreadable entry costs one repeated apply, which is harmless.
		log.Error("journal lookup; applying the task again", "task", id, "err", err)
	}
	if prev != nil {
		r.mu.Unlock()
		r.a.metrics.duplicates.Inc()
		log.Debug("duplicate task already done; resending the journaled result", "task", id)
		r.a.sendResult(prev)
		return
	}
	r.inflight[id] = struct{}{}
	r.mu.Unlock()
	r.a.metrics.inFlight.Inc()

	select {
	case r.slots <- struct{}{}:
	case <-streamCtx.Done():
		r.mu.Lock()
		delete(r.inflight, id)
		r.mu.Unlock()
		r.a.metrics.inFlight.Dec()
		return
	}
	r.wg.Go(func() { r.run(t) })
}

// run applies t in a slot taken by handle, then records and reports it.
func (r *runner) run(t *agentpb.Task) {
	id := t.GetId()
	res, record := r.execute(t)
	// The slot bounds applies, not result delivery: a send blocked on a slow
	// stream must not hold a slot and so stall the reading of new tasks.
	<-r.slots
	if record {
		e, err := entryFromResult(res)
		if err == nil {
			err = r.journal.append(e)
		}
		if err != nil {
			// Send anyway: the gateway may as well have the result. The
			// cost of the missing entry is one repeated apply if a re-send
			// races the acknowledgement.
			r.a.log.Error("journal append", "task", id, "err", err)
		}
	}
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
	r.a.metrics.inFlight.Dec()
	if record {
		r.a.sendResult(res)
	}
}

// execute validates and applies t. record is false when the apply was cut
// short by the agent stopping: such a task is neither journaled nor
// answered, so that it is applied again after the restart instead of being
// remembered as failed.
func (r *runner) execute(t *agentpb.Task) (res *agentpb.TaskResult, record bool) {
	res = &agentpb.TaskResult{TaskId: t.GetId(), Generation: t.GetGeneration()}
	name := "unknown"
	var start time.Time // set once Apply starts
	fail := func(reason agentpb.ErrorReason, msg string) (*agentpb.TaskResult, bool) {
		if !start.IsZero() {
			r.a.metrics.applySeconds.WithLabelValues(name, "failed").Observe(time.Since(start).Seconds())
		}
		res.Status = agentpb.TaskStatus_TASK_STATUS_FAILED
		res.Reason, res.Error = reason, msg
		res.Result = nil
		res.FinishedUnixNano = time.Now().UnixNano()
		r.a.metrics.applied.WithLabelValues(name, "failed").Inc()
		r.a.log.Warn("task failed", "task", t.GetId(), "action", name, "reason", reason, "err", msg)
		return res, true
	}

	act, err := r.a.allow.FromTask(t)
	if err != nil {
		return fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, err.Error())
	}
	name = act.Name()
	if tn, ok := act.(actions.TestNameAware); ok && r.a.cfg.AllowTestUsernames {
		tn.AllowTestUsernames()
	}
	if err := act.Validate(); err != nil {
		return fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "invalid input: "+err.Error())
	}
	if ta, ok := act.(actions.TaskAware); ok {
		ta.SetTaskID(t.GetId())
	}

	env := r.a.env(r.a.log.With("task", t.GetId(), "action", name, "generation", t.GetGeneration()))
	start = time.Now()
	out, err := apply(r.ctx, act, env)
	if err != nil {
		if r.ctx.Err() != nil {
			r.a.log.Info("task interrupted by shutdown; it will be applied again", "task", t.GetId(), "action", name)
			return nil, false
		}
		return fail(actions.ReasonOf(err), err.Error())
	}
	if err := setResult(res, out); err != nil {
		return fail(agentpb.ErrorReason_ERROR_REASON_INTERNAL, fmt.Sprintf("%s: %v", name, err))
	}
	res.Status = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
	res.FinishedUnixNano = time.Now().UnixNano()
	r.a.metrics.applySeconds.WithLabelValues(name, "succeeded").Observe(time.Since(start).Seconds())
	r.a.metrics.applied.WithLabelValues(name, "succeeded").Inc()
	r.a.log.Debug("task succeeded", "task", t.GetId(), "action", name, "took", time.Since(start))
	return res, true
}

// apply runs act.Apply and turns a panic into an error: one faulty action
// must fail its task, not take the agent (and every other task) down.
func apply(ctx context.Context, act actions.Action, env *actions.Env) (out proto.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			env.Logger.Error("action panicked", "panic", p, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("action %s panicked: %v", act.Name(), p)
		}
	}()
	return act.Apply(ctx, env)
}

// setResult puts an action's typed result into res's oneof. A message that
// has no case there is an error, so that a new action whose result was not
// added to TaskResult fails loudly instead of succeeding without it.
func setResult(res *agentpb.TaskResult, out proto.Message) error {
	if out == nil || !out.ProtoReflect().IsValid() {
		return nil // none, or a typed nil
	}
	switch m := out.(type) {
	case *agentpb.PingResult:
		res.Result = &agentpb.TaskResult_Ping{Ping: m}
	case *agentpb.AccountResult:
		res.Result = &agentpb.TaskResult_Account{Account: m}
	case *agentpb.RestartServiceResult:
		res.Result = &agentpb.TaskResult_RestartService{RestartService: m}
	case *agentpb.ZoneResult:
		res.Result = &agentpb.TaskResult_Zone{Zone: m}
	case *agentpb.SyncSecondaryZonesResult:
		res.Result = &agentpb.TaskResult_SyncSecondaryZones{SyncSecondaryZones: m}
	case *agentpb.CheckPrimaryZonesResult:
		res.Result = &agentpb.TaskResult_CheckPrimaryZones{CheckPrimaryZones: m}
	case *agentpb.DatabaseResult:
		res.Result = &agentpb.TaskResult_Database{Database: m}
	case *agentpb.DatabaseUserResult:
		res.Result = &agentpb.TaskResult_DatabaseUser{DatabaseUser: m}
	case *agentpb.ListDatabasesResult:
		res.Result = &agentpb.TaskResult_ListDatabases{ListDatabases: m}
	case *agentpb.DomainLogResult:
		res.Result = &agentpb.TaskResult_DomainLog{DomainLog: m}
	case *agentpb.MailDomainResult:
		res.Result = &agentpb.TaskResult_MailDomain{MailDomain: m}
	case *agentpb.MailboxResult:
		res.Result = &agentpb.TaskResult_Mailbox{Mailbox: m}
	case *agentpb.MailUsageResult:
		res.Result = &agentpb.TaskResult_MailUsage{MailUsage: m}
	case *agentpb.MailLogResult:
		res.Result = &agentpb.TaskResult_MailLog{MailLog: m}
	case *agentpb.ScanMailboxResult:
		res.Result = &agentpb.TaskResult_ScanMailbox{ScanMailbox: m}
	case *agentpb.MailQueueResult:
		res.Result = &agentpb.TaskResult_MailQueue{MailQueue: m}
	case *agentpb.TrainMailResult:
		res.Result = &agentpb.TaskResult_TrainMail{TrainMail: m}
	case *agentpb.CertificateResult:
		res.Result = &agentpb.TaskResult_Certificate{Certificate: m}
	case *agentpb.BackupResult:
		res.Result = &agentpb.TaskResult_Backup{Backup: m}
	case *agentpb.RestoreResult:
		res.Result = &agentpb.TaskResult_Restore{Restore: m}
	case *agentpb.VerifyResult:
		res.Result = &agentpb.TaskResult_Verify{Verify: m}
	case *agentpb.ForgetResult:
		res.Result = &agentpb.TaskResult_Forget{Forget: m}
	case *agentpb.BackupAccessResult:
		res.Result = &agentpb.TaskResult_BackupAccess{BackupAccess: m}
	case *agentpb.MigrationKeyResult:
		res.Result = &agentpb.TaskResult_MigrationKey{MigrationKey: m}
	case *agentpb.AuthorizeMigrationResult:
		res.Result = &agentpb.TaskResult_AuthorizeMigration{AuthorizeMigration: m}
	case *agentpb.SyncMigrationResult:
		res.Result = &agentpb.TaskResult_SyncMigration{SyncMigration: m}
	case *agentpb.RevokeMigrationResult:
		res.Result = &agentpb.TaskResult_RevokeMigration{RevokeMigration: m}
	case *agentpb.ExportCredentialsResult:
		res.Result = &agentpb.TaskResult_ExportCredentials{ExportCredentials: m}
	case *agentpb.AnalyzeCpanelBackupResult:
		res.Result = &agentpb.TaskResult_AnalyzeCpanelBackup{AnalyzeCpanelBackup: m}
	case *agentpb.ImportCpanelBackupResult:
		res.Result = &agentpb.TaskResult_ImportCpanelBackup{ImportCpanelBackup: m}
	case *agentpb.ScanCpanelServerResult:
		res.Result = &agentpb.TaskResult_ScanCpanelServer{ScanCpanelServer: m}
	case *agentpb.FetchCpanelBackupResult:
		res.Result = &agentpb.TaskResult_FetchCpanelBackup{FetchCpanelBackup: m}
	case *agentpb.NodeMetricsResult:
		res.Result = &agentpb.TaskResult_NodeMetrics{NodeMetrics: m}
	case *agentpb.ServiceLogResult:
		res.Result = &agentpb.TaskResult_ServiceLog{ServiceLog: m}
	case *agentpb.TrafficResult:
		res.Result = &agentpb.TaskResult_Traffic{Traffic: m}
	default:
		return fmt.Errorf("result of type %T has no case in TaskResult.result", out)
	}
	return nil
}

// wait blocks until every started task has finished.
func (r *runner) wait() { r.wg.Wait() }
