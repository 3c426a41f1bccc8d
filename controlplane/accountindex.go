package controlplane

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/scheduler"
)

// accountIndex is each replica's in-memory view of every account, kept
// current by an etcd watch (the informer pattern). It answers list queries
// with filters and cursors without ranging over etcd: at 100,000 accounts a
// filtered page is a walk of an ordered tree, not a scan of the keyspace.
// Rows hold only what filtering needs; a page's records are then read from
// etcd by id.
type accountIndex struct {
	s  *Server
	st *store.Store // on an etcd connection of its own; see sync

	mu   sync.RWMutex
	cond *sync.Cond
	rev  int64 // etcd revision the index reflects
	rows map[string]accountRow
	// counts by status, kept with the rows so that counting is free.
	counts map[store.AccountStatus]int
	// One ordered set per way of listing: by id, and by (field, id) for
	// the filters, so that a selective filter walks only its matches.
	byID     *btree.BTreeG[string]
	byStatus *btree.BTreeG[fieldKey]
	byNode   *btree.BTreeG[fieldKey]
	byOwner  *btree.BTreeG[fieldKey]
	// names holds one copy of each owner, node and status: 100,000 rows
	// share a few hundred, and every object the index holds is one more
	// for the garbage collector to mark.
	names map[string]string

	// hub serves accountEvents subscriptions from this same watch.
	hub *accountHub
}

// fieldKey orders a filter's index: by the field's value, then by id. Its
// strings are the row's own, so an entry allocates nothing.
type fieldKey struct{ field, id string }

func lessFieldKey(a, b fieldKey) bool {
	return a.field < b.field || a.field == b.field && a.id < b.id
}

type accountRow struct {
	ID, Username, Domain, Owner, Node string
	Status                            store.AccountStatus
}

func newAccountIndex(s *Server, st *store.Store) *accountIndex {
	less := func(a, b string) bool { return a < b }
	ix := &accountIndex{
		s:        s,
		st:       st,
		rows:     map[string]accountRow{},
		counts:   map[store.AccountStatus]int{},
		byID:     btree.NewG(32, less),
		byStatus: btree.NewG(32, lessFieldKey),
		byNode:   btree.NewG(32, lessFieldKey),
		byOwner:  btree.NewG(32, lessFieldKey),
		names:    map[string]string{},
		hub:      newAccountHub(),
	}
	ix.cond = sync.NewCond(ix.mu.RLocker())
	return ix
}

// name returns the index's copy of s (see names).
func (ix *accountIndex) name(s string) string {
	if n, ok := ix.names[s]; ok {
		return n
	}
	ix.names[s] = s
	return s
}

func (ix *accountIndex) put(a store.AccountHead) {
	ix.remove(a.ID)
	r := accountRow{ID: a.ID, Username: a.Username, Domain: a.Domain,
		Owner: ix.name(a.Owner), Node: ix.name(a.Node), Status: store.AccountStatus(ix.name(string(a.Status)))}
	ix.rows[a.ID] = r
	ix.counts[r.Status]++
	ix.byID.ReplaceOrInsert(r.ID)
	ix.byStatus.ReplaceOrInsert(fieldKey{string(r.Status), r.ID})
	ix.byNode.ReplaceOrInsert(fieldKey{r.Node, r.ID})
	ix.byOwner.ReplaceOrInsert(fieldKey{r.Owner, r.ID})
}

func (ix *accountIndex) remove(id string) {
	r, ok := ix.rows[id]
	if !ok {
		return
	}
	delete(ix.rows, id)
	ix.counts[r.Status]--
	ix.byID.Delete(id)
	ix.byStatus.Delete(fieldKey{string(r.Status), id})
	ix.byNode.Delete(fieldKey{r.Node, id})
	ix.byOwner.Delete(fieldKey{r.Owner, id})
}

// run loads the index and follows changes until ctx ends, reloading from
// scratch if the watch is lost (e.g. compacted past its revision).
// Progress notices move the index's revision forward while no account
// changes, so that sync does not stall on unrelated writes.
func (ix *accountIndex) run(ctx context.Context) {
	ix.st.Follow(ctx, store.KindAccounts, store.Follower{
		Replace:   ix.replace,
		Apply:     ix.apply,
		Relisting: func(err error) { ix.s.log.Warn("account index: reloading", "err", err) },
	}, store.WithProgress())
}

func (ix *accountIndex) replace(evs []store.Event, rev int64) {
	heads := make([]store.AccountHead, 0, len(evs))
	for _, ev := range evs {
		if h, err := store.DecodeAccountHeadEvent(ev); err == nil {
			heads = append(heads, h)
		}
	}
	ix.mu.Lock()
	ix.rows = map[string]accountRow{}
	ix.counts = map[store.AccountStatus]int{}
	ix.names = map[string]string{}
	ix.byID.Clear(false)
	ix.byStatus.Clear(false)
	ix.byNode.Clear(false)
	ix.byOwner.Clear(false)
	for _, h := range heads {
		ix.put(h)
	}
	ix.rev = rev
	ix.mu.Unlock()
	ix.cond.Broadcast()
	// Subscribers may have missed changes while the watch was down: give
	// them each record as it now stands (they drop what they have seen).
	if subs := ix.hub.subscribed(); len(subs) > 0 {
		byID := make(map[string][]byte, len(evs))
		for _, ev := range evs {
			byID[ev.Name] = ev.Value
		}
		for _, id := range subs {
			var a *store.Account
			if v, ok := byID[id]; ok {
				a, _ = store.DecodeAccount(v)
			}
			ix.hub.publish(id, a)
		}
	}
}

