package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

// Zone controller tuning.
const (
	// zoneWaitRetry is how often zones waiting for something outside the
	// controller (placement, a DNS server on the node) are looked at again.
	zoneWaitRetry = 2 * time.Second
	// secondaryResync is how often every secondary is sent its full zone
	// set even when nothing changed: the set is what heals a wiped or
	// drifted secondary, without anyone noticing the drift first.
	secondaryResync = 60 * time.Second
	// secondaryDebounce gathers a burst of zone changes into one sync.
	secondaryDebounce = 500 * time.Millisecond
	// rotateInterval is the minimum time between the steps of a ZSK
	// rollover: the zone's TTLs must expire between publishing a key and
	// signing with it, and between switching and withdrawing the old one.
	rotateInterval = time.Hour
)

// errZoneGone tells process to delete a zone record that no node serves.
var errZoneGone = errors.New("zone record to delete")

// dnsServiceName is the name the agent's DNS module reports its daemon by.
const dnsServiceName = "pdns"

// zoneController converges every zone onto its primary node and the full
// set of zones onto every secondary DNS node. It runs on the leader only
// and, like the account controller, is level-triggered: each pass looks at
// a zone's whole record, so a missed or repeated event costs work, never
// correctness.
type zoneController struct {
	s *Server

	mu sync.Mutex
	// dirty holds the zones to look at, each with the revision of the
	// write that marked it, or 0 when it must be looked at whatever its
	// revision (done notices, retries, a broken watch).
	dirty map[string]int64
	// handled is, per zone, the revision up to which its record needs
	// nothing more: the controller's own last write or look at it, or the
	// API's write that queued the zone's task itself (ZoneTaskQueued).
	// The watch event of such a write is skipped rather than read and
	// decoded again, which for a large zone is most of a change's cost
	// on the server.
	handled map[string]int64
	waiting map[string]bool // zones to look at again after zoneWaitRetry
	// waitDNS holds zones that no DNS server can take yet; they are looked
	// at again when the set of DNS servers changes, not on a timer, so a
	// cluster without DNS nodes costs nothing per zone.
	waitingDNS map[string]bool

	// servers is the set of DNS servers the waiting zones last saw.
	servers string
	signal  chan struct{}
	resync  chan struct{}
	checks  chan struct{} // a check of primary zones was answered

	// sent remembers the last zone set sent to each secondary (only the
	// controller's own goroutine touches it).
	sent map[string]sentSync
	// scanned is when resyncZones last listed every zone.
	scanned time.Time
	// checkedAt is when the primaries were last sent their zones to
	// check; checking holds the checks not yet answered, per node.
	checkedAt time.Time
	checking  map[string]outstandingChecks

	// RotateInterval overrides rotateInterval (tests).
	rotateInterval time.Duration
}

type sentSync struct {
	hash [32]byte
	at   time.Time
}

func newZoneController(s *Server) *zoneController {
	return &zoneController{
		s: s, dirty: map[string]int64{}, handled: map[string]int64{}, waiting: map[string]bool{}, waitingDNS: map[string]bool{},
		signal: make(chan struct{}, 1), resync: make(chan struct{}, 1), checks: make(chan struct{}, 1),
		sent: map[string]sentSync{}, checking: map[string]outstandingChecks{}, rotateInterval: s.cfg.ZoneRotateInterval,
	}
}

// mark asks for a look at each zone, whatever its revision.
func (c *zoneController) mark(names ...string) {
	c.mu.Lock()
	for _, n := range names {
		c.dirty[n] = 0
	}
	c.mu.Unlock()
	c.poke()
}

// markAt asks for a look at a zone because of its write at rev.
func (c *zoneController) markAt(name string, rev int64) {
	c.mu.Lock()
	if r, ok := c.dirty[name]; !ok || (r != 0 && r < rev) {
		c.dirty[name] = rev
	}
	c.mu.Unlock()
	c.poke()
}

func (c *zoneController) poke() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// dirtyZone is a zone to look at and the revision that asked for it (0:
// any).
type dirtyZone struct {
	name string
	rev  int64
}

func (c *zoneController) take() []dirtyZone {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]dirtyZone, 0, len(c.dirty))
	for n, rev := range c.dirty {
		out = append(out, dirtyZone{n, rev})
	}
	clear(c.dirty)
	slices.SortFunc(out, func(a, b dirtyZone) int { return strings.Compare(a.name, b.name) })
	return out
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
	c.mu.Unlock()
}

func (c *zoneController) wait(name string) {
	c.mu.Lock()
	c.waiting[name] = true
	c.mu.Unlock()
}

