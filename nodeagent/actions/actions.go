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
	"log/slog"

	"github.com/npanel/npanel/nodeagent/platform"
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
	// Apply converges the host to the requested state and returns a result
	// that the agent JSON-encodes into TaskResult.result_json (nil for none).
	// It must give up promptly when ctx is done.
	Apply(ctx context.Context, env *Env) (any, error)
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
}

// TestNameAware is implemented by actions that take an account user name.
// An agent started for integration tests (and only such an agent) calls it,
// so that the real action path accepts validate.TestUserPrefix names, which
// test cleanup may delete without risk to a customer's account.
type TestNameAware interface {
	AllowTestUsernames()
}
