package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// Zone controller tuning.
const (
	// zoneWaitRetry is how often the controller looks for a change of the
	// DNS servers, and the longest a zone whose pass failed waits for the
	// next one.
	zoneWaitRetry = 2 * time.Second
	// zoneRetryBase is the first backoff of a zone whose pass failed.
	zoneRetryBase = 200 * time.Millisecond
	// rotateInterval is the minimum time between the steps of a ZSK
	// rollover: the zone's TTLs must expire between publishing a key and
	// signing with it, and between switching and withdrawing the old one.
	rotateInterval = time.Hour
)

// errZoneGone tells process to delete a zone record that no node serves.
var errZoneGone = errors.New("zone record to delete")

// Keys of the zone controller's cluster-wide work (its cluster controller):
// each is about every zone at once, so none is a zone's name.
const (
	keySecondaries = "secondaries" // send every secondary its zone set
	keyResync      = "resync"      // look again at unsettled zones; check the primaries
	keyServers     = "servers"     // notice a change of the DNS servers
	keyChecks      = "checks"      // act on answered checks of primary zones
)

// zoneController converges every zone onto its primary node and the full
// set of zones onto every secondary DNS node. It runs on the leader only,
// on the controller runtime, as two controllers: zones syncs one zone per
// key, following zones and their tasks' outcomes; cluster does the work
// about every zone at once (the keys above), on ticks, after zone changes
// and as checks are answered. Both are level-triggered: each pass looks at
// a zone's whole record, so a missed or repeated event costs work, never
// correctness.
type zoneController struct {
	s              *Server
	zones, cluster *controller.Controller

	mu sync.Mutex
	// pending holds the queued zones, each with the revision of the write
	// that queued it, or 0 when it must be looked at whatever its revision
	// (done notices, a change of DNS servers, a resync).
	pending map[string]int64
	// handled is, per zone, the revision up to which its record needs
	// nothing more: the controller's own last write or look at it, or the
	// API's write that queued the zone's task itself (zoneWriter). A zone
	// queued by such a write is skipped rather than read and decoded
	// again, which for a large zone is most of a change's cost on the
	// server.
	handled map[string]int64
	// due holds, per zone waiting for a time (the next step of a key
	// rollover), when to look at it again. The runtime drops a key's
	// delayed turn when the key is queued meanwhile; if that turn is then
	// skipped as handled, the wait is put back from here.
	due map[string]time.Time
	// waitingDNS holds zones that no DNS server can take yet; they are
	// looked at again when the set of DNS servers changes, not on a timer,
	// so a cluster without DNS nodes costs nothing per zone.
	waitingDNS map[string]bool

	// Only the cluster controller's one worker touches the rest.

	// servers is the set of DNS servers the waiting zones last saw.
	servers string
	// sent remembers the last zone set sent to each secondary.
	sent map[string]*sentSet
	// scanned is when resyncZones last listed every zone.
	scanned time.Time
	// checkedAt is when the primaries were last sent their zones to
	// check; checking holds the checks not yet answered, per node.
	checkedAt time.Time
	checking  map[string]outstandingChecks

	// rotateInterval is Config.ZoneRotateInterval (tests shorten it).
	rotateInterval time.Duration
}

