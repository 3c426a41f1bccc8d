package controlplane

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossip is the server's seat in the memberlist pool that agents and replicas
// share. It is the fast liveness hint: a killed agent is declared dead by its
// peers within a couple of seconds, long before its etcd lease runs out.
type gossip struct {
	list *memberlist.Memberlist

	mu    sync.Mutex
	state map[string]memberState
}

type memberState struct {
	alive bool
	since time.Time
}

func startGossip(listen, name string, key []byte, log *slog.Logger) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("gossip listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip listen %q: bad port", listen)
	}
	g := &gossip{state: map[string]memberState{}}
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.BindAddr = host
	c.BindPort = port
	c.AdvertisePort = port
	// Fast failure detection for a hint: a probe every 500 ms, a dead
	// verdict after about two rounds of suspicion.
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.SuspicionMult = 2
	c.GossipInterval = 100 * time.Millisecond
	c.SecretKey = key
	// A restarted agent rejoins under its old name from a new port; without
	// a reclaim time memberlist refuses it as a conflicting address.
	c.DeadNodeReclaimTime = time.Second
	c.Events = g
	c.Logger = slog.NewLogLogger(log.With("component", "gossip").Handler(), slog.LevelDebug)
	list, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", listen, err)
	}
	g.list = list
	return g, nil
}

func (g *gossip) addr() string {
	n := g.list.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// join is best effort: gossip only hints, the lease decides.
func (g *gossip) join(seeds []string) {
	if len(seeds) > 0 {
		_, _ = g.list.Join(seeds)
	}
}

// deadSince reports whether gossip has seen name and now considers it dead
// or gone, and since when. A member never seen (gossip off on that agent) is
// not dead.
func (g *gossip) deadSince(name string) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.state[name]
	return st.since, ok && !st.alive
}

func (g *gossip) set(name string, alive bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.state[name]; ok && st.alive == alive {
		return
	}
	g.state[name] = memberState{alive: alive, since: time.Now()}
}

// NotifyJoin, NotifyLeave and NotifyUpdate implement memberlist.EventDelegate.
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.set(n.Name, true) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.set(n.Name, false) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.set(n.Name, true) }

func (g *gossip) shutdown() { _ = g.list.Shutdown() }
