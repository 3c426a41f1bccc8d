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

// syncAccountMail converges one account's mail.
func syncAccountMail(ctx context.Context, st *store.Store, zones mailZones, log *slog.Logger, account string) error {
	return st.SyncMail(ctx, account, func(set *store.MailSet, finished map[string]*store.Task, budget int) (*store.MailSync, error) {
		now := time.Now().UTC()
		done := map[string]bool{}
		for _, rec := range dkimRecords(set, now) {
			if err := publishDKIM(ctx, zones, set.Account, rec); err != nil {
				log.Warn("publish DKIM record", "account", set.Account.Username, "domain", rec.Domain, "selector", rec.Selector, "err", err)
				continue
			}
			done[rec.Domain+"/"+rec.Selector] = true
		}
		return syncMail(set, finished, done, budget, now), nil
	})
}

// dkimName is the owner name of a selector's TXT record.
func dkimName(selector, domain string) string { return selector + "._domainkey." + domain + "." }

// publishDKIM writes (or withdraws) a selector's TXT record in the zone
// that holds its domain, replacing any record at its name: running it
// again does nothing new, so a sync retried after a conflict may.
func publishDKIM(ctx context.Context, zones mailZones, a *store.Account, rec dkimRecord) error {
	name := dkimName(rec.Selector, rec.Domain)
	action := "mail.publishDKIM"
	if rec.Remove {
		action = "mail.withdrawDKIM"
	}
	ev := store.NewAuditEvent("system", "mail-controller", action, a.Username+"/"+strings.TrimSuffix(name, "."), "ok")
	return setTXT(ctx, zones, rec.Domain, name, rec.TXT, ev)
}

// setTXT replaces the TXT records at name in the zone of domain (the zone
// of that name, or of a parent the account holds) with one of content, or
// removes them when content is empty. Content longer than 255 bytes is
// split into quoted strings (dnszone.ValidateRecord).
func setTXT(ctx context.Context, zones mailZones, domain, name, content string, ev store.AuditEvent) error {
	zoneName := domain
	var err error
	for {
		_, err = zones.ChangeZone(ctx, zoneName, ev, func(z *store.Zone) error {
			return replaceTXT(z, name, content, nil)
		})
		if errors.Is(err, errTXTUnchanged) {
			return nil // already as wanted: nothing written
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		_, parent, ok := strings.Cut(zoneName, ".")
		if !ok || !strings.Contains(parent, ".") {
			return fmt.Errorf("no zone holds %s: %w", domain, store.ErrNotFound)
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
	changed, err := z.SetTXT(name, content, match)
	if err != nil {
		return err
	}
	if !changed {
		return errTXTUnchanged
	}
	z.Generation++
	z.Attempts = 0
	if z.Status == store.ZoneFailed {
		z.Status, z.Reason = store.ZonePending, ""
	}
	z.UpdatedAt = time.Now().UTC()
	return nil
}

// mailChange queues an account whose mail specs changed; the controller's
// own writes are not news to it (its outcomes arrive as done notices).
func mailChange(ev store.Event) (account string, queue, keep bool) {
	change := store.MailChangeOf(ev)
	return ev.Name, change == store.MailChangedSpec, change != ""
}

// placementWatch queues an account whose suspension or node changed:
// every mail object's ensure carries the suspension, and a new node must be
// given all of them. The first event of an account queues it only when it
// is suspended (the mail sources list the rest).
type placementWatch struct {
	mu   sync.Mutex
	seen map[string]accountPlacement
}

type accountPlacement struct {
	suspended bool
	node      string
}

func (w *placementWatch) handle(ev store.Event) (string, bool, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev.Deleted {
		delete(w.seen, ev.Name)
		return ev.Name, false, false
	}
	h, err := store.DecodeAccountHead(ev.Value)
	if err != nil {
		return ev.Name, false, false
	}
	now := accountPlacement{suspended: h.Suspended, node: h.Node}
	prev, ok := w.seen[ev.Name]
	w.seen[ev.Name] = now
	return ev.Name, ok && prev != now || !ok && h.Suspended, false
}

// newMailController builds the mail controller on the runtime.
func newMailController(s *Server) *controller.Controller {
	zones := &zoneWriter{store: s.store, views: &s.dnsViews, ctl: &s.zoneCtl}
	sw := &placementWatch{seen: map[string]accountPlacement{}}
	return controller.New(controller.Options{
		Name:  "mail",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindMailChanges, Handle: mailChange, Resync: mailResync},
			{Kind: store.KindMailOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindAccounts, Handle: sw.handle},
		},
		Sync: func(ctx context.Context, account string) error {
			return syncAccountMail(ctx, s.store, zones, s.log, account)
		},
		Workers: mailSyncWorkers,
		Log:     s.log,
		Metrics: s.metrics.controllers,
	})
}