func (c *zoneController) waitDNS(name string) {
	c.mu.Lock()
	c.waitingDNS[name] = true
	c.mu.Unlock()
}

// dnsViewMaxAge bounds how stale the controller's list of DNS servers may
// be; a zone sent to a server that just went away is caught by its task.
const dnsViewMaxAge = 2 * time.Second

// recheckDNS re-marks the zones waiting for a DNS server when the set of
// servers changed.
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
	// Every zone names the servers: look at all of them again.
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

func (c *zoneController) run(ctx context.Context) {
	zones, rev, err := c.s.store.ListZoneStates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.s.log.Error("zone controller: initial list", "err", err)
		}
		return
	}
	for _, z := range zones {
		c.mark(z.Name)
	}
	go c.watch(ctx, rev)

	retry := time.NewTicker(zoneWaitRetry)
	defer retry.Stop()
	resync := time.NewTicker(c.resyncEvery() / 4)
	defer resync.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.signal:
			for _, d := range c.take() {
				if c.isHandled(d.name, d.rev) {
					continue
				}
				if err := c.process(ctx, d.name); err != nil && ctx.Err() == nil {
					c.s.log.Warn("zone controller", "zone", d.name, "err", err)
					c.wait(d.name)
				}
			}
			if debounce == nil {
				debounce = time.After(secondaryDebounce)
			}
		case <-c.resync:
			if debounce == nil {
				debounce = time.After(secondaryDebounce)
			}
		case <-debounce:
			debounce = nil
			if err := c.syncSecondaries(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("zone controller: sync secondaries", "err", err)
			}
		case <-c.checks:
			if err := c.takeChecks(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("zone controller: checks of primary zones", "err", err)
			}
		case <-resync.C:
			// Checks answered while no watch was running (before this
			// leader's) are taken here.
			if err := c.takeChecks(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("zone controller: checks of primary zones", "err", err)
			}
			if err := c.resyncZones(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("zone controller: resync", "err", err)
			}
		case <-retry.C:
			if err := c.recheckDNS(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("zone controller: list DNS servers", "err", err)
			}
			c.mu.Lock()
			names := slices.Collect(maps.Keys(c.waiting))
			clear(c.waiting)
			c.mu.Unlock()
			c.mark(names...)
		}
	}
}

// watch marks zones whose record or done notices change and takes the
// answers of checks of primary zones.
func (c *zoneController) watch(ctx context.Context, rev int64) {
	cli := c.s.store.Client()
	wctx := clientv3.WithRequireLeader(ctx)
	zones := cli.Watch(wctx, store.PrefixZones, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	done := cli.Watch(wctx, store.PrefixDoneZones, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
	checks := cli.Watch(wctx, store.PrefixDoneDNSNodes, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-zones:
			if !ok || resp.Err() != nil {
				c.restart(ctx)
				return
			}
			for _, ev := range resp.Events {
				c.markAt(strings.TrimPrefix(string(ev.Kv.Key), store.PrefixZones), ev.Kv.ModRevision)
			}
		case resp, ok := <-done:
			if !ok || resp.Err() != nil {
				c.restart(ctx)
				return
			}
			for _, ev := range resp.Events {
				name, _, _ := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), store.PrefixDoneZones), "/")
				c.mark(name)
			}
		case resp, ok := <-checks:
			if !ok || resp.Err() != nil {
				c.restart(ctx)
				return
			}
			select {
			case c.checks <- struct{}{}:
			default:
			}
		}
	}
}

// restart re-lists after a broken watch (compaction, leader change of etcd).
func (c *zoneController) restart(ctx context.Context) {
	for ctx.Err() == nil {
		zones, rev, err := c.s.store.ListZoneStates(ctx)
		if err == nil {
			for _, z := range zones {
				c.mark(z.Name)
			}
			go c.watch(ctx, rev)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
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
			c.wait(z.Name)
			break
		}
		step := agentpb.RotateZoneKeysAction_Step(z.RotateStep)
		return c.enqueue(b, z, &agentpb.Task{Action: &agentpb.Task_RotateZoneKeys{RotateZoneKeys: &agentpb.RotateZoneKeysAction{
			Zone: z.Name, Step: step, MinIntervalSeconds: uint32(c.interval() / time.Second)}}})
	}
	c.setStatus(z, store.ZoneActive, "")
	return nil
}

func (c *zoneController) setStatus(z *store.Zone, st store.ZoneStatus, reason string) {
	z.Status, z.Reason = st, reason
}

func (c *zoneController) enqueue(b *store.Batch, z *store.Zone, spec *agentpb.Task) error {
	return c.enqueueRefreshing(b, z, spec, nil)
}