func newZoneController(s *Server) *zoneController {
	c := &zoneController{
		s: s, pending: map[string]int64{}, handled: map[string]int64{}, due: map[string]time.Time{}, waitingDNS: map[string]bool{},
		sent: map[string]*sentSet{}, checking: map[string]outstandingChecks{}, rotateInterval: s.cfg.ZoneRotateInterval,
	}
	var m *controller.Metrics
	if s.metrics != nil {
		m = s.metrics.controllers
	}
	c.zones = controller.New(controller.Options{
		Name:  "zone",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindZones, Handle: c.zoneEvent},
			{Kind: store.KindZoneOutcomes, Handle: c.outcomeEvent, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		Sync:      c.syncZone,
		BaseDelay: zoneRetryBase,
		MaxDelay:  zoneWaitRetry,
		Log:       s.log,
		Metrics:   m,
	})
	c.cluster = controller.New(controller.Options{
		Name:  "zone-cluster",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindDNSChecks, Handle: func(store.Event) (string, bool, bool) { return keyChecks, true, false },
				WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		Ticks: []controller.Tick{
			{Key: keyServers, Every: zoneWaitRetry},
			{Key: keyResync, Every: c.resyncEvery() / 4},
		},
		Sync:      c.syncCluster,
		BaseDelay: zoneRetryBase,
		MaxDelay:  zoneWaitRetry,
		Log:       s.log,
		Metrics:   m,
	})
	return c
}

// runZoneControllers runs a zone controller until ctx ends (this
// replica's term as leader). Each term starts with a fresh one: what it
// remembers (handled writes, sent sets, checks) holds for one term only.
func (s *Server) runZoneControllers(ctx context.Context) {
	c := newZoneController(s)
	s.zoneCtl.Store(c)
	defer s.zoneCtl.CompareAndSwap(c, nil)
	var wg sync.WaitGroup
	wg.Go(func() { c.zones.Run(ctx) })
	wg.Go(func() { c.cluster.Run(ctx) })
	wg.Wait()
}

// zoneEvent queues a zone whose record changed, with the revision of the
// write. No zone is kept for the informer's resync: keyResync looks again
// at the unsettled ones.
func (c *zoneController) zoneEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		c.forgetHandled(ev.Name)
		return ev.Name, false, false
	}
	c.markAt(ev.Name, ev.Rev)
	return ev.Name, true, false
}

// outcomeEvent queues the zone a finished task was for, whatever its
// revision.
func (c *zoneController) outcomeEvent(ev store.Event) (string, bool, bool) {
	c.setPending(ev.Name, 0)
	return ev.Name, true, false
}

// mark asks for a look at each zone, whatever its revision.
func (c *zoneController) mark(names ...string) {
	for _, n := range names {
		c.setPending(n, 0)
	}
	c.zones.Enqueue(names...)
}

// markAt notes that a zone is queued because of its write at rev. An
// earlier mark without a revision stands.
func (c *zoneController) markAt(name string, rev int64) {
	c.mu.Lock()
	if r, ok := c.pending[name]; !ok || (r != 0 && r < rev) {
		c.pending[name] = rev
	}
	c.mu.Unlock()
}

func (c *zoneController) setPending(name string, rev int64) {
	c.mu.Lock()
	c.pending[name] = rev
	c.mu.Unlock()
}

// take returns the revision a queued zone was marked at (0: any) and
// forgets it; ok is false when it was not marked (a retry after a failed
// pass, which looks at the zone whatever its revision).
func (c *zoneController) take(name string) (rev int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rev, ok = c.pending[name]
	delete(c.pending, name)
	return rev, ok
}

// syncZone converges one zone, unless the write that queued it is
// already accounted for; the secondaries' sync follows a moment later,
// gathering a burst of zone changes into one.
//
// Whether a write is handled is decided here, when the zone's turn comes,
// not when its event arrives: the API's fast path notes its write just
// after the commit returns, and the event may be faster.
func (c *zoneController) syncZone(ctx context.Context, name string) error {
	defer c.cluster.EnqueueAfter(keySecondaries, secondaryDebounce)
	if rev, _ := c.take(name); c.isHandled(name, rev) {
		if at, ok := c.dueAt(name); ok {
			c.zones.EnqueueAfter(name, time.Until(at))
		}
		return nil
	}
	c.wakeAt(name, time.Time{}) // the pass decides again
	return c.process(ctx, name)
}

// wakeAt has the zone looked at again at t (zero: forget a wait).
func (c *zoneController) wakeAt(name string, t time.Time) {
	c.mu.Lock()
	if t.IsZero() {
		delete(c.due, name)
	} else {
		c.due[name] = t
	}
	c.mu.Unlock()
	if !t.IsZero() {
		c.zones.EnqueueAfter(name, time.Until(t))
	}
}

