package account

import (
	"context"
	"sync"
)

// CountingRunner runs commands for real and records them, so that the
// integration tests (package account_test, which must be external to import
// internal/testenv) can prove what an apply ran.
type CountingRunner struct {
	mu    sync.Mutex
	calls [][]string
}

func (c *CountingRunner) run(ctx context.Context, argv []string) error {
	c.mu.Lock()
	c.calls = append(c.calls, append([]string(nil), argv...))
	c.mu.Unlock()
	return execRunner{}.run(ctx, argv)
}

// Calls returns the commands run so far and forgets them.
func (c *CountingRunner) Calls() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = nil
	return out
}

// testModule is the account module of the one agent a test binary of this
// package plays.
var testModule = NewModule(nil, nil, nil)

// WithRunner makes a (an *Ensure or *Delete) run its commands through r
// (a nil r leaves the real runner) and gives it the test binary's module
// unless it has one.
func WithRunner[A *Ensure | *Delete](a A, r *CountingRunner) A {
	switch a := any(a).(type) {
	case *Ensure:
		if a.m == nil {
			a.m = testModule
		}
		if r != nil {
			a.run = r
		}
	case *Delete:
		if a.m == nil {
			a.m = testModule
		}
		if r != nil {
			a.run = r
		}
	}
	return a
}
