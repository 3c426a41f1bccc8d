package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/scheduler"
)

// The migration controller (leader only) moves an account from one node
// to another (store migrations.go: one record, its steps and their tasks).
// Each step is either a one-shot task on a node, written to etcd in the
// transaction that marks the step running (so a server restart finds the
// task id in the record and waits for its result), or a change the
// control plane makes in the store, idempotent, or a wait on the other
// controllers (migration_steps.go). Every agent action is idempotent, so
// a step that is sent again after a crash is harmless.
//
// Flows, each a list of steps appended to the record when it begins:
//
//	migrate   (live) inspect, prepare the target, key, authorize, presync,
//	          credentials, suspend, final sync, switch, activate, proxy,
//	          verify, revoke; (source DOWN) backup, switch, restore,
//	          activate, verify                       → DONE
//	cancel    revoke both, remove the target copy    → CANCELLED (FAILED
//	          when a step before cutover failed)
//	rollback  switch back, wait for the source, remove the target copy,
//	          revoke                                 → ROLLED_BACK
//	finalize  remove the source copy                 → DONE, finalized
const (
	migrationWorkers   = 4
	keyMigrationSweep  = "#sweep"
	defaultGrace       = 7 * 24 * time.Hour
	defaultMigPoll     = time.Second
	defaultMigSweep    = 10 * time.Second
	maxMigrationTries  = 3
	migrationAuthValid = 24 * time.Hour

	flowMigrate  = "migrate"
	flowCancel   = "cancel"
	flowRollback = "rollback"
	flowFinalize = "finalize"
)

// MigrationConfig tunes the migration controller; zero values take
// defaults.
type MigrationConfig struct {
	// Grace is how long a migrated account's source copy is kept for a
	// rollback before it is removed (default 7 days; --migration-grace).
	Grace time.Duration
	// Poll is how often a step waiting on other controllers looks again
	// (default 1s); Sweep how often every open migration is looked at
	// (default 10s): scheduled starts, drains, grace periods, lost tasks.
	Poll, Sweep time.Duration
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
	// Paused runs no migration (tests of the API that play the
	// controller).
	Paused bool
}

type migrationController struct {
	s   *Server
	st  *store.Store
	ctl *controller.Controller
	cfg MigrationConfig

	// startMu makes the decision to start a migration (drain parallelism,
	// target choice) one at a time.
	startMu sync.Mutex
	// byAccount: account id → its open migration, so that an account's
	// change wakes the migration waiting on it.
	mu        sync.Mutex
	byAccount map[string]string
}

func newMigrationController(s *Server) *migrationController {
	cfg := s.cfg.Migration
	if cfg.Grace <= 0 {
		cfg.Grace = defaultGrace
	}
	if cfg.Poll <= 0 {
		cfg.Poll = defaultMigPoll
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = defaultMigSweep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	mc := &migrationController{s: s, st: s.store, cfg: cfg, byAccount: map[string]string{}}
	var m *controller.Metrics
	if s.metrics != nil {
		m = s.metrics.controllers
	}
	mc.ctl = controller.New(controller.Options{
		Name:  "migration",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindMigrations, Handle: mc.migrationEvent, Resync: cfg.Sweep},
			{Kind: store.KindMigrationOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindAccounts, Handle: mc.accountEvent},
			// The target is active once its databases, users and
			// mailboxes are too: their changes wake the activate step
			// (else it waits for the next poll, inside the downtime).
			{Kind: store.KindDatabaseChanges, Handle: mc.accountEvent},
			{Kind: store.KindMailChanges, Handle: mc.accountEvent},
		},
		Ticks:   []controller.Tick{{Key: keyMigrationSweep, Every: cfg.Sweep}},
		Sync:    mc.sync,
		Workers: migrationWorkers,
		Log:     s.log,
		Metrics: m,
	})
	return mc
}

// Run runs the controller for one term as leader.
func (mc *migrationController) Run(ctx context.Context) { mc.ctl.Run(ctx) }

func (mc *migrationController) now() time.Time { return mc.cfg.Now().UTC() }

// migrationEvent queues an open migration and keeps it for the resync;
// a finished one of a drain lets the drain's next one start.
func (mc *migrationController) migrationEvent(ev store.Event) (string, bool, bool) {
	id := lastSegment(ev.Name)
	if ev.Deleted {
		return id, false, false
	}
	m, err := store.DecodeMigration(ev)
	if err != nil {
		return id, false, false
	}
	mc.mu.Lock()
	if m.Closed() {
		if mc.byAccount[m.Account] == m.ID {
			delete(mc.byAccount, m.Account)
		}
	} else {
		mc.byAccount[m.Account] = m.ID
	}
	mc.mu.Unlock()
	if m.Drain != "" && !migrationRunning(m) {
		mc.ctl.Enqueue(keyMigrationSweep)
	}
	return m.ID, !m.Closed(), !m.Closed()
}