func (c *zoneController) dueAt(name string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.due[name]
	return t, ok
}

// syncCluster does one piece of the work about every zone at once.
func (c *zoneController) syncCluster(ctx context.Context, key string) error {
	switch key {
	case keySecondaries:
		return c.syncSecondaries(ctx)
	case keyChecks:
		return c.takeChecks(ctx)
	case keyServers:
		return c.recheckDNS(ctx)
	case keyResync:
		// Checks answered while no informer was running (before this
		// leader's) are taken here too.
		if err := c.takeChecks(ctx); err != nil {
			return err
		}
		return c.resyncZones(ctx)
	}
	return nil
}

// handledAt records that the zone's record needs nothing more up to rev.
func (c *zoneController) handledAt(name string, rev int64) {
	c.mu.Lock()
	if rev > c.handled[name] {
		c.handled[name] = rev
	}
	c.mu.Unlock()
}

// isHandled reports whether a write at rev is already accounted for.
func (c *zoneController) isHandled(name string, rev int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return rev != 0 && rev <= c.handled[name]
}

func (c *zoneController) forgetHandled(name string) {
	c.mu.Lock()
	delete(c.handled, name)
	delete(c.due, name)
	c.mu.Unlock()
}

func (c *zoneController) waitDNS(name string) {
	c.mu.Lock()
	c.waitingDNS[name] = true
	c.mu.Unlock()
}

// recheckDNS looks again at every zone when the set of DNS servers
// changed: every zone names the servers, and zones waiting for one may
// now have it.
func (c *zoneController) recheckDNS(ctx context.Context) error {
	v, err := c.dnsView(ctx)
	if err != nil {
		return err
	}
	if v.key == c.servers {
		return nil
	}
	first := c.servers == ""
	c.servers = v.key
	c.mu.Lock()
	clear(c.waitingDNS)
	c.mu.Unlock()
	if first && len(v.order) == 0 {
		return nil // nothing can be served yet; zones already wait
	}
	zones, _, err := c.s.store.ListZoneStates(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(zones))
	for _, z := range zones {
		names = append(names, z.Name)
	}
	c.mark(names...)
	return nil
}

// process converges one zone.
func (c *zoneController) process(ctx context.Context, name string) error {
	z, rev, err := c.s.store.GetZone(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		c.forgetHandled(name)
		return nil
	}
	if err != nil {
		return err
	}
	// Notices matter only for the task the zone waits on; stale ones are
	// consumed with the next pass that has a task.
	var done []store.Done
	if z.TaskID != "" {
		if done, err = c.s.store.ZoneDone(ctx, name); err != nil {
			return err
		}
		if len(done) == 0 {
			c.handledAt(name, rev)
			return nil // its task is under way; its done notice brings it back
		}
	}
	b := store.NewBatch()
	now := b.Now()
	before := mustJSON(z)
	for _, d := range done {
		b.Consume(d.Key)
		t := d.Task
		if t == nil || t.ID != z.TaskID {
			continue
		}
		z.TaskID = ""
		// A failed task, or a result that does not decode, is a failed
		// attempt: a zero result would clear the zone's serial and DS.
		res, err := t.ZoneResult()
		if err != nil {
			if t.Action == "rotateZoneKeys" && t.Reason == agentpb.ErrorReason_ERROR_REASON_TOO_EARLY {
				z.RotateAfter = now.Add(time.Minute)
				continue
			}
			z.Attempts++
			if z.Attempts >= maxTaskAttempts {
				z.Status, z.Reason = store.ZoneFailed, "node "+t.Node+": "+err.Error()
			}
			continue
		}
		z.Attempts = 0
		switch t.Action {
		case "deleteZone":
			ok, err := c.s.store.DeleteZone(ctx, z.Name, rev, store.NewAuditEvent("system", c.s.id, "zone.deleted", z.Name, "ok"))
			if err != nil || ok {
				return err
			}
			c.mark(name) // changed meanwhile: look again
			return nil
		case "rotateZoneKeys":
			z.RotateStep++
			if z.RotateStep > 3 {
				z.RotateStep = 0
			}
			z.RotateAfter = now.Add(c.interval())
			if res.Serial != 0 {
				z.Serial = res.Serial
			}
		default:
			z.AppliedGeneration = t.Generation
			z.Serial, z.DS = res.Serial, res.Ds
			z.Reason = ""
		}
	}

	if z.TaskID == "" {
		err := c.plan(ctx, b, z, now)
		if errors.Is(err, errZoneGone) {
			ok, err := c.s.store.DeleteZone(ctx, z.Name, rev, store.NewAuditEvent("system", c.s.id, "zone.deleted", z.Name, "ok"))
			if err == nil && !ok {
				c.mark(name)
			}
			return err
		}
		if err != nil {
			return err
		}
	}
	wrote := mustJSON(z) != before
	if wrote {
		z.UpdatedAt = now
		b.PutZone(z, rev)
	}
	ok, crev, err := c.s.store.CommitRev(ctx, b)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		c.mark(name)
	case wrote:
		c.handledAt(name, crev)
	default:
		c.handledAt(name, rev)
	}
	return nil
}

