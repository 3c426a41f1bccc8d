package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
)

// The mail controller (leader only) converges every account's mail domains
// and mailboxes as the database controller does its databases: the API
// writes specs with a generation (store.ChangeMail) and returns; the
// controller, keyed by account, records finished tasks into the statuses
// and writes the tasks that bring the node to the newest spec (syncMail),
// in one transaction per account (store.SyncMail). It also follows the
// accounts, since a suspension changes what every mail object's ensure
// carries, and publishes the DKIM records the node reports in the
// account's zone before their selectors sign.
const (
	mailSyncWorkers = 4
	mailResync      = 10 * time.Minute
)

// mailZones is how the controller changes a zone: the API's own path
// (zoneWriter), so that its records are served as a user's are.
type mailZones interface {
	ChangeZone(ctx context.Context, name string, audit store.AuditEvent, fn func(*store.Zone) error) (*store.Zone, error)
}

// syncAccountMail converges one account's mail. A DKIM record counts as
// published (its selector may sign) once the zone that holds it is served
// at a generation that has it; a record the zone refuses is not written,
// and the reason is shown on the mail domain.
func syncAccountMail(ctx context.Context, st *store.Store, zones mailZones, log *slog.Logger, account string) error {
	return st.SyncMail(ctx, account, func(set *store.MailSet, finished map[string]*store.Task, budget int) (*store.MailSync, error) {
		now := time.Now().UTC()
		done := map[string]bool{}
		refused := map[string]string{}
		for _, rec := range dkimRecords(set, now) {
			served, err := publishDKIM(ctx, zones, set.Account, rec)
			if err != nil {
				log.Warn("publish DKIM record", "account", set.Account.Username, "domain", rec.Domain, "selector", rec.Selector, "err", err)
				refused[rec.Domain] = "DKIM record of selector " + rec.Selector + " not published: " + err.Error()
				continue
			}
			done[rec.Domain+"/"+rec.Selector] = served || rec.Remove
		}
		// The refusals' status writes are reserved from the budget.
		for name, d := range set.Domains {
			if d.Status.DKIMReason != refused[name] {
				budget -= costStatus
			}
		}
		ch := syncMail(set, finished, done, max(budget, 0), now)
		noteDKIMRefusals(set, ch, refused)
		return ch, nil
	})
}

// noteDKIMRefusals records on each domain's status why its DKIM record
// could not be published ("" once it could); a status written by ch
// anyway carries it.
func noteDKIMRefusals(set *store.MailSet, ch *store.MailSync, refused map[string]string) {
	for name, d := range set.Domains {
		st, ok := ch.Domains[name]
		if !ok {
			if d.Status.DKIMReason == refused[name] || d.Status.TaskID != "" {
				continue
			}
			c := d.Status
			st = &c
			ch.Domains[name] = st
		}
		st.DKIMReason = refused[name]
	}
}

// dkimName is the owner name of a selector's TXT record.
func dkimName(selector, domain string) string { return selector + "._domainkey." + domain + "." }

// publishDKIM writes (or withdraws) a selector's TXT record in the zone
// that holds its domain, replacing any record at its name: running it
// again does nothing new, so a sync retried after a conflict may. served:
// the record was in the zone already and the zone's DNS server applied
// its current generation.
func publishDKIM(ctx context.Context, zones mailZones, a *store.Account, rec dkimRecord) (served bool, err error) {
	name := dkimName(rec.Selector, rec.Domain)
	action := "mail.publishDKIM"
	if rec.Remove {
		action = "mail.withdrawDKIM"
	}
	ev := store.NewAuditEvent("system", "mail-controller", action, a.Username+"/"+strings.TrimSuffix(name, "."), "ok")
	return setTXT(ctx, zones, a.ID, rec.Domain, name, rec.TXT, ev)
}

// setTXT replaces the TXT records at name in the zone of domain (the zone
// of that name, or of a parent) with one of content, or removes them when
// content is empty. The zone must belong to account: a parent zone of
// another tenant is never written. Content longer than 255 bytes is split
// into quoted strings (dnszone.ValidateRecord). served: nothing needed
// writing and the zone is served at its current generation.
func setTXT(ctx context.Context, zones mailZones, account, domain, name, content string, ev store.AuditEvent) (served bool, err error) {
	zoneName := domain
	for {
		_, err = zones.ChangeZone(ctx, zoneName, ev, func(z *store.Zone) error {
			if z.Account != account {
				return fmt.Errorf("zone %s, which holds %s, belongs to another account: %w", z.Name, domain, store.ErrConflict)
			}
			err := replaceTXT(z, name, content, nil)
			served = errors.Is(err, errTXTUnchanged) && z.AppliedGeneration >= z.Generation && z.Status != store.ZoneFailed
			return err
		})
		if errors.Is(err, errTXTUnchanged) {
			return served, nil // already as wanted: nothing written
		}
		if !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		_, parent, ok := strings.Cut(zoneName, ".")
		if !ok || !strings.Contains(parent, ".") {
			return false, fmt.Errorf("no zone holds %s: %w", domain, store.ErrNotFound)
		}
		zoneName = parent
	}
}