// accountEvent wakes the migration of an account that changed (the
// target became ACTIVE, or its databases or mail did); events are named
// by account id.
func (mc *migrationController) accountEvent(ev store.Event) (string, bool, bool) {
	mc.mu.Lock()
	id := mc.byAccount[ev.Name]
	mc.mu.Unlock()
	if id != "" {
		mc.ctl.Enqueue(id)
	}
	return "", false, false
}

// migrationRunning: started and not yet at rest (DONE waiting for its
// grace period is at rest).
func migrationRunning(m *store.Migration) bool {
	switch m.Status {
	case store.MigrationPresync, store.MigrationCutover, store.MigrationVerifying:
		return true
	}
	return false
}

func (mc *migrationController) sync(ctx context.Context, key string) error {
	switch key {
	case "":
		return nil
	case keyMigrationSweep:
		return mc.sweep(ctx)
	}
	return mc.syncMigration(ctx, key)
}

// sweep queues every migration with something due: the open ones (a
// scheduled or drain start, a grace period that ran out).
func (mc *migrationController) sweep(ctx context.Context) error {
	ms, err := mc.st.ListMigrations(ctx)
	if err != nil {
		return err
	}
	for i := range ms {
		if !ms[i].Closed() {
			mc.ctl.Enqueue(ms[i].ID)
		}
	}
	return nil
}

// syncMigration moves one migration on as far as it can go now: it
// records the results that came, runs store steps, and sends the next
// task, then waits for its result (the done notice queues it again).
func (mc *migrationController) syncMigration(ctx context.Context, id string) error {
	for range 64 {
		m, err := mc.st.GetMigration(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		more, err := mc.advance(ctx, m)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	mc.ctl.EnqueueAfter(id, mc.cfg.Poll)
	return nil
}

// update writes fn's change to migration id, audited as the system's.
func (mc *migrationController) update(ctx context.Context, id string, fn func(m *store.Migration) ([]*store.ObjectTask, error)) (*store.Migration, error) {
	return mc.st.UpdateMigration(ctx, id, fn, store.AuditEvent{})
}

// advance takes one step of m; more: call again at once.
func (mc *migrationController) advance(ctx context.Context, m *store.Migration) (bool, error) {
	now := mc.now()
	if m.Closed() {
		return false, nil
	}
	// The task in flight, if any, first: its result decides the step.
	if i := runningStep(m); i >= 0 && m.Steps[i].TaskID != "" {
		return mc.collect(ctx, m, i)
	}
	// A request changes the flow between steps.
	if flow := requestedFlow(m); flow != "" {
		return true, mc.beginFlow(ctx, m.ID, flow, now)
	}
	switch {
	case m.Status == store.MigrationPending && len(m.Steps) == 0:
		return mc.start(ctx, m, now)
	case nextStep(m) < 0 && !flowEnded(m):
		return true, mc.endFlow(ctx, m.ID, now)
	case m.Status == store.MigrationDone && nextStep(m) < 0:
		if !m.FinalizeAfter.IsZero() && !now.Before(m.FinalizeAfter) {
			_, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
				if m.FinalizeRequested {
					return nil, store.ErrUnchanged
				}
				m.FinalizeRequested = true
				return nil, nil
			})
			return err == nil, err
		}
		if !m.FinalizeAfter.IsZero() {
			mc.ctl.EnqueueAfter(m.ID, min(m.FinalizeAfter.Sub(now), mc.cfg.Sweep))
		}
		return false, nil
	case m.Status == store.MigrationFailed && nextStep(m) < 0:
		return false, nil // until an operator rolls it back
	}
	i := nextStep(m)
	if i < 0 {
		return true, mc.endFlow(ctx, m.ID, now)
	}
	return mc.runStep(ctx, m, i, now)
}

// flowEnded: the end of the current flow is recorded.
func flowEnded(m *store.Migration) bool {
	switch currentFlow(m) {
	case flowMigrate:
		return m.Status == store.MigrationDone || m.Status == store.MigrationFailed
	case flowCancel:
		return m.Status == store.MigrationCancelled || m.Status == store.MigrationFailed
	case flowRollback, flowFinalize:
		// FAILED before the flow began (a migration that failed after
		// its cutover, rolled back now) is not the flow's end.
		return m.Status == store.MigrationRolledBack || !m.FinalizedAt.IsZero() ||
			m.Status == store.MigrationFailed && flowStepFailed(m)
	}
	return true
}

