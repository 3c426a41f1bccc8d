package controlplane

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/publicsuffix"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// The certificate controller (leader only) turns each certificate's spec
// into tasks for the node that serves it, one in flight at a time, and
// records their typed results in the certificate's status (store
// certificates.go: spec and status in one record under compare-and-swap,
// the next task written in the transaction that records the last one).
//
// Keys are certificate ids (the site's domain), plus two kinds of its
// own: certAccountKey(id), the automatic certificates of one account's
// sites, and keyCertSweep, the periodic look for renewals and retries
// that are due. An in-memory index of every certificate, fed by the
// certificates' informer, answers the sweep, maps a zone to the
// certificates waiting for its names and an account to its certificates,
// and serves the expiry metric at scrape time: 10,000 certificates cost a
// map walk a minute, not a listing.
//
// The rule that matters most: a working certificate is never dropped for
// a failed attempt. A failed renewal leaves the served chain and ISSUED
// with lastError, failures and a backoff; FAILED is only for a
// certificate never issued.
const (
	certWorkers    = 4
	keyCertSweep   = "#sweep"
	certAccountPfx = "acct:"
	// inFlightSweeps: every so many sweeps the certificates with a task
	// in flight are looked at as well (a lost task).
	inFlightSweeps = 10
	// maxCNAMEHops bounds a name's CNAME chain in our zone data.
	maxCNAMEHops = 8
)

func certAccountKey(id string) string { return certAccountPfx + id }

// Task actions of certificates (Task.Action, the oneof's JSON name).
const (
	actionIssueCert   = "issueCertificate"
	actionInstallCert = "installCertificate"
	actionRevokeCert  = "revokeCertificate"
	actionRemoveCert  = "removeCertificate"
)

// certEntry is what the index keeps of a certificate.
type certEntry struct {
	account, node string
	domains       []string
	generation    int64
	state         store.CertState
	notAfter      time.Time
	renewAt       time.Time
	nextAttempt   time.Time
	failures      int
	inFlight      bool
	// pending: a generation not yet applied, a deletion or a revocation.
	pending           bool
	autoRenew, custom bool
	waitingNames      bool // pending, its names not resolving yet
	// partial: the served certificate leaves out names (missingNames),
	// ordered again from partialRetryAt or on a zone event.
	partial        bool
	partialRetryAt time.Time
	deleting, auto bool
}

func entryOf(c *store.Certificate) *certEntry {
	st := &c.Status
	e := &certEntry{
		account: c.Account, node: c.Node, domains: c.Domains, generation: c.Generation, state: st.State,
		notAfter: st.NotAfter, renewAt: st.RenewAt, nextAttempt: st.NextAttempt, failures: st.Failures,
		inFlight: st.TaskID != "", autoRenew: c.AutoRenew, custom: c.Custom, deleting: c.Deleting, auto: c.Auto,
		pending: c.Generation > st.ObservedGeneration || c.Deleting || (c.Revoke && st.State != store.CertRevoked),
	}
	e.waitingNames = e.pending && !e.inFlight && st.Failures == 0 && !st.NextAttempt.IsZero()
	e.partial, e.partialRetryAt = missingNames(c), st.PartialRetryAt
	return e
}

// certIndex is the controller's view of every certificate.
type certIndex struct {
	mu sync.RWMutex
	m  map[string]*certEntry
	// byAccount holds each account's certificate ids, and byDomain those
	// with a name under each registrable domain (the zones a zone event
	// names are at or under one): every account and zone event asks, and
	// a scan of m per event grew with the cluster. Slices, not sets: an
	// account or domain has few certificates, and a map per key cost
	// more than the index.
	byAccount map[string][]string
	byDomain  map[string][]string
}

func newCertIndex() *certIndex {
	return &certIndex{m: map[string]*certEntry{}, byAccount: map[string][]string{}, byDomain: map[string][]string{}}
}

// registrables returns the registrable domains of e's names, each once.
func (e *certEntry) registrables() []string {
	var out []string
	for _, d := range e.domains {
		d = strings.TrimPrefix(d, "*.")
		if reg, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
			d = reg
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// link adds id under key: put unlinks an entry's old keys first, so id is
// never there yet (a search would cost a scan of a domain shared by
// thousands of sites).
func link(sets map[string][]string, key, id string) {
	sets[key] = append(sets[key], id)
}

func unlink(sets map[string][]string, key, id string) {
	ids := slices.DeleteFunc(sets[key], func(s string) bool { return s == id })
	if len(ids) == 0 {
		delete(sets, key)
		return
	}
	sets[key] = ids
}

// put indexes e under id and returns the entry it replaces, if any.
func (x *certIndex) put(id string, e *certEntry) (prev *certEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	prev = x.m[id]
	x.m[id] = e
	if prev != nil && prev.account == e.account && slices.Equal(prev.domains, e.domains) {
		return prev // most writes change only the status
	}
	if prev != nil {
		x.unlinkEntry(id, prev)
	}
	link(x.byAccount, e.account, id)
	for _, reg := range e.registrables() {
		link(x.byDomain, reg, id)
	}
	return prev
}

func (x *certIndex) drop(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e := x.m[id]; e != nil {
		x.unlinkEntry(id, e)
		delete(x.m, id)
	}
}

// unlinkEntry removes id, indexed as e, from the sets; x.mu is held.
func (x *certIndex) unlinkEntry(id string, e *certEntry) {
	unlink(x.byAccount, e.account, id)
	for _, reg := range e.registrables() {
		unlink(x.byDomain, reg, id)
	}
}

func (x *certIndex) reset() {
	x.mu.Lock()
	x.m = map[string]*certEntry{}
	x.byAccount = map[string][]string{}
	x.byDomain = map[string][]string{}
	x.mu.Unlock()
}

// due returns the certificates whose time has come at now.
func (x *certIndex) due(now time.Time) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.m {
		if at := e.dueAt(); !at.IsZero() && !now.Before(at) {
			out = append(out, id)
		}
	}
	return out
}

// has reports whether certificate id is indexed.
func (x *certIndex) has(id string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.m[id]
	return ok
}

// hasAccount reports whether account has certificates.
func (x *certIndex) hasAccount(account string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byAccount[account]) > 0
}

// ofAccount returns the ids of account's certificates, sorted.
func (x *certIndex) ofAccount(account string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := slices.Clone(x.byAccount[account])
	slices.Sort(out)
	return out
}

// idleOf returns account's certificates with work to do and no task in
// flight: those that may wait for the account (its node, a site's change
// being applied) and have nothing else to wake them.
func (x *certIndex) idleOf(account string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for _, id := range x.byAccount[account] {
		if e := x.m[id]; e.pending && !e.inFlight {
			out = append(out, id)
		}
	}
	return out
}