func (c *zoneController) resyncEvery() time.Duration {
	if d := c.s.cfg.ZoneSecondaryResync; d > 0 {
		return d
	}
	return secondaryResync
}

func (c *zoneController) interval() time.Duration {
	if c.rotateInterval > 0 {
		return c.rotateInterval
	}
	return rotateInterval
}

// plan decides the zone's next task, if any, and its status.
func (c *zoneController) plan(ctx context.Context, b *store.Batch, z *store.Zone, now time.Time) error {
	view, err := c.dnsView(ctx)
	if err != nil {
		return err
	}
	if z.Deleted {
		if z.Node == "" {
			return errZoneGone // never served anywhere: only the record goes
		}
		if _, ok := view.servers[z.Node]; !ok {
			// Its server is gone (node removed, module uninstalled):
			// nothing left to remove it from.
			return errZoneGone
		}
		return c.enqueue(b, z, &agentpb.Task{Action: &agentpb.Task_DeleteZone{DeleteZone: &agentpb.DeleteZoneAction{Zone: z.Name}}})
	}
	if z.Defaults && z.Address == "" && z.Account != "" {
		// An add-on domain's zone written before its account was placed:
		// it lives with the account, and starts with records pointing at
		// the account's node.
		wait, err := c.placeWithAccount(ctx, z)
		if err != nil || wait {
			return err
		}
	}
	if _, ok := view.servers[z.Node]; !ok && z.Node != "" && z.AppliedGeneration == 0 && len(view.order) > 0 && runsDNS(ctx, c.s.store, z.Node) {
		// The cached view predates the DNS server of the zone's node
		// coming up: look again before the zone goes elsewhere for good.
		if v, err := c.s.dnsViews.fresh(ctx, c.s.store); err == nil {
			view = v
		}
	}
	if _, ok := view.servers[z.Node]; !ok {
		// The zone lives on its account's node when that node serves DNS,
		// else on the first DNS server; it stays there once served.
		if z.AppliedGeneration > 0 || len(view.order) == 0 {
			// A zone never served keeps the PENDING it was created with:
			// in a cluster without DNS nodes, writing a reason into every
			// new account's zone would double the writes of account
			// creation for nothing.
			if z.AppliedGeneration > 0 {
				c.setStatus(z, store.ZonePending, "no DNS server to serve it: no READY node with role dns runs the agent's DNS module")
			}
			c.waitDNS(z.Name)
			return nil
		}
		z.Node = view.order[0]
	}
	if z.Defaults {
		z.Records = withDefaults(defaultRecords(z, z.Address), z.Records)
		z.Defaults = false
		z.Generation++
	}
	if z.Status == store.ZoneFailed && z.Attempts >= maxTaskAttempts {
		return nil
	}
	if z.AppliedGeneration > 0 && z.Generation == z.AppliedGeneration && z.Servers != view.key {
		z.Generation++
	}
	switch {
	case z.Generation != z.AppliedGeneration:
		t, err := ensureTask(z, view)
		if err != nil {
			c.setStatus(z, store.ZoneFailed, err.Error())
			return nil
		}
		return c.enqueueRefreshing(b, z, t.Spec, t.Refresh)
	case z.RotateStep > 0:
		if now.Before(z.RotateAfter) {
			c.wakeAt(z.Name, z.RotateAfter)
			break
		}
		step := agentpb.RotateZoneKeysAction_Step(z.RotateStep)
		return c.enqueue(b, z, &agentpb.Task{Action: &agentpb.Task_RotateZoneKeys{RotateZoneKeys: &agentpb.RotateZoneKeysAction{
			Zone: z.Name, Step: step, MinIntervalSeconds: uint32(c.interval() / time.Second)}}})
	}
	c.setStatus(z, store.ZoneActive, "")
	return nil
}