// flowStepFailed: a step of the current flow failed.
func flowStepFailed(m *store.Migration) bool {
	flow := currentFlow(m)
	for i := len(m.Steps) - 1; i >= 0; i-- {
		s := m.Steps[i]
		if s.Name != flow && !strings.HasPrefix(s.Name, flow+"-") {
			break
		}
		if s.Status == store.StepFailed {
			return true
		}
	}
	return false
}

// runningStep is the index of the step running, -1 when none is.
func runningStep(m *store.Migration) int {
	for i := range m.Steps {
		if m.Steps[i].Status == store.StepRunning {
			return i
		}
	}
	return -1
}

// nextStep is the index of the first step not finished, -1 when all are.
func nextStep(m *store.Migration) int {
	for i := range m.Steps {
		if st := m.Steps[i].Status; st == store.StepPending || st == store.StepRunning {
			return i
		}
	}
	return -1
}

// currentFlow is the flow the record's steps belong to.
func currentFlow(m *store.Migration) string {
	if len(m.Steps) == 0 {
		return ""
	}
	name := m.Steps[len(m.Steps)-1].Name
	for _, f := range []string{flowCancel, flowRollback, flowFinalize} {
		if strings.HasPrefix(name, f+"-") || name == f {
			return f
		}
	}
	return flowMigrate
}

// requestedFlow is the flow a request asks for that has not begun.
func requestedFlow(m *store.Migration) string {
	cur := currentFlow(m)
	switch {
	case m.RollbackRequested && m.CutOver && m.FinalizedAt.IsZero():
		if cur != flowRollback {
			return flowRollback
		}
	case m.CancelRequested && !m.CutOver && (m.SuspendedAt.IsZero() || m.Error != ""):
		// A user cancels before the suspension; a failed step undoes
		// the migration up to the switch.
		if cur != flowCancel && m.Status != store.MigrationPending {
			return flowCancel
		}
	case m.FinalizeRequested && m.Status == store.MigrationDone && m.FinalizedAt.IsZero():
		if cur != flowFinalize {
			return flowFinalize
		}
	}
	return ""
}

// beginFlow skips what is left of the current flow and appends flow's
// steps.
func (mc *migrationController) beginFlow(ctx context.Context, id, flow string, now time.Time) error {
	_, err := mc.update(ctx, id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		if requestedFlow(m) != flow || runningStep(m) >= 0 && m.Steps[runningStep(m)].TaskID != "" {
			return nil, store.ErrUnchanged
		}
		for i := range m.Steps {
			if st := m.Steps[i].Status; st == store.StepPending || st == store.StepRunning {
				m.Steps[i].Status, m.Steps[i].FinishedAt = store.StepSkipped, now
			}
		}
		m.Steps = append(m.Steps, flowSteps(m, flow)...)
		return nil, nil
	})
	return err
}

// endFlow records the end of the flow whose steps are all done.
func (mc *migrationController) endFlow(ctx context.Context, id string, now time.Time) error {
	m, err := mc.update(ctx, id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		if nextStep(m) >= 0 {
			return nil, store.ErrUnchanged
		}
		// The sealed hashes and keys serve the switch onto the target
		// only; what the source served, a rollback until finalized.
		switch currentFlow(m) {
		case flowMigrate:
			m.Status = store.MigrationDone
			if m.FinalizeAfter.IsZero() {
				m.FinalizeAfter = now.Add(mc.cfg.Grace)
			}
			m.ForgetSecrets(false)
		case flowCancel:
			if m.Error != "" {
				m.Status = store.MigrationFailed
			} else {
				m.Status = store.MigrationCancelled
			}
			m.ForgetSecrets(true)
		case flowRollback:
			m.Status, m.CutOver = store.MigrationRolledBack, false
			m.ForgetSecrets(true)
		case flowFinalize:
			m.FinalizedAt = now
			m.ForgetSecrets(true)
		default:
			return nil, store.ErrUnchanged
		}
		return nil, nil
	})
	if err == nil {
		mc.audit(ctx, m, "migration."+strings.ToLower(string(m.Status)), "")
	}
	return err
}

func (mc *migrationController) audit(ctx context.Context, m *store.Migration, action, detail string) {
	res := "ok"
	if detail != "" {
		res = "ok: " + detail
	}
	_ = mc.st.AppendAudit(ctx, store.NewAuditEvent("system", mc.s.id, action, m.ID, res))
}