func (c *zoneController) enqueueRefreshing(b *store.Batch, z *store.Zone, spec *agentpb.Task, secondaries []string) error {
	t, err := b.EnqueueRefreshing(z.Node, spec, "zone/"+z.Name, "controller", secondaries)
	if err != nil {
		return err
	}
	z.TaskID = t.ID
	return nil
}

// dnsServer is a node that runs the agent's DNS module.
type dnsServer struct {
	node string
	host string // the address other nodes reach it on
	addr string // host:port its DNS server answers on
}

type dnsView struct {
	// key identifies the servers (with their addresses) and nameservers.
	key         string
	servers     map[string]dnsServer
	order       []string // server names, sorted
	nameservers []string // the cluster's NS names; nil: per-zone defaults
}

// dnsView lists the READY nodes with role dns whose agent reports a DNS
// server, with the address it answers on: the reported listen address, or
// the node's declared address where the server listens on all interfaces.
func (c *zoneController) dnsView(ctx context.Context) (*dnsView, error) {
	return c.s.dnsViews.get(ctx, c.s.store)
}

// dnsViewCache is the replica's dnsView, shared by the zone controller and
// the API (ZoneTask).
type dnsViewCache struct {
	mu sync.Mutex
	v  *dnsView
	at time.Time
}

func (vc *dnsViewCache) get(ctx context.Context, st *store.Store) (*dnsView, error) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.v != nil && time.Since(vc.at) < dnsViewMaxAge {
		return vc.v, nil
	}
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	v := &dnsView{servers: map[string]dnsServer{}}
	for _, n := range nodes {
		if !slices.Contains(n.Roles, "dns") || n.State.Status != store.NodeReady {
			continue
		}
		rep, err := st.CachedServices(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		for _, svc := range rep.Services {
			if svc.Name != dnsServiceName || svc.State != "running" || len(svc.Listen) == 0 {
				continue
			}
			host, port, err := net.SplitHostPort(svc.Listen[0])
			if err != nil {
				continue
			}
			if ip, err := netip.ParseAddr(host); err != nil || ip.IsUnspecified() {
				host = n.Address
			}
			v.servers[n.Name] = dnsServer{node: n.Name, host: host, addr: net.JoinHostPort(host, port)}
			v.order = append(v.order, n.Name)
		}
	}
	slices.Sort(v.order)
	if v.nameservers, err = st.GetNameservers(ctx); err != nil {
		return nil, err
	}
	var parts []string
	for _, n := range v.order {
		parts = append(parts, n+"="+v.servers[n].addr)
	}
	v.key = strings.Join(parts, ",") + ";" + strings.Join(v.nameservers, ",")
	vc.v, vc.at = v, time.Now()
	return v, nil
}

// ZoneTask is the task that converges a zone just changed through the API
// on its DNS server, for the API to enqueue in the same transaction as the
// change: an operator's record is then served without waiting for the
// zone controller's pass. It is nil whenever the controller has more to
// decide than "send the new records" (no task can go yet, one is under
// way, the zone is new, failing, being deleted or rolling its keys); the
// controller then converges the zone as always. Like the controller, it
// records the servers the spec names and marks the zone PENDING.
func (s *Server) ZoneTask(ctx context.Context, z *store.Zone) (*store.ZoneTask, error) {
	if z.Deleted || z.TaskID != "" || z.Node == "" || z.AppliedGeneration == 0 || z.Defaults || z.RotateStep > 0 ||
		(z.Status == store.ZoneFailed && z.Attempts >= maxTaskAttempts) {
		return nil, nil
	}
	view, err := s.dnsViews.get(ctx, s.store)
	if err != nil {
		return nil, err
	}
	if _, ok := view.servers[z.Node]; !ok {
		return nil, nil
	}
	t, err := ensureTask(z, view)
	if err != nil {
		return nil, nil // the controller records why
	}
	return t, nil
}