// inFlight returns the ids of the certificates with a task in flight.
func (x *certIndex) inFlight() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.m {
		if e.inFlight {
			out = append(out, id)
		}
	}
	return out
}

// onNode returns the ids of the certificates on node.
func (x *certIndex) onNode(node string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.m {
		if e.node == node {
			out = append(out, id)
		}
	}
	return out
}

// waitingIn returns the certificates with a name inside zone that wait
// for names, or may be about to: one pending and not in flight may be in
// a sync that read the zone before this event and is about to record it
// waiting, and would then miss the event that ends the wait.
func (x *certIndex) waitingIn(zone string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	reg, err := publicsuffix.EffectiveTLDPlusOne(zone)
	if err != nil {
		reg = zone
	}
	var out []string
	for _, id := range x.byDomain[reg] {
		e := x.m[id]
		if !(e.waitingNames || e.pending || e.partial) || e.inFlight {
			continue
		}
		for _, d := range e.domains {
			d = strings.TrimPrefix(d, "*.")
			if d == zone || strings.HasSuffix(d, "."+zone) {
				out = append(out, id)
				break
			}
		}
	}
	return out
}

// certController is the certificate controller; see the top of the file.
type certController struct {
	s     *Server
	st    *store.Store
	ctl   *controller.Controller
	index *certIndex

	// acme is the ACME server as configured, without the sealed EAB key
	// (sealed per node); eabHMAC is the EAB key itself, read at start and
	// never logged.
	acme    *agentpb.AcmeServer
	eabHMAC []byte

	sweep, retryBase, retryMax time.Duration

	sweeps atomic.Int64

	// orders paces ACME orders per node (orderBucket).
	ordersMu   sync.Mutex
	orders     map[string]*orderBucket
	orderBurst int
	orderEvery time.Duration

	// accounts remembers, per account, the fingerprint of what its
	// automatic certificates depend on, so that the account controller's
	// many status writes do not each queue the account.
	accMu    sync.Mutex
	accounts map[string]uint64
}

// newCertController reads the ACME configuration's files and builds the
// controller; it runs while this replica leads.
func newCertController(s *Server) (*certController, error) {
	cfg := s.cfg.ACME
	cc := &certController{s: s, st: s.store, index: newCertIndex(), accounts: map[string]uint64{},
		sweep: cfg.RenewSweep, retryBase: cfg.RetryBase, retryMax: cfg.RetryMax,
		orders: map[string]*orderBucket{}, orderBurst: cfg.OrderBurst, orderEvery: cfg.OrderEvery}
	if cc.orderBurst <= 0 {
		cc.orderBurst = defaultOrderBurst
	}
	if cc.orderEvery <= 0 {
		cc.orderEvery = defaultOrderEvery
	}
	if cc.sweep <= 0 {
		cc.sweep = defaultRenewSweep
	}
	if cc.retryBase <= 0 {
		cc.retryBase = defaultRetryBase
	}
	if cc.retryMax <= 0 {
		cc.retryMax = defaultRetryMax
	}
	// No ACME server: sites keep their self-signed certificates and only
	// installed ones are served.
	if cfg.DirectoryURL != "" {
		if err := cc.readACME(cfg); err != nil {
			return nil, err
		}
	}
	if s.metrics != nil {
		s.metrics.certExpiry.set(cc.index)
	}
	cc.ctl = controller.New(controller.Options{
		Name:  "certificate",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindCertificates, Handle: cc.certEvent},
			{Kind: store.KindCertificateOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindAccounts, Handle: cc.accountEvent},
			{Kind: store.KindMailChanges, Handle: certMailChange},
			{Kind: store.KindZones, Handle: cc.zoneEvent},
			{Kind: store.KindNodes, Handle: cc.nodeEvent},
		},
		Ticks:   []controller.Tick{{Key: keyCertSweep, Every: cc.sweep}},
		Sync:    cc.sync,
		Workers: certWorkers,
		Log:     s.log,
		Metrics: s.metrics.controllers,
	})
	return cc, nil
}

// Run runs the controller for one term as leader, with a fresh index
// (the informer's listing fills it).
func (cc *certController) Run(ctx context.Context) {
	cc.index.reset()
	cc.accMu.Lock()
	clear(cc.accounts)
	cc.accMu.Unlock()
	defer cc.index.reset()
	cc.ctl.Run(ctx)
}

// certEvent indexes a certificate and queues it when it has work now: a
// new generation, a deletion, a revocation. The controller's own writes
// (a task sent, a result recorded) queue nothing: the done notice or the
// sweep brings the certificate back.
func (cc *certController) certEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		// syncCert finds it gone and queues the domain's owner, whose
		// automatic certificate may have waited for this one to go.
		cc.index.drop(ev.Name)
		return ev.Name, true, false
	}
	c, err := store.DecodeCertificate(ev)
	if err != nil {
		return ev.Name, false, false
	}
	e := entryOf(c)
	prev := cc.index.put(ev.Name, e)
	// A new generation (a renewal asked for, new names) is looked at at
	// once, even while the certificate waits for its names; its backoff
	// still holds (nextCertStep).
	if prev != nil && e.generation > prev.generation && !e.inFlight {
		return ev.Name, true, false
	}
	at := e.dueAt()
	return ev.Name, !at.IsZero() && !time.Now().Before(at), false
}

// accountEvent queues an account's automatic certificates when what they
// depend on changed: its sites, node, state or applied generation.
func (cc *certController) accountEvent(ev store.Event) (string, bool, bool) {
	key := certAccountKey(ev.Name)
	cc.accMu.Lock()
	defer cc.accMu.Unlock()
	if ev.Deleted {
		delete(cc.accounts, ev.Name)
		return key, true, false
	}
	a, err := store.DecodeAccountEvent(ev)
	if err != nil {
		return key, false, false
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%t|%d|", a.Node, a.Status, a.Deleted, a.AppliedGeneration)
	for _, s := range a.AllSites() {
		fmt.Fprintf(h, "%s,%s,%t,%d;", s.Domain, s.AliasOf, s.NoAutoCertificate, s.Generation)
	}
	sum := h.Sum64()
	prev, ok := cc.accounts[ev.Name]
	cc.accounts[ev.Name] = sum
	if ok && prev == sum {
		return key, false, false
	}
	// An account with no certificate has work only once it is served. A
	// certificate indexed just after a skipped event is caught by its own
	// sync: one of no site of its account queues the account (issueTask).
	served := a.Node != "" && (a.Status == store.AccountActive || a.Status == store.AccountSuspended) && !a.Deleted
	return key, served || cc.index.hasAccount(ev.Name), false
}

// certMailChange queues an account whose mail domains may have changed:
// mail. and webmail. follow them.
func certMailChange(ev store.Event) (string, bool, bool) {
	return certAccountKey(ev.Name), store.MailChangeOf(ev) == store.MailChangedSpec, false
}

// zoneEvent queues the certificates waiting for a name in a zone that is
// now served as written.
func (cc *certController) zoneEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		return "", false, false
	}
	z, err := store.DecodeZone(ev.Value)
	if err != nil || !zoneApplied(z) {
		return "", false, false
	}
	for _, id := range cc.index.waitingIn(z.Name) {
		cc.ctl.Enqueue(id)
	}
	return "", false, false
}

