// Package actions defines what an agent action is: a typed request that is
// validated before anything on the host is touched and then applied to
// converge the host to the requested state.
//
// Every action lives in its own package under nodeagent/actions (one per
// service) and is made reachable only by the allow-list in
// nodeagent/actions/allowlist. The allow-list is the agent's security
// boundary: a task whose action is not listed there is refused, never
// interpreted.
package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// Action is one allow-listed operation built from a task.
//
// Apply must be idempotent: a task carries the whole desired state of one
// object, the control plane may send it again after a reconnect, and the
// agent's journal suppresses only those repeats it knows about.
type Action interface {
	// Name is the stable action name used in metrics and logs.
	Name() string
	// Validate rejects bad input before anything is touched. It must not do
	// I/O: it runs on every received task, including ones never applied.
	Validate() error
	// Apply converges the host to the requested state and returns its
	// typed result: one of the messages of agentpb.TaskResult's oneof
	// result, or nil for none. An error that is not made by Fail or
	// WithReason is reported as INTERNAL. It must give up promptly when
	// ctx is done.
	Apply(ctx context.Context, env *Env) (proto.Message, error)
}

// Env is what an action may know about the node it runs on.
type Env struct {
	// Node is the name in the agent's certificate.
	Node string
	// Logger is already scoped to the task being applied.
	Logger *slog.Logger
	// Profile says where binaries and managed directories are on this node.
	// Actions that touch the host take every path from it.
	Profile *platform.Profile
	// Services reloads and restarts the daemons the node runs.
	Services services.Manager
	// DataDir is the agent's private data directory (0700): modules keep
	// the credentials they generate for their daemons there.
	DataDir string
	// Unseal opens a secret the control plane sealed to this node's key
	// for the given purpose (pki.Seal); no other node can.
	Unseal func(sealed []byte, context string) ([]byte, error)
	// Modules names the modules running on this node ("web", "dns", "db").
	// An account action skips the web part on a node without "web".
	Modules []string
	// PublishChallenge asks the control plane to publish or withdraw a
	// DNS-01 challenge record (the gateway's PublishChallenge RPC).
	PublishChallenge func(ctx context.Context, req *agentpb.PublishChallengeRequest) error
	// AgentLog returns the agent's own recent log lines (its in-memory
	// ring), oldest first: at most lines, none older than since (zero: no
	// bound), only those containing grep; truncated when lines were left
	// out for a bound. Nil when the agent keeps no ring.
	AgentLog func(since time.Time, lines int, grep string) (out []string, truncated bool)
}

// Module is one service area of a node (web, DNS, databases). The agent
// calls Setup once at start, before any task runs.
type Module interface {
	// Name is the module's stable name ("web", "dns", "db").
	Name() string
	// Setup prepares what the module's actions rely on: in supervised mode
	// (a prefix) the daemons' main configuration under the prefix, on
	// production nodes only the include directories the actions write to.
	// It returns the daemons to run, none when they are not installed on
	// this node (the module's actions then fail with a clear error).
	Setup(ctx context.Context, env *Env) ([]services.Spec, error)
}

// Closer is implemented by modules that hold resources (connection pools)
// to release when the agent stops, before it stops their daemons.
type Closer interface {
	Close()
}

// TestNameAware is implemented by actions that take an account user name.
// An agent started for integration tests (and only such an agent) calls it,
// so that the real action path accepts validate.TestUserPrefix names, which
// test cleanup may delete without risk to a customer's account.
type TestNameAware interface {
	AllowTestUsernames()
}

// TaskAware is an action that needs its task's id (to name the task in
// progress reports); the agent calls SetTaskID before Apply.
type TaskAware interface {
	SetTaskID(id string)
}

// Error is an action's failure with the reason the control plane acts on
// (agentpb.ErrorReason); the message is for people.
type Error struct {
	Reason agentpb.ErrorReason
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Fail returns an error with reason; format and args are fmt.Errorf's, %w
// included.
func Fail(reason agentpb.ErrorReason, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// WithReason gives err a reason, nil staying nil. A reason err already
// carries is kept: the innermost failure knows best why it failed.
func WithReason(reason agentpb.ErrorReason, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Reason: reason, Err: err}
}

// ReasonOf returns the reason err carries, INTERNAL when it carries none.
func ReasonOf(err error) agentpb.ErrorReason {
	var e *Error
	if errors.As(err, &e) && e.Reason != agentpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return e.Reason
	}
	return agentpb.ErrorReason_ERROR_REASON_INTERNAL
}