// ZoneTaskQueued tells the zone controller that the API wrote zone at rev
// together with the task ZoneTask gave it: the controller has nothing to
// decide about that write and skips its event.
func (s *Server) ZoneTaskQueued(zone string, rev int64) {
	if c := s.zoneCtl.Load(); c != nil {
		c.handledAt(zone, rev)
	}
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
func ensureTask(z *store.Zone, view *dnsView) (*store.ZoneTask, error) {
	spec, err := ensureSpec(z, view)
	if err != nil {
		return nil, err
	}
	z.Status, z.Reason = store.ZonePending, ""
	z.Servers = view.key
	t := &store.ZoneTask{Spec: &agentpb.Task{Generation: z.Generation, Action: &agentpb.Task_EnsureZone{EnsureZone: spec}}}
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

func addrType(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
		return dnszone.TypeAAAA
	}
	return dnszone.TypeA
}

// defaultRecords are what an account's zone starts with: the site on the
// node's address at the apex and www, mail on the node, and an SPF policy
// that allows the node to send.
func defaultRecords(z *store.Zone, host string) []store.ZoneRecord {
	apex := z.Name + "."
	if host == "" {
		return nil
	}
	rs := []store.ZoneRecord{
		{Name: apex, Type: addrType(host), Content: host},
		{Name: "www." + apex, Type: dnszone.TypeCNAME, Content: apex},
		{Name: "mail." + apex, Type: addrType(host), Content: host},
		{Name: apex, Type: dnszone.TypeMX, Content: "mail." + apex, Priority: 10},
		{Name: apex, Type: dnszone.TypeTXT, Content: `"v=spf1 a mx ~all"`},
	}
	for i := range rs {
		rs[i].ID = z.NewRecordID()
		rs[i].TTL = dnszone.DefaultTTL
	}
	return rs
}

// withDefaults returns a new zone's default records followed by the
// records its owner added before the controller first filled it in: the API
// accepts changes from the moment the zone exists, and an accepted record
// must not vanish. A default gives way to the owner's records at its name
// and type, to any CNAME conflict at its name, and to the zone's record
// limit (the node would refuse the whole zone).
func withDefaults(defaults, own []store.ZoneRecord) []store.ZoneRecord {
	out := make([]store.ZoneRecord, 0, len(defaults)+len(own))
	for _, d := range defaults {
		if len(out)+len(own) >= dnszone.MaxZoneRecords {
			break
		}
		if !slices.ContainsFunc(own, func(r store.ZoneRecord) bool {
			return r.Name == d.Name && (r.Type == d.Type || r.Type == dnszone.TypeCNAME || d.Type == dnszone.TypeCNAME)
		}) {
			out = append(out, d)
		}
	}
	return append(out, own...)
}

// resyncZones looks again at every zone still on its way to ACTIVE, whether
// or not a watch event said so (the account controller's resyncUnsettled
// explains why), has the primaries check their zones when that is due and
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

// syncSecondaries sends every DNS node the complete set of zones it must
// serve as a secondary: every zone whose primary is another DNS node. A
// set equal to the last one sent is sent again only every secondaryResync.
func (c *zoneController) syncSecondaries(ctx context.Context) error {
	v, err := c.dnsView(ctx)
	if err != nil {
		return err
	}
	if len(v.order) < 2 {
		return nil
	}
	zones, _, err := c.s.store.ListZoneStates(ctx)
	if err != nil {
		return err
	}
	return c.sendSecondaries(ctx, v, zones)
}

func (c *zoneController) sendSecondaries(ctx context.Context, v *dnsView, zones []store.ZoneState) error {
	now := time.Now()
	for _, node := range v.order {
		spec := &agentpb.SyncSecondaryZonesAction{}
		for _, z := range zones {
			p, ok := v.servers[z.Node]
			if z.Deleted || !ok || z.Node == node || z.AppliedGeneration == 0 {
				continue
			}
			spec.Zones = append(spec.Zones, &agentpb.SecondaryZone{Zone: z.Name, Masters: []string{p.addr}, Serial: z.Serial})
		}
		h := syncHash(spec)
		if last, ok := c.sent[node]; ok && last.hash == h && now.Sub(last.at) < c.resyncEvery() {
			continue
		}
		if _, err := c.s.store.EnqueueTask(ctx, node, &agentpb.Task{Action: &agentpb.Task_SyncSecondaryZones{SyncSecondaryZones: spec}},
			"controller", store.NewAuditEvent("system", c.s.id, "syncSecondaryZones", node, "ok")); err != nil {
			return err
		}
		c.sent[node] = sentSync{hash: h, at: now}
	}
	return nil
}

// syncHash identifies the zones and masters a sync names, not their
// serials. A secondary behind a serial is caught up by the periodic sync;
// every change already sends the secondaries a refresh of its own, and
// sending each of them its whole zone set after every change would cost
// far more.
func syncHash(spec *agentpb.SyncSecondaryZonesAction) [32]byte {
	h := sha256.New()
	for _, z := range spec.Zones {
		h.Write([]byte(z.Zone))
		for _, m := range z.Masters {
			h.Write([]byte{0})
			h.Write([]byte(m))
		}
		h.Write([]byte{'\n'})
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
