// Package ping implements the ping action, which proves the whole task path
// (validation, journal, result) without touching the host.
package ping

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

const (
	// MaxPayloadBytes bounds the echoed payload so that a ping cannot be used
	// to make the agent store or resend large results.
	MaxPayloadBytes = 256
	// MaxDelay bounds how long a ping may hold a concurrency slot.
	MaxDelay = 10 * time.Second
)

// Name is the action name in metrics and logs.
const Name = "ping"

// Action echoes its payload after an optional delay.
type Action struct {
	Payload string
	DelayMs uint32
}

var _ actions.Action = (*Action)(nil)

// New builds the action from its wire form; a nil request is an empty ping.
func New(req *agentpb.PingAction) *Action {
	return &Action{Payload: req.GetPayload(), DelayMs: req.GetDelayMs()}
}

// Name implements actions.Action.
func (a *Action) Name() string { return Name }

// Validate implements actions.Action.
func (a *Action) Validate() error {
	if n := len(a.Payload); n > MaxPayloadBytes {
		return fmt.Errorf("payload is %d bytes, at most %d allowed", n, MaxPayloadBytes)
	}
	// The protobuf decoder already rejects invalid UTF-8 in string fields, but
	// an Action can be built by other means (tests, future encodings) and the
	// payload ends up in JSON, which would silently replace bad bytes.
	if !utf8.ValidString(a.Payload) {
		return fmt.Errorf("payload is not valid UTF-8")
	}
	if d := time.Duration(a.DelayMs) * time.Millisecond; d > MaxDelay {
		return fmt.Errorf("delay_ms %d exceeds %d", a.DelayMs, MaxDelay.Milliseconds())
	}
	return nil
}

// Apply implements actions.Action.
func (a *Action) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if a.DelayMs > 0 {
		t := time.NewTimer(time.Duration(a.DelayMs) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("ping delay interrupted: %w", ctx.Err())
		}
	}
	return &agentpb.PingResult{Payload: a.Payload, Node: env.Node, AgentUnixNano: time.Now().UnixNano()}, nil
}