// placeWithAccount gives an account's zone without an address the
// account's node and that node's address; wait is true while the account
// has no node yet (the zone stays PENDING; resyncs look at it again).
func (c *zoneController) placeWithAccount(ctx context.Context, z *store.Zone) (wait bool, err error) {
	a, _, err := c.s.store.GetAccount(ctx, z.Account)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // the account is gone; its deletion removes the zone
	}
	if err != nil {
		return false, err
	}
	if a.Node == "" {
		return true, nil
	}
	n, err := c.s.store.GetNode(ctx, a.Node)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if z.Node == "" {
		z.Node = a.Node
	}
	if n != nil {
		z.Address = n.Address
	}
	return false, nil
}

func (c *zoneController) setStatus(z *store.Zone, st store.ZoneStatus, reason string) {
	z.Status, z.Reason = st, reason
}

func (c *zoneController) enqueue(b *store.Batch, z *store.Zone, spec *agentpb.Task) error {
	return c.enqueueRefreshing(b, z, spec, nil)
}

func (c *zoneController) enqueueRefreshing(b *store.Batch, z *store.Zone, spec *agentpb.Task, secondaries []string) error {
	t, err := b.EnqueueRefreshing(z.Node, spec, store.ZoneObject(z.Name), "controller", secondaries)
	if err != nil {
		return err
	}
	z.TaskID = t.ID
	return nil
}

// zoneTask is a task converging a zone on its primary, with the
// secondaries to refresh once it succeeds (store.Task.Refresh).
type zoneTask struct {
	Spec    *agentpb.Task
	Refresh []string
}

// ensureTask is the task that converges z on its primary as view has the
// servers; z records those servers and waits, PENDING, for the task.
//
// A zone the secondaries already serve (z has an applied generation) is
// refreshed on them in the transaction that records the task's success:
// PowerDNS would act on the primary's NOTIFY only at its next tick, a
// second later. A zone new to them is not: their sync creates it and
// transfers at once. Beyond maxRefresh secondaries (the result's
// transaction must stay within etcd's limit) the rest wait for NOTIFY.
func ensureTask(z *store.Zone, view *dnsView) (*zoneTask, error) {
	spec, err := ensureSpec(z, view)
	if err != nil {
		return nil, err
	}
	z.Status, z.Reason = store.ZonePending, ""
	z.Servers = view.key
	t := &zoneTask{Spec: &agentpb.Task{Generation: z.Generation, Action: &agentpb.Task_EnsureZone{EnsureZone: spec}}}
	if z.AppliedGeneration > 0 {
		for _, n := range view.order {
			if n != z.Node && len(t.Refresh) < maxRefresh {
				t.Refresh = append(t.Refresh, n)
			}
		}
	}
	return t, nil
}