// start decides where and how m runs, once it may start: its schedule
// has come, its drain has room. It picks the target when none was asked
// for, and takes the restore path when the source is DOWN.
func (mc *migrationController) start(ctx context.Context, m *store.Migration, now time.Time) (bool, error) {
	if !m.Schedule.IsZero() && now.Before(m.Schedule) {
		mc.ctl.EnqueueAfter(m.ID, min(m.Schedule.Sub(now), mc.cfg.Sweep))
		return false, nil
	}
	mc.startMu.Lock()
	defer mc.startMu.Unlock()
	all, err := mc.st.ListMigrations(ctx)
	if err != nil {
		return false, err
	}
	if m.Drain != "" {
		running := 0
		for i := range all {
			if all[i].Drain == m.Drain && all[i].ID != m.ID && migrationRunning(&all[i]) {
				running++
			}
		}
		if running >= max(m.DrainParallel, 1) {
			return false, nil // a finished one of the drain queues the sweep
		}
	}
	a, _, err := mc.st.GetAccount(ctx, m.Account)
	fail := func(why string) (bool, error) {
		_, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
			if m.Status != store.MigrationPending || len(m.Steps) > 0 {
				return nil, store.ErrUnchanged
			}
			m.Status, m.Error = store.MigrationFailed, why
			return nil, nil
		})
		return false, err
	}
	if errors.Is(err, store.ErrNotFound) || err == nil && a.Deleted {
		return fail("the account was deleted")
	}
	if err != nil {
		return false, err
	}
	if m.CancelRequested {
		_, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
			m.Status = store.MigrationCancelled
			return nil, nil
		})
		return false, err
	}
	if a.Node != m.FromNode {
		return fail(fmt.Sprintf("the account is on node %s now, not %s", a.Node, m.FromNode))
	}
	to := m.ToNode
	if to == "" {
		if to, err = mc.pickTarget(ctx, a, m.FromNode, all); err != nil {
			return fail(err.Error())
		}
	}
	tv, err := mc.st.GetNode(ctx, to)
	if errors.Is(err, store.ErrNotFound) {
		return fail("node " + to + " does not exist")
	}
	if err != nil {
		return false, err
	}
	if tv.State.Status != store.NodeReady {
		return fail("node " + to + " is " + string(tv.State.Status))
	}
	sv, err := mc.st.GetNode(ctx, m.FromNode)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	restore := sv == nil || sv.State.Status == store.NodeDown
	state, err := accountState(ctx, mc.st, a)
	if err != nil {
		return false, err
	}
	m, err = mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
		if m.Status != store.MigrationPending || len(m.Steps) > 0 {
			return nil, store.ErrUnchanged
		}
		m.ToNode, m.Restore = to, restore
		m.Status = store.MigrationPresync
		m.Steps = migrateSteps(m, state)
		return nil, nil
	})
	if err != nil {
		return false, err
	}
	how := "live"
	if restore {
		how = "from the newest backup (node " + m.FromNode + " is down)"
	}
	mc.audit(ctx, m, "migration.start", fmt.Sprintf("%s from %s to %s, %s", m.Username, m.FromNode, m.ToNode, how))
	return true, nil
}

// pickTarget asks the scheduler for a node for a, other than from, as it
// would place it (roles, selector, capacity), counting the accounts
// already on their way to each node.
func (mc *migrationController) pickTarget(ctx context.Context, a *store.Account, from string, all []store.Migration) (string, error) {
	nodes, err := mc.st.ListNodes(ctx)
	if err != nil {
		return "", err
	}
	allocs, _, err := mc.st.Allocs(ctx)
	if err != nil {
		return "", err
	}
	incoming := map[string]int{}
	for i := range all {
		if mm := &all[i]; mm.ToNode != "" && migrationRunning(mm) && !mm.CutOver {
			incoming[mm.ToNode]++
		}
	}
	sn := make([]scheduler.Node, 0, len(nodes))
	for _, n := range nodes {
		al := n.Name
		sn = append(sn, scheduler.Node{
			Name:      n.Name,
			Ready:     n.State.Status == store.NodeReady && n.Name != from,
			Draining:  n.Draining || n.Name == from,
			Roles:     n.Roles,
			Labels:    n.Labels,
			Capacity:  scheduler.Resources{Accounts: n.Capacity().Accounts, DiskMB: n.Capacity().DiskMB},
			Allocated: scheduler.Resources{Accounts: allocs[al].Accounts + incoming[al], DiskMB: allocs[al].DiskMB},
		})
	}
	sel, err := scheduler.ParseSelector(a.Selector)
	if err != nil {
		return "", fmt.Errorf("invalid node selector: %w", err)
	}
	roles, err := mc.st.RolesNeeded(ctx, a)
	if err != nil {
		return "", err
	}
	p, err := scheduler.NewSnapshot(sn, mc.s.cfg.SchedulerStrategy).Place(scheduler.Request{
		Account: a.Username, Roles: roles, Need: scheduler.Resources{Accounts: 1, DiskMB: a.DiskMB}, Selector: sel})
	if err != nil {
		return "", fmt.Errorf("no node for the account: %w", err)
	}
	return p.Node, nil
}