func (ix *accountIndex) apply(b store.WatchBatch) {
	// Decoded before taking the lock, which list queries wait on.
	heads := make([]store.AccountHead, len(b.Events))
	for i, ev := range b.Events {
		if !ev.Deleted {
			heads[i], _ = store.DecodeAccountHeadEvent(ev)
		}
	}
	ix.publish(b.Events)
	ix.mu.Lock()
	for i, ev := range b.Events {
		switch {
		case ev.Deleted:
			ix.remove(ev.Name)
		case heads[i].ID != "":
			ix.put(heads[i])
		}
	}
	ix.rev = max(ix.rev, b.Rev)
	ix.mu.Unlock()
	ix.cond.Broadcast()
}

// publish hands changed accounts to their subscribers, decoding the full
// record only for accounts someone follows.
func (ix *accountIndex) publish(events []store.Event) {
	for _, ev := range events {
		if !ix.hub.wants(ev.Name) {
			continue
		}
		if ev.Deleted {
			ix.hub.publish(ev.Name, nil)
			continue
		}
		if a, err := store.DecodeAccount(ev.Value); err == nil {
			ix.hub.publish(ev.Name, a)
		}
	}
}

// sync waits until the index reflects every write committed before the
// call, so that a client listing right after a mutation sees it. It costs
// one tiny etcd read for the current revision.
func (ix *accountIndex) sync(ctx context.Context) error {
	want, err := ix.s.store.CurrentRev(ctx)
	if err != nil {
		return err
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.rev >= want {
		return nil
	}
	// Progress notifications arrive on their own schedule; ask for one so
	// that an idle prefix catches up at once. The index has an etcd client
	// of its own because a progress request is answered on every watch of
	// the client's stream: on the shared client that is every node's
	// stream watches, thousands of them.
	go func() { _ = ix.st.RequestProgress(ctx) }()
	stop := context.AfterFunc(ctx, ix.cond.Broadcast)
	defer stop()
	timer := time.AfterFunc(2*time.Second, ix.cond.Broadcast)
	defer timer.Stop()
	deadline := time.Now().Add(2 * time.Second)
	for ix.rev < want {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil // serve slightly stale rather than fail the query
		}
		ix.cond.Wait()
	}
	return nil
}

// list returns up to limit account ids matching f after cursor, in id order.
func (ix *accountIndex) list(f store.AccountFilter, after string, limit int) ([]string, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	match := func(r accountRow) bool {
		return (f.Status == "" || r.Status == f.Status) &&
			(f.Node == "" || r.Node == f.Node) &&
			(f.Owner == "" || r.Owner == f.Owner) &&
			(f.ID == "" || r.ID == f.ID) &&
			(f.Search == "" || strings.Contains(r.Username, f.Search) || strings.Contains(r.Domain, f.Search))
	}
	var out []string
	more := false
	visit := func(id string) bool {
		r, ok := ix.rows[id]
		if !ok || id <= after || !match(r) {
			return true
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, id)
		return true
	}
	// Walk the most selective index the filter allows.
	walk := func(tree *btree.BTreeG[fieldKey], field string) {
		tree.AscendGreaterOrEqual(fieldKey{field, after}, func(k fieldKey) bool {
			return k.field == field && visit(k.id)
		})
	}
	switch {
	case f.ID != "":
		if r, ok := ix.rows[f.ID]; ok && match(r) && f.ID > after {
			out = append(out, f.ID)
		}
	case f.Owner != "":
		walk(ix.byOwner, f.Owner)
	case f.Node != "":
		walk(ix.byNode, f.Node)
	case f.Status != "":
		walk(ix.byStatus, string(f.Status))
	default:
		ix.byID.AscendGreaterOrEqual(after, func(id string) bool { return visit(id) })
	}
	return out, more
}

// ListAccounts implements graph.Cluster: a consistent page of accounts.
func (s *Server) ListAccounts(ctx context.Context, f store.AccountFilter, after string, limit int) ([]*store.Account, bool, error) {
	if err := s.accounts.sync(ctx); err != nil {
		return nil, false, err
	}
	ids, more := s.accounts.list(f, after, limit)
	accts, err := s.store.GetAccounts(ctx, ids)
	return accts, more, err
}

// ValidSelector implements graph.Cluster.
func (s *Server) ValidSelector(sel string) error {
	_, err := scheduler.ParseSelector(sel)
	return err
}

// AccountCounts implements graph.Cluster.
func (s *Server) AccountCounts(ctx context.Context) (map[store.AccountStatus]int, error) {
	if err := s.accounts.sync(ctx); err != nil {
		return nil, err
	}
	s.accounts.mu.RLock()
	defer s.accounts.mu.RUnlock()
	out := make(map[store.AccountStatus]int, len(s.accounts.counts))
	for k, v := range s.accounts.counts {
		out[k] = v
	}
	return out, nil
}
