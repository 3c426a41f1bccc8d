package web

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// ReadTrafficName is the action's name in metrics and logs.
const ReadTrafficName = "read_traffic"

// maxTrafficDomains bounds one read (an account's sites on this node).
const maxTrafficDomains = 1000

// ReadTraffic returns the hourly or daily request counters of some of an
// account's domains. Counters are kept per account (the log directory the
// lines came from), so a domain of another account reads as empty.
type ReadTraffic struct {
	traffic  *Traffic
	Username string
	Domains  []string
	Since    time.Time
	Step     agentpb.TrafficStep
}

var _ actions.Action = (*ReadTraffic)(nil)

// NewReadTraffic builds the action from its wire form.
func (m *Module) NewReadTraffic(req *agentpb.ReadTrafficAction) *ReadTraffic {
	a := &ReadTraffic{traffic: m.traffic, Username: req.GetUsername(), Domains: req.GetDomains(), Step: req.GetStep()}
	if n := req.GetSinceUnixNano(); n > 0 {
		a.Since = time.Unix(0, n)
	}
	return a
}

// Name implements actions.Action.
func (*ReadTraffic) Name() string { return ReadTrafficName }

// Validate implements actions.Action.
func (a *ReadTraffic) Validate() error {
	if err := checkUsername(a.Username); err != nil {
		return err
	}
	if len(a.Domains) == 0 || len(a.Domains) > maxTrafficDomains {
		return fmt.Errorf("web: %d domains: want 1 to %d", len(a.Domains), maxTrafficDomains)
	}
	for _, d := range a.Domains {
		if err := canonicalDomain("domain", d); err != nil {
			return err
		}
	}
	if a.Step != agentpb.TrafficStep_TRAFFIC_STEP_HOUR && a.Step != agentpb.TrafficStep_TRAFFIC_STEP_DAY {
		return fmt.Errorf("web: traffic step %d: want HOUR or DAY", a.Step)
	}
	return nil
}

// Apply implements actions.Action.
func (a *ReadTraffic) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	if a.traffic == nil {
		return &agentpb.TrafficResult{}, nil
	}
	doms, err := a.traffic.Read(a.Username, a.Domains, a.Since, a.Step)
	if err != nil {
		return nil, err
	}
	return &agentpb.TrafficResult{Domains: doms}, nil
}
