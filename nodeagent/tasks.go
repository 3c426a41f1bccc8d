package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

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
	if err != nil {
		// An unreadable entry costs one repeated apply, which is harmless.
		log.Error("journal lookup; applying the task again", "task", id, "err", err)
	}
	if done {
		r.mu.Unlock()
		r.a.metrics.duplicates.Inc()
		log.Debug("duplicate task already done; resending the journaled result", "task", id)
		r.a.sendResult(e.result())
		return
	}
	r.inflight[id] = struct{}{}
	r.mu.Unlock()

	select {
	case r.slots <- struct{}{}:
	case <-streamCtx.Done():
		r.mu.Lock()
		delete(r.inflight, id)
		r.mu.Unlock()
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
		if err := r.journal.append(entryFromResult(res)); err != nil {
			// Send anyway: the gateway may as well have the result. The
			// cost of the missing entry is one repeated apply if a re-send
			// races the acknowledgement.
			r.a.log.Error("journal append", "task", id, "err", err)
		}
	}
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
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
	fail := func(msg string) (*agentpb.TaskResult, bool) {
		res.Status = agentpb.TaskStatus_TASK_STATUS_FAILED
		res.Error = msg
		res.FinishedUnixNano = time.Now().UnixNano()
		r.a.metrics.applied.WithLabelValues(name, "failed").Inc()
		r.a.log.Warn("task failed", "task", t.GetId(), "action", name, "err", msg)
		return res, true
	}

	act, err := r.a.allow.FromTask(t)
	if err != nil {
		return fail(err.Error())
	}
	name = act.Name()
	if tn, ok := act.(actions.TestNameAware); ok && r.a.cfg.AllowTestUsernames {
		tn.AllowTestUsernames()
	}
	if err := act.Validate(); err != nil {
		return fail("invalid input: " + err.Error())
	}

	env := r.a.env(r.a.log.With("task", t.GetId(), "action", name, "generation", t.GetGeneration()))
	start := time.Now()
	out, err := apply(r.ctx, act, env)
	r.a.metrics.applySeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	if err != nil {
		if r.ctx.Err() != nil {
			r.a.log.Info("task interrupted by shutdown; it will be applied again", "task", t.GetId(), "action", name)
			return nil, false
		}
		return fail(err.Error())
	}
	if out != nil {
		b, err := json.Marshal(out)
		if err != nil {
			return fail(fmt.Sprintf("encode %s result: %v", name, err))
		}
		res.ResultJson = string(b)
	}
	res.Status = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
	res.FinishedUnixNano = time.Now().UnixNano()
	r.a.metrics.applied.WithLabelValues(name, "succeeded").Inc()
	r.a.log.Debug("task succeeded", "task", t.GetId(), "action", name, "took", time.Since(start))
	return res, true
}

// apply runs act.Apply and turns a panic into an error: one faulty action
// must fail its task, not take the agent (and every other task) down.
func apply(ctx context.Context, act actions.Action, env *actions.Env) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			env.Logger.Error("action panicked", "panic", p, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("action %s panicked: %v", act.Name(), p)
		}
	}()
	return act.Apply(ctx, env)
}

// wait blocks until every started task has finished.
func (r *runner) wait() { r.wg.Wait() }
