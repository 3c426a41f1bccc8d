package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

func nodeModel(v *store.NodeView) *model.Node {
	n := &model.Node{
		Name:         v.Name,
		Address:      v.Address,
		Draining:     v.Draining,
		MaxAccounts:  v.Capacity().Accounts,
		DiskMb:       v.DiskMB,
		Status:       model.NodeStatus(v.State.Status),
		Capabilities: v.State.Facts.Capabilities,
		Capacity: &model.Capacity{
			Cpus:        v.State.Facts.CPUs,
			MemoryBytes: v.State.Facts.MemoryBytes,
			DiskBytes:   v.State.Facts.DiskBytes,
		},
		StatusReason:    strPtr(v.State.StatusReason),
		StatusChangedAt: timePtr(v.State.StatusChangedAt),
		LastSeen:        timePtr(v.State.LastSeen),
		EnrolledAt:      timePtr(v.State.EnrolledAt),
		AgentVersion:    strPtr(v.State.AgentVersion),
		Os:              strPtr(v.State.Facts.OS),
		Kernel:          strPtr(v.State.Facts.Kernel),
		Arch:            strPtr(v.State.Facts.Arch),
	}
	if n.Status == "" {
		n.Status = model.NodeStatusPending
	}
	if n.Capabilities == nil {
		n.Capabilities = []string{}
	}
	for _, r := range v.Roles {
		n.Roles = append(n.Roles, model.NodeRole(strings.ToUpper(r)))
	}
	keys := make([]string, 0, len(v.Labels))
	for k := range v.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n.Labels = make([]*model.Label, 0, len(keys))
	for _, k := range keys {
		n.Labels = append(n.Labels, &model.Label{Key: k, Value: v.Labels[k]})
	}
	return n
}

func taskModel(t *store.Task) *model.Task {
	return &model.Task{
		ID:         t.ID,
		Node:       t.Node,
		Action:     t.Action,
		Status:     model.TaskStatus(t.Status),
		Result:     strPtr(taskResultJSON(t)),
		Error:      strPtr(t.Error),
		CreatedBy:  t.CreatedBy,
		CreatedAt:  t.CreatedAt,
		FinishedAt: timePtr(t.FinishedAt),
	}
}

// taskResultJSON renders a task's typed result as JSON for the API. A
// result that does not decode shows as none: the field is informative, and
// the code that acts on a result reads it through the typed accessors,
// which fail on it.
func taskResultJSON(t *store.Task) string {
	m, err := t.ResultMessage()
	if err != nil || m == nil {
		return ""
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return ""
	}
	// protojson varies its whitespace on purpose; the API's text is compact.
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func roleModel(r store.Role) model.Role { return model.Role(strings.ToUpper(string(r))) }

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// waitTask returns the task once it has finished, or as it stands when
// timeout passes: a task that outlives the wait keeps running and can be
// polled with the task query. It opens no etcd watch (see store.WaitTask).
func (r *Resolver) waitTask(ctx context.Context, id string, timeout time.Duration) (*store.Task, error) {
	if timeout <= 0 {
		t, _, err := r.Store.GetTask(ctx, id)
		return t, err
	}
	t, err := r.Store.WaitTask(ctx, id, timeout)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && t != nil {
		return t, nil // the caller's deadline: answer with the task as it stands
	}
	return t, err
}

// auditFailure records a refused or failed mutation. Successful mutations
// write their audit event in the same transaction as their change.
//
// A failed mutation changed nothing, so when a tenant (or an anonymous
// caller) was refused, the event goes through the refusal rate limit:
// otherwise one request of thousands of aliased refused mutations would be
// thousands of etcd writes. Written each time, as outcomes that matter:
// an admin's failures (an admin may write at will anyway), a wrong
// password (the login throttle bounds those), and errors of the server.
func (r *Resolver) auditFailure(ctx context.Context, actor, action, target string, err error) {
	if err == nil {
		return
	}
	code, _ := classify(err)
	if code == CodeRateLimited {
		return // bounded by the limiter's log line; auditing each would let a flood write to etcd
	}
	p, signedIn := auth.FromContext(ctx)
	if actor == "" {
		actor = "anonymous"
		if signedIn {
			actor = p.Name
		}
	}
	ev := store.NewAuditEvent(actor, source(ctx), action, target, code)
	matters := signedIn && p.Role == store.RoleAdmin || errors.Is(err, auth.ErrInvalidCredentials) ||
		code == CodeInternal || code == CodeUnavailable
	if !matters {
		if r.Refusals != nil {
			r.Refusals.Record(ctx, store.RefusedMutation, ev)
		}
		return
	}
	if aerr := r.Store.AppendAudit(context.WithoutCancel(ctx), ev); aerr != nil {
		r.Log.Error("write audit event", "action", action, "err", aerr)
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// timeoutArg reads an optional timeoutSeconds argument (0..300).
func timeoutArg(seconds *int, def time.Duration) (time.Duration, error) {
	if seconds == nil {
		return def, nil
	}
	if *seconds < 0 || *seconds > 300 {
		return 0, &validate.Error{Field: "timeoutSeconds", Reason: "must be between 0 and 300"}
	}
	return time.Duration(*seconds) * time.Second, nil
}