// maxRefresh bounds the secondaries a zone change refreshes directly:
// recording its result then takes at most 4+2*maxRefresh operations.
const maxRefresh = (store.MaxTxnOps - 8) / 2

// ensureSpec is the whole desired zone for its primary.
func ensureSpec(z *store.Zone, v *dnsView) (*agentpb.EnsureZoneAction, error) {
	primary := v.servers[z.Node]
	spec := &agentpb.EnsureZoneAction{Zone: z.Name, Kind: agentpb.ZoneKind_ZONE_KIND_PRIMARY, Dnssec: z.DNSSEC, MinSerial: z.Serial}
	for _, n := range v.order {
		if n != z.Node {
			spec.Secondaries = append(spec.Secondaries, v.servers[n].addr)
		}
	}
	for _, r := range z.Records {
		spec.Records = append(spec.Records, &agentpb.Record{Name: r.Name, Type: r.Type, Content: r.Content, Ttl: r.TTL, Priority: r.Priority})
	}
	if len(v.nameservers) > 0 {
		spec.Nameservers = v.nameservers
		return spec, nil
	}
	// No cluster nameservers set: the zone names its own, ns1 on the
	// primary and ns2 on the first secondary, with glue in the zone.
	hosts := []string{primary.host}
	if len(spec.Secondaries) > 0 {
		hosts = append(hosts, v.servers[otherThan(v.order, z.Node)].host)
	}
	for i, h := range hosts {
		ns := fmt.Sprintf("ns%d.%s.", i+1, z.Name)
		spec.Nameservers = append(spec.Nameservers, ns)
		spec.Records = append(spec.Records, &agentpb.Record{Name: ns, Type: addrType(h), Content: h})
	}
	return spec, nil
}

func otherThan(names []string, not string) string {
	for _, n := range names {
		if n != not {
			return n
		}
	}
	return ""
}

// resyncZones looks again at every zone still on its way to ACTIVE, whether
// or not an event said so (an event lost with a broken connection is
// caught here), has the primaries check their zones when that is due and
// syncs the secondaries. Listing every zone is what the secondaries' sync
// costs anyway; without secondaries the listing is done only every
// resyncEvery or when a check is due.
func (c *zoneController) resyncZones(ctx context.Context) error {
	v, err := c.dnsView(ctx)
	if err != nil {
		return err
	}
	secondaries := len(v.order) >= 2
	checkDue := len(v.order) > 0 && c.checkDue(time.Now())
	if !secondaries && !checkDue && time.Since(c.scanned) < c.resyncEvery() {
		return nil
	}
	zones, _, err := c.s.store.ListZoneStates(ctx)
	if err != nil {
		return err
	}
	c.scanned = time.Now()
	var names []string
	c.mu.Lock()
	for i := range zones {
		// A zone waiting for a DNS server is looked at when the servers
		// change: without DNS nodes, every account's zone waits, and
		// reading each one again here was a burst of work per resync
		// that grew with the cluster.
		if z := &zones[i]; unsettledZone(z) && !c.waitingDNS[z.Name] {
			names = append(names, z.Name)
		}
	}
	c.mu.Unlock()
	if len(names) > 0 {
		c.mark(names...)
	}
	if err := c.checkPrimaries(ctx, v, zones); err != nil {
		return err
	}
	if !secondaries {
		return nil
	}
	return c.sendSecondaries(ctx, v, zones)
}

// unsettledZone reports whether z still waits for the controller or for its
// node; a FAILED zone waits for an operator's change instead.
func unsettledZone(z *store.ZoneState) bool {
	if z.Status == store.ZoneFailed {
		return false
	}
	return z.Deleted || z.TaskID != "" || z.Generation != z.AppliedGeneration || z.Status != store.ZoneActive
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