// nodeEvent queues the certificates of a removed node: their tasks in
// flight went with its queue, and a deletion has nothing left to remove.
func (cc *certController) nodeEvent(ev store.Event) (string, bool, bool) {
	if !ev.Deleted {
		return "", false, false
	}
	cc.ctl.Enqueue(cc.index.onNode(ev.Name)...)
	return "", false, false
}

func zoneApplied(z *store.Zone) bool {
	return !z.Deleted && z.AppliedGeneration > 0 && z.AppliedGeneration >= z.Generation && z.Status != store.ZoneFailed
}

func (cc *certController) sync(ctx context.Context, key string) error {
	switch {
	case key == "":
		return nil
	case key == keyCertSweep:
		for _, id := range cc.index.due(time.Now()) {
			cc.ctl.Enqueue(id)
		}
		// Now and then, the certificates with a task in flight too: a
		// node removed while no replica led sent no event, and syncCert
		// finds such a task lost.
		if cc.sweeps.Add(1)%inFlightSweeps == 0 {
			cc.ctl.Enqueue(cc.index.inFlight()...)
		}
		return nil
	case strings.HasPrefix(key, certAccountPfx):
		return cc.syncAccount(ctx, strings.TrimPrefix(key, certAccountPfx))
	}
	return cc.syncCert(ctx, key)
}

// errForget, from an UpdateCertificate callback, deletes the record
// instead: the certificate is off its node, or has no node left.
var errForget = errors.New("forget the certificate")

// lostTask stands for a finished task whose record is gone.
func lostTask(id string) *store.Task {
	return &store.Task{ID: id, Status: store.TaskFailed, Error: "task record lost"}
}

