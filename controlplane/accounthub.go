package controlplane

import (
	"sync"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
)

// accountHub fans the account index's one watch out to the API's
// accountEvents subscribers. Nothing a subscriber does reaches etcd: a
// subscription is a map entry and a buffered channel, delivery never
// blocks the watch (a full buffer drops that subscriber), and the caps
// bound how many one user or one connection may hold.
type accountHub struct {
	mu      sync.Mutex
	byID    map[string]map[*accountSub]struct{}
	perUser map[string]int
	perConn map[string]int
	// limits, from the graph package's caps; tests may lower them.
	maxPerUser, maxPerConn, buffer int
}

type accountSub struct {
	hub        *accountHub
	id         string
	user, conn string
	ch         chan *store.Account
	closed     bool  // under hub.mu
	err        error // set before ch is closed
}

func newAccountHub() *accountHub {
	return &accountHub{
		byID: map[string]map[*accountSub]struct{}{}, perUser: map[string]int{}, perConn: map[string]int{},
		maxPerUser: graph.MaxSubscriptionsPerUser, maxPerConn: graph.MaxSubscriptionsPerConnection,
		buffer: graph.SubscriberBuffer,
	}
}

func (h *accountHub) subscribe(id, user, conn string) (*accountSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// conn is the websocket's id (graph's connID, one per socket, not the
	// client's address, which all its sockets share); a request without
	// one is held to the user's cap alone, rather than all such requests
	// sharing one connection's.
	if h.perUser[user] >= h.maxPerUser || conn != "" && h.perConn[conn] >= h.maxPerConn {
		return nil, graph.ErrTooManySubscriptions
	}
	s := &accountSub{hub: h, id: id, user: user, conn: conn, ch: make(chan *store.Account, h.buffer)}
	if h.byID[id] == nil {
		h.byID[id] = map[*accountSub]struct{}{}
	}
	h.byID[id][s] = struct{}{}
	h.perUser[user]++
	if conn != "" {
		h.perConn[conn]++
	}
	return s, nil
}

// end removes s and closes its channel, once; h.mu is held.
func (h *accountHub) end(s *accountSub, err error) {
	if s.closed {
		return
	}
	s.closed, s.err = true, err
	close(s.ch)
	delete(h.byID[s.id], s)
	if len(h.byID[s.id]) == 0 {
		delete(h.byID, s.id)
	}
	if h.perUser[s.user]--; h.perUser[s.user] <= 0 {
		delete(h.perUser, s.user)
	}
	if s.conn != "" {
		if h.perConn[s.conn]--; h.perConn[s.conn] <= 0 {
			delete(h.perConn, s.conn)
		}
	}
}

// wants reports whether anyone follows account id, so that the watch
// decodes full records only for those.
func (h *accountHub) wants(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID[id]) > 0
}

// subscribed lists the followed accounts.
func (h *accountHub) subscribed() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.byID))
	for id := range h.byID {
		ids = append(ids, id)
	}
	return ids
}

// publish hands a's new record (nil: deleted) to id's subscribers without
// waiting: one whose buffer is full is dropped.
func (h *accountHub) publish(id string, a *store.Account) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.byID[id] {
		select {
		case s.ch <- a:
		default:
			h.end(s, graph.ErrSlowSubscriber)
		}
	}
}

// count is the number of live subscriptions (tests, benchmarks).
func (h *accountHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, subs := range h.byID {
		n += len(subs)
	}
	return n
}

func (s *accountSub) Updates() <-chan *store.Account { return s.ch }

func (s *accountSub) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

func (s *accountSub) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.end(s, nil)
}

// FollowAccount implements graph.Cluster.
func (s *Server) FollowAccount(id, user, conn string) (graph.AccountFeed, error) {
	sub, err := s.accounts.hub.subscribe(id, user, conn)
	if err != nil {
		return nil, err
	}
	return sub, nil
}
