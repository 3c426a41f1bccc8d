package controller

import (
	"context"
	"sync"
	"sync/atomic"
)

// Runner is what a Manager runs while this replica leads: a Controller,
// or a leader-only loop that is not keyed by object (a pruner, liveness).
// Run returns once ctx ends.
type Runner interface {
	Run(ctx context.Context)
}

// RunFunc adapts a function to Runner.
type RunFunc func(ctx context.Context)

// Run calls f(ctx).
func (f RunFunc) Run(ctx context.Context) { f(ctx) }

// Manager runs a set of controllers while this replica leads.
type Manager struct {
	mu      sync.Mutex
	ctrls   []Runner
	leading atomic.Bool
}

// NewManager returns an empty manager.
func NewManager() *Manager { return &Manager{} }

// Add registers controllers; they run from the next Lead on.
func (m *Manager) Add(cs ...Runner) {
	m.mu.Lock()
	m.ctrls = append(m.ctrls, cs...)
	m.mu.Unlock()
}

// Lead runs every registered controller until ctx ends — the caller ends
// it when leadership is lost — and returns once all have stopped, so that
// no controller of an old term writes beside the next leader's.
func (m *Manager) Lead(ctx context.Context) {
	m.mu.Lock()
	ctrls := append([]Runner(nil), m.ctrls...)
	m.mu.Unlock()
	m.leading.Store(true)
	defer m.leading.Store(false)
	var wg sync.WaitGroup
	for _, c := range ctrls {
		wg.Go(func() { c.Run(ctx) })
	}
	wg.Wait()
}

// Leading reports whether Lead is running.
func (m *Manager) Leading() bool { return m.leading.Load() }