// syncCert converges one certificate: records the task it waited on,
// then sends the next one, in one compare-and-swap.
func (cc *certController) syncCert(ctx context.Context, id string) error {
	c, err := cc.st.GetCertificate(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return cc.gone(ctx, id)
	}
	if err != nil {
		return err
	}
	outcomes, err := cc.st.CertificateOutcomes(ctx, id)
	if err != nil {
		return err
	}
	finished := map[string]*store.Task{}
	for _, tid := range outcomes {
		t, _, err := cc.st.GetTask(ctx, tid)
		switch {
		case errors.Is(err, store.ErrNotFound):
			finished[tid] = lostTask(tid)
		case err != nil:
			return err
		default:
			finished[tid] = t
		}
	}
	// A removed node takes its queue with it: a task still PENDING there
	// is never answered and has no done notice, so it is taken for lost
	// here (failed, retried by the backoff) instead of holding the
	// certificate in flight for ever.
	nodeGone := false
	if c.Node != "" {
		if _, err := cc.st.GetNode(ctx, c.Node); errors.Is(err, store.ErrNotFound) {
			nodeGone = true
		} else if err != nil {
			return err
		}
	}
	if tid := c.Status.TaskID; tid != "" && finished[tid] == nil {
		lost := nodeGone
		if !lost {
			if lost, err = cc.st.TaskLost(ctx, tid); err != nil {
				return err
			}
		}
		if lost {
			finished[tid] = lostTask(tid)
		}
	}
	if len(c.Status.Challenges) > 0 && (c.Status.TaskID == "" || finished[c.Status.TaskID] != nil) {
		// The order is over: what its agent published and did not
		// withdraw (it died mid-order, or the order was lost) goes now.
		if err := cc.withdrawChallenges(ctx, c); err != nil {
			return err
		}
	}
	a, _, err := cc.st.GetAccount(ctx, c.Account)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if a == nil || a.Deleted {
		// The account's deletion takes its sites off the node: only the
		// record is left to remove.
		return cc.forget(ctx, id, "the account was deleted")
	}
	var events []store.CertEvent
	var plan certPlan
	mutate := func(c *store.Certificate) ([]*store.CertTask, error) {
		before := mustJSON(c)
		old := c.Status.Events
		now := time.Now().UTC()
		if cc.record(c, finished, now) {
			return nil, errForget
		}
		if c.Node != a.Node && a.Node != "" && !c.Custom && c.Status.TaskID == "" && !c.Deleting {
			// The site was placed or moved: its certificate is ordered
			// on the node that serves it now.
			if c.Node != "" {
				c.Generation++
			}
			if st := &c.Status; st.ChainPEM != "" {
				// The key and chain stay on the old node: the new one
				// serves a self-signed certificate until it orders.
				c.AddEvent(now, "unserved", "serial "+st.Serial+" stays on node "+c.Node)
				clearServed(c)
			}
			c.Node = a.Node
			c.AddEvent(now, "placed", "the site is served by "+a.Node)
		}
		if nodeGone && c.Deleting {
			return nil, errForget // nothing is left on a removed node to take off
		}
		if nodeGone && c.Node == a.Node {
			waitFor(c, "node "+c.Node+" was removed", now)
			plan = certPlan{step: stepWait, at: c.Status.NextAttempt}
			events = newEvents(old, c.Status.Events)
			if mustJSON(c) == before {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}
		takeRequest(c)
		plan = nextCertStep(c, now)
		if plan.expired && c.Status.State != store.CertExpired {
			c.Status.State = store.CertExpired
			c.AddEvent(now, "expired", "the certificate expired on "+c.Status.NotAfter.Format(time.RFC3339)+" without a renewal")
		}
		task, err := cc.step(ctx, c, a, plan, now)
		if err != nil {
			return nil, err
		}
		events = newEvents(old, c.Status.Events)
		if task == nil && mustJSON(c) == before {
			return nil, store.ErrUnchanged
		}
		if task == nil {
			return nil, nil
		}
		return []*store.CertTask{{Node: c.Node, Spec: task, CreatedBy: "controller", Track: true}}, nil
	}
	// The outcomes taken and the events recorded (which land in the audit
	// log) are written with the record: a proposal each cost more than
	// the update.
	written := false
	updated, err := cc.st.UpdateCertificateIn(ctx, id, func(c *store.Certificate, b *store.Batch) ([]*store.CertTask, error) {
		written = false
		tasks, err := mutate(c)
		if err != nil {
			return nil, err
		}
		b.ConsumeCertificateOutcomes(id, outcomes...)
		for _, ev := range events {
			b.Audit(store.NewAuditEvent("system", cc.s.id, "certificate."+ev.Kind, id, auditResult(ev)))
		}
		written = true
		return tasks, nil
	})
	if errors.Is(err, errForget) {
		return cc.forget(ctx, id, "removed from node "+c.Node)
	}
	if errors.Is(err, store.ErrNoNode) {
		// The node went between the look above and the write: the next
		// sync sees it gone (waits, or forgets a deletion).
		cc.ctl.EnqueueAfter(id, time.Second)
		return nil
	}
	if errors.Is(err, store.ErrNotFound) {
		return cc.gone(ctx, id)
	}
	if err != nil {
		return err
	}
	if !written && len(outcomes) > 0 {
		// Outcomes that changed nothing are taken all the same.
		b := store.NewBatch()
		b.ConsumeCertificateOutcomes(id, outcomes...)
		if _, err := cc.st.Commit(ctx, b); err != nil {
			return err
		}
	}
	cc.index.put(id, entryOf(updated))
	if plan.step == stepWait && !plan.at.IsZero() {
		if d := time.Until(plan.at); d < cc.sweep {
			cc.ctl.EnqueueAfter(id, max(d, 0)+10*time.Millisecond)
		}
	}
	if e := entryOf(updated); e.waitingNames && time.Until(e.nextAttempt) < cc.sweep {
		cc.ctl.EnqueueAfter(id, time.Until(e.nextAttempt))
	}
	return nil
}

// newEvents returns the events of after that before did not have: those
// past before's last one (a record's AddEvent appends, dropping the
// oldest). Certificates, backups and restores keep their events so.
func newEvents[E comparable](before, after []E) []E {
	if len(before) == 0 {
		return slices.Clone(after)
	}
	last := before[len(before)-1]
	for i := len(after) - 1; i >= 0; i-- {
		if after[i] == last {
			return slices.Clone(after[i+1:])
		}
	}
	return slices.Clone(after)
}

func auditResult(ev store.CertEvent) string {
	if ev.Kind == "failed" {
		return "failed: " + ev.Message
	}
	if ev.Message == "" {
		return "ok"
	}
	return "ok: " + ev.Message
}

// forget deletes a certificate's record, after withdrawing its challenge
// records.
func (cc *certController) forget(ctx context.Context, id, why string) error {
	c, err := cc.st.GetCertificate(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if c != nil && len(c.Status.Challenges) > 0 {
		if err := cc.withdrawChallenges(ctx, c); err != nil {
			return err
		}
	}
	err = cc.st.DeleteCertificate(ctx, id, store.NewAuditEvent("system", cc.s.id, "certificate.deleted", id, "ok: "+why))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return cc.gone(ctx, id)
}

// gone drops a certificate whose record is deleted and queues the account
// that owns its domain now: a site re-added (to the same or another
// account) while the old record was being removed gets its automatic
// certificate only once that record is gone.
func (cc *certController) gone(ctx context.Context, id string) error {
	cc.index.drop(id)
	owner, err := cc.st.AccountIDByDomain(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cc.ctl.Enqueue(certAccountKey(owner))
	return nil
}

// record writes the result of the task c waits on, if it finished, into
// c's status. forget: the certificate was removed from its node.
func (cc *certController) record(c *store.Certificate, finished map[string]*store.Task, now time.Time) (forget bool) {
	st := &c.Status
	t, ok := finished[st.TaskID]
	if st.TaskID == "" || !ok {
		return false
	}
	gen := st.TaskGeneration
	partial := st.PartialOrders
	st.TaskID, st.TaskGeneration = "", 0
	var res *agentpb.CertificateResult
	err := t.Err()
	if err == nil && (t.Action == actionIssueCert || t.Action == actionInstallCert) {
		res, err = t.CertificateResult()
	}
	cc.countAttempt(t.Action, err)
	if err != nil {
		st.Failures++
		st.NextAttempt = now.Add(retryDelay(st.Failures, cc.retryBase, cc.retryMax))
		node := t.Node
		if node == "" {
			node = c.Node
		}
		st.LastError = "node " + node + ": " + err.Error()
		c.AddEvent(now, "failed", fmt.Sprintf("%s (attempt %d; next at %s)", st.LastError, st.Failures, st.NextAttempt.Format(time.RFC3339)))
		if t.Action == actionIssueCert || t.Action == actionInstallCert || t.Action == "" {
			switch {
			case st.ChainPEM == "":
				st.State = store.CertFailed
			case !st.NotAfter.IsZero() && !now.Before(st.NotAfter):
				st.State = store.CertExpired
			default:
				// A failed renewal: the served certificate stays.
				st.State = store.CertIssued
			}
		}
		return false
	}
	switch t.Action {
	case actionRemoveCert:
		if c.Deleting {
			return true
		}
		// The deletion was cancelled (the site came back) after the
		// removal was sent: the node serves nothing now, and the bumped
		// generation orders it again.
		if st.ChainPEM != "" {
			c.AddEvent(now, "unserved", "serial "+st.Serial+" was removed from node "+t.Node+" before the deletion was cancelled")
		}
		clearServed(c)
		return false
	case actionRevokeCert:
		st.State = store.CertRevoked
		st.ObservedGeneration = max(st.ObservedGeneration, gen)
		st.RenewAt, st.NextAttempt, st.Failures, st.LastError = time.Time{}, time.Time{}, 0, ""
		if c.Revoke && gen == c.Generation {
			// Not when the certificate was asked for again meanwhile.
			c.AutoRenew = false
		}
		c.AddEvent(now, "revoked", "serial "+st.Serial+" revoked; the site serves a self-signed certificate")
		// The revoked chain is not served any more: a later failed order
		// must not bring it back as ISSUED.
		clearServed(c)
		st.State = store.CertRevoked
		return false
	}
	st.ChainPEM = string(res.GetChainPem())
	st.Serial, st.Issuer = res.GetSerial(), res.GetIssuer()
	st.NotBefore = time.Unix(res.GetNotBeforeUnix(), 0).UTC()
	st.NotAfter = time.Unix(res.GetNotAfterUnix(), 0).UTC()
	st.IssuedDomains = slices.Clone(res.GetDomains())
	var ari time.Time
	if r := res.GetRenewAfterUnix(); r > 0 {
		ari = time.Unix(r, 0)
	}
	st.RenewAt = renewTime(c.ID, st.NotBefore, st.NotAfter, ari)
	st.State = store.CertIssued
	st.ObservedGeneration = max(st.ObservedGeneration, gen)
	st.Failures, st.NextAttempt, st.LastError = 0, time.Time{}, ""
	st.PartialOrders, st.PartialRetryAt = 0, time.Time{}
	if t.Action == actionIssueCert && missingNames(c) {
		// Names left out: ordered again later, backing off so that a
		// name that keeps failing validation does not loop.
		st.PartialOrders = partial + 1
		st.PartialRetryAt = now.Add(retryDelay(st.PartialOrders, cc.retryBase, cc.retryMax))
	}
	kind := "issued"
	if t.Action == actionInstallCert {
		kind = "installed"
		if c.Generation == gen {
			c.SealedKey = nil // the node has the key now
		}
	}
	c.AddEvent(now, kind, fmt.Sprintf("serial %s by %s for %s, valid until %s; renewal from %s",
		st.Serial, st.Issuer, strings.Join(st.IssuedDomains, ", "), st.NotAfter.Format(time.RFC3339), st.RenewAt.Format(time.RFC3339)))
	for _, f := range res.GetFailed() {
		c.AddEvent(now, "skipped", f.GetName()+": validation failed: "+f.GetError())
	}
	if len(res.GetReloaded()) > 0 {
		c.AddEvent(now, "served", "reloaded "+strings.Join(res.GetReloaded(), ", "))
	}
	return false
}

// withdrawChallenges removes every DNS-01 value c's status still records
// from its zone, and from the status in the same transaction. A value
// whose zone is gone (or another account's now) only leaves the status.
func (cc *certController) withdrawChallenges(ctx context.Context, c *store.Certificate) error {
	zones := &zoneWriter{store: cc.st, views: &cc.s.dnsViews, ctl: &cc.s.zoneCtl}
	for _, ch := range c.Status.Challenges {
		forgetIt := func(b *store.Batch) error {
			cur, rev, err := cc.st.GetCertificateRev(ctx, c.ID)
			if err != nil {
				return err
			}
			if cur.Status.SetChallenge(ch.FQDN, ch.Value, true) {
				b.PutCertificate(cur, rev)
			}
			return nil
		}
		ev := store.NewAuditEvent("system", cc.s.id, "certificate.withdrawChallenge", c.ID+"/"+ch.FQDN, "ok: left by the order")
		z, err := cc.zoneOf(ctx, strings.TrimPrefix(ch.FQDN, acmeChallengeLabel))
		if err != nil {
			return err
		}
		if z != nil && z.Account == c.Account {
			rec, verr := dnszone.ValidateRecord(z.Name, dnszone.Record{Name: ch.FQDN + ".", Type: dnszone.TypeTXT, Content: ch.Value}, dnszone.DefaultTTL)
			if verr == nil {
				_, err = zones.ChangeZoneWith(ctx, z.Name, ev, func(z *store.Zone) error {
					return replaceTXT(z, ch.FQDN+".", "", func(cur string) bool { return cur == rec.Content })
				}, forgetIt)
				if err == nil {
					continue
				}
				if !errors.Is(err, errTXTUnchanged) && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
					return fmt.Errorf("withdraw %s: %w", ch.FQDN, err)
				}
			}
		}
		// Not in the zone (any more): only the status keeps it.
		if _, err := cc.st.UpdateCertificate(ctx, c.ID, func(cur *store.Certificate) ([]*store.CertTask, error) {
			if !cur.Status.SetChallenge(ch.FQDN, ch.Value, true) {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}, store.AuditEvent{}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// keyLeftBehind marks installed certificate c, now pointed at the node
// its account moved to, as not served there: its private key stayed on
// node from (why) and only its owner can install it again. FAILED with
// no chain, never ISSUED with nobody serving it; the controller sends
// nothing for it. It returns the message for lastError and the event.
func keyLeftBehind(c *store.Certificate, from, why string) string {
	msg := fmt.Sprintf("the installed certificate (serial %s) is not served on node %s: its private key stayed on node %s (%s); install it again, or request one",
		c.Status.Serial, c.Node, from, why)
	clearServed(c)
	c.Status.State = store.CertFailed
	c.Status.ObservedGeneration = c.Generation
	return msg
}

// clearServed forgets the served certificate of c: it was revoked or is
// no longer on the node that serves the site. A later failed order then
// leaves c PENDING or FAILED, never ISSUED with a chain nobody serves.
func clearServed(c *store.Certificate) {
	st := &c.Status
	st.ChainPEM, st.Serial, st.Issuer = "", "", ""
	st.NotBefore, st.NotAfter, st.RenewAt = time.Time{}, time.Time{}, time.Time{}
	st.IssuedDomains = nil
	if st.State == store.CertIssued || st.State == store.CertRenewing || st.State == store.CertExpired {
		st.State = store.CertPending
	}
}

func (cc *certController) countAttempt(action string, err error) {
	if cc.s.metrics == nil || action == "" {
		return
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	cc.s.metrics.certAttempts.WithLabelValues(strings.TrimSuffix(action, "Certificate"), result).Inc()
}

// step carries out plan on c: the task to send (nil: none, c may have
// changed all the same).
func (cc *certController) step(ctx context.Context, c *store.Certificate, a *store.Account, plan certPlan, now time.Time) (*agentpb.Task, error) {
	st := &c.Status
	switch plan.step {
	case stepRemove:
		if c.Node == "" {
			return nil, errForget
		}
		return &agentpb.Task{Generation: c.Generation, Action: &agentpb.Task_RemoveCertificate{RemoveCertificate: &agentpb.RemoveCertificateAction{
			Id: c.ID, Username: a.Username, Site: c.ID, Mail: c.Mail}}}, nil
	case stepRevoke:
		c.AutoRenew = false
		if st.ChainPEM == "" || c.Custom {
			// Nothing we ordered to revoke: it only stops being served.
			st.State = store.CertRevoked
			st.ObservedGeneration = c.Generation
			c.AddEvent(now, "revoked", "no certificate ordered from the ACME server to revoke")
			return nil, nil
		}
		if cc.acme == nil {
			// Visible and patient, not an error retried at once.
			waitFor(c, "cannot revoke: no ACME server is configured (--acme-directory)", now)
			return nil, nil
		}
		acme, err := cc.acmeFor(ctx, c.Node)
		if err != nil {
			return nil, err
		}
		c.AddEvent(now, "revoking", fmt.Sprintf("serial %s, reason %d", st.Serial, c.RevokeReason))
		return &agentpb.Task{Generation: c.Generation, Action: &agentpb.Task_RevokeCertificate{RevokeCertificate: &agentpb.RevokeCertificateAction{
			Id: c.ID, Username: a.Username, Site: c.ID, ChainPem: []byte(st.ChainPEM), Reason: uint32(c.RevokeReason), Acme: acme, Mail: c.Mail}}}, nil
	case stepInstall:
		if len(c.SealedKey) == 0 {
			// Installed already at an earlier generation: the key is
			// on the node and nothing is left to send.
			st.ObservedGeneration = c.Generation
			c.AddEvent(now, "skipped", "a custom certificate is renewed by installing a new one")
			return nil, nil
		}
		c.AddEvent(now, "installing", "on node "+c.Node)
		return &agentpb.Task{Generation: c.Generation, Action: &agentpb.Task_InstallCertificate{InstallCertificate: &agentpb.InstallCertificateAction{
			Id: c.ID, Username: a.Username, Site: c.ID, ChainPem: []byte(c.CustomChainPEM), SealedPrivateKey: c.SealedKey,
			Mail: c.Mail, AllowUntrusted: c.AllowUntrusted}}}, nil
	case stepIssue:
		return cc.issueTask(ctx, c, a, now)
	case stepTakeover:
		// The record becomes what the site's automatic certificate is
		// (its names follow the site's from now on); the imported one
		// stays served until the order's certificate replaces it, and,
		// should ordering fail, until it expires.
		c.AddEvent(now, "acme-takeover", fmt.Sprintf("the installed certificate (serial %s, valid until %s) is renewed from the ACME server",
			st.Serial, st.NotAfter.Format(time.RFC3339)))
		c.Custom, c.CustomChainPEM, c.SealedKey, c.AllowUntrusted = false, "", nil, false
		c.Auto, c.AutoRenew = true, true
		c.Generation++
		return cc.issueTask(ctx, c, a, now)
	}
	return nil, nil
}

// waitFor leaves c waiting (no task) with why as its last error, looked at
// again on a zone change or after waitRecheck.
func waitFor(c *store.Certificate, why string, now time.Time) {
	st := &c.Status
	if st.ChainPEM == "" && st.State != store.CertFailed {
		st.State = store.CertPending
	}
	if st.LastError != why {
		c.AddEvent(now, "waiting", why)
	}
	st.LastError = why
	// Always, failures or not: a backoff's NextAttempt that passed
	// would make the certificate due on every sweep while it waits.
	st.NextAttempt = maxTime(st.NextAttempt, now.Add(waitRecheck))
}

// issueTask builds the order of c's names that can validate, or leaves c
// waiting when its site's own name cannot.
func (cc *certController) issueTask(ctx context.Context, c *store.Certificate, a *store.Account, now time.Time) (*agentpb.Task, error) {
	st := &c.Status
	i := a.SiteIndex(c.ID)
	switch {
	case a.Node == "" || c.Node != a.Node:
		waitFor(c, "waiting for the account to be placed on a node", now)
		return nil, nil
	case i < 0:
		waitFor(c, c.ID+" is not a site of the account", now)
		// The account's sync removes it if the site is gone for good.
		cc.ctl.Enqueue(certAccountKey(a.ID))
		return nil, nil
	case len(c.Domains) == 0 || c.Domains[0] != c.ID:
		waitFor(c, "the certificate's names do not start with its site "+c.ID, now)
		return nil, nil
	case a.AllSites()[i].Generation > a.AppliedGeneration:
		waitFor(c, "waiting for node "+c.Node+" to serve the site "+c.ID, now)
		return nil, nil
	}
	if cc.acme == nil {
		waitFor(c, "no ACME server is configured (--acme-directory): the site serves a self-signed certificate", now)
		return nil, nil
	}
	node, err := cc.st.CachedNode(ctx, c.Node)
	if err != nil {
		return nil, err
	}
	addr, _ := netip.ParseAddr(node.Address)
	names, skipped, zones, err := cc.orderable(ctx, c, addr)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(names, c.Domains[0]) {
		why := c.Domains[0] + ": does not resolve to " + c.Node + " on our nameservers"
		for _, s := range skipped {
			if s.name == c.Domains[0] {
				why = s.name + ": " + s.why
			}
		}
		waitFor(c, why, now)
		return nil, nil
	}
	if c.Generation <= st.ObservedGeneration && missingNames(c) && (st.RenewAt.IsZero() || now.Before(st.RenewAt)) &&
		!slices.ContainsFunc(names, func(n string) bool { return !slices.Contains(st.IssuedDomains, n) }) {
		// A re-order for missing names, none of which can validate
		// yet: the served certificate stays; looked at again on a zone
		// event or after waitRecheck.
		st.NextAttempt = maxTime(st.NextAttempt, now.Add(waitRecheck))
		return nil, nil
	}
	action := &agentpb.IssueCertificateAction{Id: c.ID, Username: a.Username, Site: c.ID, Domains: names}
	switch c.Challenge {
	case store.ChallengeDNS01:
		action.Challenge = agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01
		if action.Nameservers, err = cc.nameservers(ctx, zones); err != nil {
			return nil, err
		}
		if len(action.Nameservers) == 0 {
			waitFor(c, "no nameserver of ours serves the zone of "+c.Domains[0], now)
			return nil, nil
		}
	default:
		action.Challenge = agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01
	}
	mail, err := cc.st.MailDomainNames(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	action.Mail = c.Mail || mail[c.ID]
	if action.Acme, err = cc.acmeFor(ctx, c.Node); err != nil {
		return nil, err
	}
	if ok, at := cc.takeOrder(c.Node, now); !ok {
		// Over the node's order budget: deferred, not failed.
		st.NextAttempt = maxTime(st.NextAttempt, at)
		msg := "deferred: order rate of node " + c.Node
		if ev := st.Events; len(ev) == 0 || ev[len(ev)-1].Kind != "deferred" {
			c.AddEvent(now, "deferred", msg+" (next at "+at.Format(time.RFC3339)+")")
		}
		return nil, nil
	}
	kind := "ordering"
	if st.ChainPEM != "" && st.State != store.CertExpired {
		st.State = store.CertRenewing
		kind = "renewing"
	} else if st.ChainPEM == "" {
		st.State = store.CertPending
	}
	if st.Failures == 0 {
		st.LastError, st.NextAttempt = "", time.Time{}
	}
	c.AddEvent(now, kind, fmt.Sprintf("%s by %s from %s", strings.Join(names, ", "), c.Challenge, cc.acme.GetDirectoryUrl()))
	for _, s := range skipped {
		c.AddEvent(now, "skipped", "skipped "+s.name+": "+s.why)
	}
	return &agentpb.Task{Generation: c.Generation, Action: &agentpb.Task_IssueCertificate{IssueCertificate: action}}, nil
}

// takeOrder spends one of node's order tokens at now, or reports when the
// next one is there.
func (cc *certController) takeOrder(node string, now time.Time) (bool, time.Time) {
	cc.ordersMu.Lock()
	defer cc.ordersMu.Unlock()
	b := cc.orders[node]
	if b == nil {
		b = &orderBucket{}
		cc.orders[node] = b
	}
	return b.take(now, cc.orderBurst, cc.orderEvery)
}

// readACME reads the ACME configuration's files.
func (cc *certController) readACME(cfg ACMEConfig) error {
	cc.acme = &agentpb.AcmeServer{DirectoryUrl: cfg.DirectoryURL, Email: cfg.Email, EabKid: cfg.EABKID}
	if cfg.RootCAFile != "" {
		b, err := os.ReadFile(cfg.RootCAFile)
		if err != nil {
			return fmt.Errorf("--acme-root-ca: %w", err)
		}
		if _, err := pki.ParseCertsPEM(b); err != nil {
			return fmt.Errorf("--acme-root-ca %s: %w", cfg.RootCAFile, err)
		}
		cc.acme.RootCasPem = b
	}
	if (cfg.EABKID == "") != (cfg.EABHMACFile == "") {
		return errors.New("--acme-eab-kid and --acme-eab-hmac-file go together")
	}
	if cfg.EABHMACFile != "" {
		b, err := os.ReadFile(cfg.EABHMACFile)
		if err != nil {
			// The path only: the error never carries the file's content.
			return fmt.Errorf("--acme-eab-hmac-file %s: cannot read it", cfg.EABHMACFile)
		}
		cc.eabHMAC = []byte(strings.TrimSpace(string(b)))
		if len(cc.eabHMAC) == 0 {
			return fmt.Errorf("--acme-eab-hmac-file %s is empty", cfg.EABHMACFile)
		}
	}
	return nil
}

// acmeFor is the ACME server for node, its EAB key sealed to the node.
func (cc *certController) acmeFor(ctx context.Context, node string) (*agentpb.AcmeServer, error) {
	out := &agentpb.AcmeServer{DirectoryUrl: cc.acme.DirectoryUrl, Email: cc.acme.Email, RootCasPem: cc.acme.RootCasPem, EabKid: cc.acme.EabKid}
	if len(cc.eabHMAC) == 0 {
		return out, nil
	}
	ns, _, err := cc.st.GetNodeState(ctx, node)
	if err != nil {
		return nil, err
	}
	if len(ns.PublicKey) == 0 {
		return nil, fmt.Errorf("node %s has not connected yet: the ACME account key cannot be sealed to it", node)
	}
	if out.SealedEabHmac, err = pki.SealDER(ns.PublicKey, cc.eabHMAC, agentpb.AcmeEABSealContext(cc.acme.EabKid)); err != nil {
		return nil, fmt.Errorf("seal the ACME account key to node %s: %w", node, err)
	}
	return out, nil
}

// skippedName is a name left out of an order, and why.
type skippedName struct{ name, why string }

// orderable splits c's names into those that can validate now and those
// left out: by HTTP-01, a name must resolve, in our served zone data, to
// the node's address; by DNS-01, its zone must be the account's and
// served. zones are the zones that hold the names ordered.
func (cc *certController) orderable(ctx context.Context, c *store.Certificate, addr netip.Addr) (names []string, skipped []skippedName, zones []*store.Zone, err error) {
	seen := map[string]bool{}
	for _, d := range c.Domains {
		wildcard := strings.HasPrefix(d, "*.")
		base := strings.TrimPrefix(d, "*.")
		z, err := cc.zoneOf(ctx, base)
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case z == nil || z.Account != c.Account:
			skipped = append(skipped, skippedName{d, "not in a DNS zone of the account on our nameservers"})
			continue
		case !zoneApplied(z):
			skipped = append(skipped, skippedName{d, "zone " + z.Name + " is not served as written yet"})
			continue
		case wildcard && c.Challenge != store.ChallengeDNS01:
			skipped = append(skipped, skippedName{d, "a wildcard name needs the DNS01 challenge"})
			continue
		}
		if c.Challenge != store.ChallengeDNS01 {
			ok, err := cc.resolvesTo(ctx, base, addr)
			if err != nil {
				return nil, nil, nil, err
			}
			if !ok {
				skipped = append(skipped, skippedName{d, "does not resolve to " + c.Node + " on our nameservers"})
				continue
			}
		}
		names = append(names, d)
		if !seen[z.Name] {
			seen[z.Name] = true
			zones = append(zones, z)
		}
	}
	return names, skipped, zones, nil
}

// zoneOf returns the zone that holds name (its longest suffix we have), or
// nil.
func (cc *certController) zoneOf(ctx context.Context, name string) (*store.Zone, error) {
	for cand := name; strings.Contains(cand, "."); {
		z, _, err := cc.st.GetZone(ctx, cand)
		if err == nil && !z.Deleted {
			return z, nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		_, cand, _ = strings.Cut(cand, ".")
	}
	return nil, nil
}

// resolvesTo follows name's A/AAAA and CNAME records through our served
// zones and reports whether it reaches addr.
func (cc *certController) resolvesTo(ctx context.Context, name string, addr netip.Addr) (bool, error) {
	for range maxCNAMEHops {
		z, err := cc.zoneOf(ctx, name)
		if err != nil || z == nil || !zoneApplied(z) {
			return false, err
		}
		var cname string
		found := false
		for _, r := range z.Records {
			if !strings.EqualFold(strings.TrimSuffix(r.Name, "."), name) {
				continue
			}
			switch r.Type {
			case dnszone.TypeA, dnszone.TypeAAAA:
				found = true
				if ip, err := netip.ParseAddr(r.Content); err == nil && ip.Unmap() == addr.Unmap() {
					return true, nil
				}
			case dnszone.TypeCNAME:
				cname = strings.ToLower(strings.TrimSuffix(r.Content, "."))
			}
		}
		if found || cname == "" {
			return false, nil
		}
		name = cname
	}
	return false, nil
}

// nameservers lists host:port of every DNS server of ours that serves
// zones: each zone's primary first, then every other DNS server (each
// serves every zone as a secondary).
func (cc *certController) nameservers(ctx context.Context, zones []*store.Zone) ([]string, error) {
	v, err := cc.s.dnsViews.get(ctx, cc.st)
	if err != nil {
		return nil, err
	}
	var out []string
	add := func(a string) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, z := range zones {
		p, ok := v.servers[z.Node]
		if !ok {
			return nil, nil // its primary is not serving: nothing can validate
		}
		add(p.addr)
	}
	for _, n := range v.order {
		add(v.servers[n].addr)
	}
	return out, nil
}

// syncAccount converges the automatic certificates of one account: one per
// site (not alias) of an active account on a web node, named after the
// site, its www name, its aliases and, with mail, mail. and webmail.; a
// certificate of a site that is gone is removed from the node, then the
// record.
func (cc *certController) syncAccount(ctx context.Context, id string) error {
	a, _, err := cc.st.GetAccount(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	have := cc.index.ofAccount(id)
	if a == nil || a.Deleted {
		// syncCert deletes the records of an account that is gone.
		cc.ctl.Enqueue(have...)
		return nil
	}
	sites := map[string]store.Site{}
	for _, s := range a.AllSites() {
		if s.AliasOf == "" {
			sites[s.Domain] = s
		}
	}
	for _, cid := range have {
		if _, ok := sites[cid]; ok {
			continue
		}
		if err := cc.markDeleting(ctx, cid, "the site "+cid+" was removed"); err != nil {
			return err
		}
	}
	if a.Node == "" || (a.Status != store.AccountActive && a.Status != store.AccountSuspended) {
		return nil
	}
	node, err := cc.st.CachedNode(ctx, a.Node)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if !slices.Contains(node.Roles, "web") {
		return nil
	}
	mail, err := cc.st.MailDomainNames(ctx, a.ID)
	if err != nil {
		return err
	}
	for _, s := range a.AllSites() {
		if s.AliasOf != "" || s.Generation > a.AppliedGeneration {
			continue // served by its target's certificate; not on the node yet
		}
		want := autoDomains(a, s, mail[s.Domain])
		if err := cc.ensureAuto(ctx, a, s, want, mail[s.Domain]); err != nil {
			return err
		}
	}
	// A renewal or request recorded while the node applied a site change
	// waits for this: nothing else would look at it before waitRecheck.
	cc.ctl.Enqueue(cc.index.idleOf(id)...)
	return nil
}

// autoDomains are the names of a site's automatic certificate.
func autoDomains(a *store.Account, s store.Site, mail bool) []string {
	var out []string
	add := func(n string) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	withWWW := func(d string) {
		add(d)
		if !strings.HasPrefix(d, "www.") {
			add("www." + d)
		}
	}
	withWWW(s.Domain)
	for _, al := range a.AliasesOf(s.Domain) {
		withWWW(al)
	}
	if mail {
		add("mail." + s.Domain)
		add("webmail." + s.Domain)
	}
	return out
}

// ensureAuto creates a site's automatic certificate, or makes an existing
// one's names follow the site's.
func (cc *certController) ensureAuto(ctx context.Context, a *store.Account, s store.Site, want []string, mail bool) error {
	now := time.Now().UTC()
	// The index holds every certificate listed or seen: a site with none
	// there is created without a read first (the create's compare still
	// refuses one the index has not seen yet).
	indexed := cc.index.has(s.Domain)
	c, err := (*store.Certificate)(nil), store.ErrNotFound
	if indexed {
		c, err = cc.st.GetCertificate(ctx, s.Domain)
	}
	if errors.Is(err, store.ErrNotFound) {
		if s.NoAutoCertificate {
			return nil
		}
		nc := &store.Certificate{ID: s.Domain, Account: a.ID, Node: a.Node, Domains: want, Challenge: store.ChallengeHTTP01,
			AutoRenew: true, Auto: true, Mail: mail, Status: store.CertStatus{State: store.CertPending}}
		nc.AddEvent(now, "requested", "automatic certificate of the site "+s.Domain)
		err := cc.st.CreateCertificate(ctx, nc, store.NewAuditEvent("system", cc.s.id, "certificate.requested", s.Domain, "ok: automatic"))
		if err == nil {
			cc.index.put(nc.ID, entryOf(nc))
			cc.ctl.Enqueue(nc.ID)
			return nil
		}
		switch {
		case !errors.Is(err, store.ErrConflict):
			return err
		case indexed:
			return nil // created meanwhile
		}
		c, err = cc.st.GetCertificate(ctx, s.Domain)
		if errors.Is(err, store.ErrNotFound) {
			return nil // and gone again: its deletion queues the account
		}
	}
	if err != nil {
		return err
	}
	if c.Deleting && c.SiteRemoved && c.Auto && !s.NoAutoCertificate && c.Account == a.ID && c.Node == a.Node {
		// The site was removed and added again: cancel the removal
		// rather than let it take the new site's certificate off the
		// node. A certificate of another account (or node) is forgotten
		// once its removal is done, which queues this account again.
		return cc.undelete(ctx, c.ID, want, mail)
	}
	if c.Account != a.ID || !c.Auto || c.Deleting || c.Revoke || (slices.Equal(c.Domains, want) && c.Mail == mail) {
		return nil
	}
	_, err = cc.st.UpdateCertificate(ctx, c.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
		if !c.Auto || c.Deleting || (slices.Equal(c.Domains, want) && c.Mail == mail) {
			return nil, store.ErrUnchanged
		}
		c.AddEvent(now, "names", "the site's names changed to "+strings.Join(want, ", "))
		c.Domains, c.Mail = slices.Clone(want), mail
		c.Generation++
		return nil, nil
	}, store.NewAuditEvent("system", cc.s.id, "certificate.names", c.ID, "ok: "+strings.Join(want, ", ")))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// undelete cancels the deletion of an automatic certificate whose site is
// back.
func (cc *certController) undelete(ctx context.Context, id string, want []string, mail bool) error {
	_, err := cc.st.UpdateCertificate(ctx, id, func(c *store.Certificate) ([]*store.CertTask, error) {
		if !c.Deleting || !c.SiteRemoved {
			return nil, store.ErrUnchanged
		}
		c.Deleting, c.SiteRemoved = false, false
		c.Domains, c.Mail = slices.Clone(want), mail
		c.Generation++
		c.AddEvent(time.Now(), "restored", "the site "+id+" is back: deletion cancelled")
		return nil, nil
	}, store.NewAuditEvent("system", cc.s.id, "certificate.restored", id, "ok"))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err == nil {
		cc.ctl.Enqueue(id)
	}
	return err
}

// markDeleting asks for a certificate's removal from its node.
func (cc *certController) markDeleting(ctx context.Context, id, why string) error {
	_, err := cc.st.UpdateCertificate(ctx, id, func(c *store.Certificate) ([]*store.CertTask, error) {
		if c.Deleting {
			return nil, store.ErrUnchanged
		}
		c.Deleting, c.SiteRemoved = true, true
		c.Generation++
		c.AddEvent(time.Now(), "deleting", why)
		return nil, nil
	}, store.NewAuditEvent("system", cc.s.id, "certificate.deleting", id, "ok: "+why))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// certExpiry is the npanel_certificate_expiry_seconds collector: the
// seconds until each indexed certificate's NotAfter, computed when
// scraped. It reports nothing on a replica that does not lead.
type certExpiry struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	idx  *certIndex
}

func newCertExpiry() *certExpiry {
	return &certExpiry{desc: prometheus.NewDesc("npanel_certificate_expiry_seconds",
		"Seconds until the certificate served for a site expires (negative: expired), per certificate id; on the leader.",
		[]string{"certificate"}, nil)}
}

func (x *certExpiry) set(idx *certIndex) {
	x.mu.Lock()
	x.idx = idx
	x.mu.Unlock()
}

func (x *certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- x.desc }

func (x *certExpiry) Collect(ch chan<- prometheus.Metric) {
	x.mu.Lock()
	idx := x.idx
	x.mu.Unlock()
	if idx == nil {
		return
	}
	now := time.Now()
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	for id, e := range idx.m {
		if e.notAfter.IsZero() || e.state == store.CertRevoked {
			continue
		}
		ch <- prometheus.MustNewConstMetric(x.desc, prometheus.GaugeValue, e.notAfter.Sub(now).Seconds(), id)
	}
}
