package web

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// ReadDomainLogName is the action's name in metrics and logs.
const ReadDomainLogName = "read_domain_log"

// ReadDomainLog returns the last lines of one of an account's domain logs.
// It reads only in the account's own log directory (DomainLogDir/<user>):
// a domain of another account has no file there, whatever the request
// names, and reads as empty.
type ReadDomainLog struct {
	Username string
	Domain   string
	Kind     agentpb.DomainLogKind
	Lines    uint32
}

var _ actions.Action = (*ReadDomainLog)(nil)

// NewReadDomainLog builds the action from its wire form.
func (m *Module) NewReadDomainLog(req *agentpb.ReadDomainLogAction) *ReadDomainLog {
	return &ReadDomainLog{Username: req.GetUsername(), Domain: req.GetDomain(), Kind: req.GetKind(), Lines: req.GetLines()}
}

// Name implements actions.Action.
func (*ReadDomainLog) Name() string { return ReadDomainLogName }

// Validate implements actions.Action: the same rules the control plane
// applied, checked again here because the agent trusts no sender.
func (a *ReadDomainLog) Validate() error {
	return ValidateReadDomainLog(a.Username, a.Domain, a.Kind, a.Lines)
}

// ValidateReadDomainLog checks a log read: a user name, a canonical domain
// (it becomes a file name), a known kind and 1..MaxLogLines lines.
func ValidateReadDomainLog(username, domain string, kind agentpb.DomainLogKind, lines uint32) error {
	if err := checkUsername(username); err != nil {
		return err
	}
	if err := canonicalDomain("domain", domain); err != nil {
		return err
	}
	if kindName(kind) == "" {
		return fmt.Errorf("web: log kind %d: want ACCESS or ERROR", kind)
	}
	if lines < 1 || lines > MaxLogLines {
		return fmt.Errorf("web: %d lines: want 1 to %d", lines, MaxLogLines)
	}
	return nil
}

func kindName(k agentpb.DomainLogKind) string {
	switch k {
	case agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS:
		return "access"
	case agentpb.DomainLogKind_DOMAIN_LOG_KIND_ERROR:
		return "error"
	}
	return ""
}

// Apply implements actions.Action.
func (a *ReadDomainLog) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	lines, truncated, err := readLogTail(env.Profile.Web(), a.Username, logFileName(a.Domain, kindName(a.Kind)), int(a.Lines))
	if err != nil {
		return nil, fmt.Errorf("web: read log of %s: %w", a.Domain, err)
	}
	return &agentpb.DomainLogResult{Lines: lines, Truncated: truncated}, nil
}
