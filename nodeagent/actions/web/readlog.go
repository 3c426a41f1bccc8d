package web

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

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
	// Since, when not zero, stops the read at older lines; Grep keeps
	// only lines that contain it.
	Since time.Time
	Grep  string
}

var _ actions.Action = (*ReadDomainLog)(nil)

// NewReadDomainLog builds the action from its wire form.
func (m *Module) NewReadDomainLog(req *agentpb.ReadDomainLogAction) *ReadDomainLog {
	a := &ReadDomainLog{Username: req.GetUsername(), Domain: req.GetDomain(), Kind: req.GetKind(), Lines: req.GetLines(), Grep: req.GetGrep()}
	if n := req.GetSinceUnixNano(); n > 0 {
		a.Since = time.Unix(0, n)
	}
	return a
}

// Name implements actions.Action.
func (*ReadDomainLog) Name() string { return ReadDomainLogName }

// Validate implements actions.Action: the same rules the control plane
// applied, checked again here because the agent trusts no sender.
func (a *ReadDomainLog) Validate() error {
	if err := ValidateReadDomainLog(a.Username, a.Domain, a.Kind, a.Lines); err != nil {
		return err
	}
	return ValidateGrep(a.Grep)
}

// MaxGrep is the longest grep string a log read takes.
const MaxGrep = 200

// ValidateGrep checks a log read's filter: at most MaxGrep bytes of
// valid UTF-8 without control characters.
func ValidateGrep(grep string) error {
	if len(grep) > MaxGrep {
		return fmt.Errorf("grep of %d bytes: want at most %d", len(grep), MaxGrep)
	}
	if !utf8.ValidString(grep) {
		return errors.New("grep is not valid UTF-8")
	}
	for _, r := range grep {
		if unicode.IsControl(r) {
			return fmt.Errorf("grep holds control character %U", r)
		}
	}
	return nil
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
	sc := LogScan{Lines: int(a.Lines), Grep: []byte(a.Grep), Since: a.Since, LineTime: accessLineTime}
	if a.Kind == agentpb.DomainLogKind_DOMAIN_LOG_KIND_ERROR {
		sc.LineTime = errorLineTime
	}
	lines, truncated, err := readLogTail(env.Profile.Web(), a.Username, logFileName(a.Domain, kindName(a.Kind)), sc)
	if err != nil {
		return nil, fmt.Errorf("web: read log of %s: %w", a.Domain, err)
	}
	return &agentpb.DomainLogResult{Lines: lines, Truncated: truncated}, nil
}
