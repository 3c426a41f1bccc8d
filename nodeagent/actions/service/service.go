// Package service implements restartService: an operator restarts one of
// the daemons the agent manages, by the name the agent reports for it.
package service

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// RestartName is the action name in metrics and logs.
const RestartName = "restartService"

// Restart restarts one managed daemon.
type Restart struct{ name string }

var _ actions.Action = (*Restart)(nil)

// NewRestart builds the action from its wire form.
func NewRestart(req *agentpb.RestartServiceAction) *Restart {
	return &Restart{name: req.GetName()}
}

// Name implements actions.Action.
func (a *Restart) Name() string { return RestartName }

// Validate implements actions.Action.
func (a *Restart) Validate() error { return validate.ObjectName("name", a.name) }

// Apply implements actions.Action. Only daemons the agent itself manages
// can be named: the name is looked up in the manager, never used to build a
// unit name or a path.
func (a *Restart) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if env.Services == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent manages no services (it runs no web, DNS or database module)")
	}
	if err := env.Services.Restart(ctx, a.name); err != nil {
		if errors.Is(err, services.ErrUnknown) {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no service %q on this node (%s)", a.name, names(env.Services))
		}
		return nil, fmt.Errorf("restart %s: %w", a.name, err)
	}
	for _, st := range env.Services.Status() {
		if st.Name == a.name {
			return &agentpb.RestartServiceResult{Service: st.Proto()}, nil
		}
	}
	return nil, fmt.Errorf("service %q vanished during its restart", a.name)
}

func names(m services.Manager) string {
	var out []string
	for _, st := range m.Status() {
		out = append(out, st.Name)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "it manages none"
	}
	return fmt.Sprintf("it manages %v", out)
}