// errTXTUnchanged aborts a zone change that would write nothing new.
var errTXTUnchanged = errors.New("TXT record unchanged")

// replaceTXT is z.SetTXT as a new generation of the zone;
// errTXTUnchanged when the records are as wanted already.
func replaceTXT(z *store.Zone, name, content string, match func(string) bool) error {
	if z.Deleted {
		return fmt.Errorf("zone %s is being deleted: %w", z.Name, store.ErrConflict)
	}
	before := len(z.Records)
	changed, err := z.SetTXT(name, content, match)
	if err != nil {
		return err
	}
	if !changed {
		return errTXTUnchanged
	}
	// The checks the zone API runs on a change: the record count and the
	// set rules at the name (a CNAME there refuses the TXT record).
	if n := len(z.Records); n > before && n > dnszone.MaxZoneRecords {
		return fmt.Errorf("%w: zone %s holds at most %d records", store.ErrQuotaExceeded, z.Name, dnszone.MaxZoneRecords)
	}
	var at []dnszone.Record
	for _, r := range z.Records {
		if strings.EqualFold(r.Name, name) {
			at = append(at, dnszone.Record{Name: r.Name, Type: r.Type, Content: r.Content, TTL: r.TTL, Priority: r.Priority})
		}
	}
	if _, errs := dnszone.CheckRecords(z.Name+".", at, dnszone.DefaultTTL); len(errs) > 0 {
		return fmt.Errorf("zone %s refuses the TXT record at %s: %v: %w", z.Name, name, errs[0], store.ErrConflict)
	}
	z.Generation++
	z.Attempts = 0
	if z.Status == store.ZoneFailed {
		z.Status, z.Reason = store.ZonePending, ""
	}
	z.UpdatedAt = time.Now().UTC()
	return nil
}

// mailAccounts is the accounts with mail records (their mailseq key), so
// that the account and zone sources queue only those: an account without
// mail has nothing for a sync to do, and a sync costs a read of five ranges.
type mailAccounts struct {
	mu  sync.Mutex
	has map[string]bool
}

func (m *mailAccounts) contains(account string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.has[account]
}

// change queues an account whose mail specs changed, and one seen for the
// first time (listed at start, or its first mail record): the other
// sources skipped it until then. The controller's own writes are not news
// to it (its outcomes arrive as done notices).
func (m *mailAccounts) change(ev store.Event) (account string, queue, keep bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ev.Deleted {
		delete(m.has, ev.Name)
		return ev.Name, false, false
	}
	first := !m.has[ev.Name]
	m.has[ev.Name] = true
	return ev.Name, first || store.MailChangeOf(ev) == store.MailChangedSpec, true
}

// placementWatch queues an account with mail whose suspension or node
// changed, or that its node applied for the first time: every mail
// object's ensure carries the suspension, a new node must be given all of
// them, and nothing is sent before the node has the account (syncMail).
// The first event of an account queues it only when it is suspended (the
// mail sources list the rest). It remembers every account's placement, so
// that a change is seen for an account whose mail is listed later.
type placementWatch struct {
	mail *mailAccounts
	mu   sync.Mutex
	seen map[string]accountPlacement
}

type accountPlacement struct {
	suspended, applied bool
	node               string
}

func (w *placementWatch) handle(ev store.Event) (string, bool, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev.Deleted {
		delete(w.seen, ev.Name)
		return ev.Name, false, false
	}
	h, err := store.DecodeAccountHeadEvent(ev)
	if err != nil {
		return ev.Name, false, false
	}
	now := accountPlacement{suspended: h.Suspended, applied: h.AppliedGeneration > 0, node: h.Node}
	prev, ok := w.seen[ev.Name]
	w.seen[ev.Name] = now
	changed := ok && prev != now || !ok && h.Suspended
	return ev.Name, changed && w.mail.contains(ev.Name), false
}

// zoneServed queues the account with mail of a zone its DNS server serves
// as written: a DKIM record published there lets its selector sign.
func (m *mailAccounts) zoneServed(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		return "", false, false
	}
	z, err := store.DecodeZone(ev.Value)
	if err != nil || z.Account == "" || z.Deleted {
		return "", false, false
	}
	served := z.AppliedGeneration >= z.Generation && z.Status != store.ZoneFailed
	return z.Account, served && m.contains(z.Account), false
}

// newMailController builds the mail controller on the runtime.
func newMailController(s *Server) *controller.Controller {
	zones := &zoneWriter{store: s.store, views: &s.dnsViews, ctl: &s.zoneCtl}
	mail := &mailAccounts{has: map[string]bool{}}
	sw := &placementWatch{mail: mail, seen: map[string]accountPlacement{}}
	return controller.New(controller.Options{
		Name:  "mail",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindMailChanges, Handle: mail.change, Resync: mailResync},
			{Kind: store.KindMailOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindAccounts, Handle: sw.handle},
			{Kind: store.KindZones, Handle: mail.zoneServed},
		},
		Sync: func(ctx context.Context, account string) error {
			return syncAccountMail(ctx, s.store, zones, s.log, account)
		},
		Workers: mailSyncWorkers,
		Log:     s.log,
		Metrics: s.metrics.controllers,
	})
}
