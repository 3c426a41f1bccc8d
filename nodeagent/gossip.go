package nodeagent

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossip is the agent's member of the cluster's memberlist pool: the fast
// liveness hint next to the authoritative etcd lease. It is optional
// (Config.GossipListen).
//
// The pool can only be joined after the first Welcome, which carries the
// pool's key, but the Hello that precedes it must already name the gossip
// address. So the listeners are bound first (resolving a port of 0 to a real
// one) and handed to memberlist once the key is known.
type gossip struct {
	log  *slog.Logger
	node string
	host string
	port int // 0 until bind resolved it

	mu     sync.Mutex
	nt     *memberlist.NetTransport // bound listeners not yet owned by ml
	ml     *memberlist.Memberlist
	key    []byte
	closed bool
	joins  sync.WaitGroup
}

func newGossip(listen, node string, log *slog.Logger) (*gossip, error) {
	host, port, err := splitGossipListen(listen)
	if err != nil {
		return nil, err
	}
	return &gossip{log: log.With("component", "gossip"), node: node, host: host, port: port}, nil
}

// splitGossipListen checks that listen is ip:port with a concrete IP: that
// address is both where memberlist binds and what the other members are told
// to dial, so a wildcard or a name would give them nothing usable.
func splitGossipListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("gossip listen address %q: %w", listen, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return "", 0, fmt.Errorf("gossip listen address %q: host must be the IP other nodes reach this node on", listen)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("gossip listen address %q: bad port: %w", listen, err)
	}
	return host, int(port), nil
}

// bind opens the gossip listeners and fixes the port for the agent's
// lifetime, so that the address in every Hello stays true even when the pool
// is recreated for a new key.
func (g *gossip) bind() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{g.host},
		BindPort:  g.port,
		Logger:    g.stdLogger(),
	})
	if err != nil {
		return fmt.Errorf("gossip: bind %s: %w", g.address(), err)
	}
	g.nt = nt
	g.port = nt.GetAutoBindPort()
	return nil
}

// address is the host:port announced in Hello.
func (g *gossip) address() string {
	return net.JoinHostPort(g.host, strconv.Itoa(g.port))
}

// welcome creates the pool on the first Welcome, recreates it when the key
// changed, and (re)joins the seeds every time: a node that was partitioned
// away may have been dropped from the pool and must announce itself again.
func (g *gossip) welcome(key []byte, seeds []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	if g.ml != nil && !bytes.Equal(g.key, key) {
		g.log.Info("gossip key changed; recreating the pool member")
		// No Leave here either: the new member rejoins under the same name
		// within moments and refutes any suspicion.
		_ = g.ml.Shutdown()
		g.ml = nil
	}
	if g.ml == nil {
		if err := g.createLocked(key); err != nil {
			g.log.Error("gossip: start member", "err", err)
			return
		}
	}

	self := g.address()
	var peers []string
	for _, s := range seeds {
		if s != "" && s != self {
			peers = append(peers, s)
		}
	}
	if len(peers) == 0 {
		return
	}
	ml := g.ml
	g.joins.Go(func() {
		// Best effort: any member reached is enough, and the gateway hands
		// out fresh seeds on every reconnect.
		n, err := ml.Join(peers)
		if err != nil {
			g.log.Warn("gossip: join seeds", "seeds", peers, "reached", n, "err", err)
			return
		}
		g.log.Debug("gossip: joined", "seeds", peers, "reached", n)
	})
}

func (g *gossip) createLocked(key []byte) error {
	switch len(key) {
	case 0:
		g.log.Warn("gossip: the server sent no key; gossip runs unencrypted")
	case 16, 24, 32:
	default:
		return fmt.Errorf("gossip key has %d bytes, want 16, 24 or 32", len(key))
	}
	if g.nt == nil {
		// The previous member owned (and shut down) the listeners.
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{g.host},
			BindPort:  g.port,
			Logger:    g.stdLogger(),
		})
		if err != nil {
			return fmt.Errorf("bind %s: %w", g.address(), err)
		}
		g.nt = nt
	}

	cfg := memberlist.DefaultLANConfig()
	cfg.Name = g.node
	cfg.BindAddr, cfg.BindPort = g.host, g.port
	cfg.AdvertiseAddr, cfg.AdvertisePort = g.host, g.port
	cfg.Transport = g.nt
	cfg.Logger = g.stdLogger()
	// Tuned so that a dead node turns suspect within about a second and dead
	// within a few: the pool is the fast hint that lets the control plane
	// look at a node before its lease expires.
	cfg.ProbeInterval = 500 * time.Millisecond
	cfg.ProbeTimeout = 250 * time.Millisecond
	cfg.SuspicionMult = 2
	cfg.GossipInterval = 100 * time.Millisecond
	// The LAN default of 10 s bounds each seed join; a shorter bound keeps
	// shutdown (which waits for joins) prompt.
	cfg.TCPTimeout = 2 * time.Second
	if len(key) > 0 {
		cfg.SecretKey = bytes.Clone(key)
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		_ = g.nt.Shutdown()
		g.nt = nil
		return fmt.Errorf("create member: %w", err)
	}
	// From here on the member owns the listeners and closes them on Shutdown.
	g.nt = nil
	g.ml, g.key = ml, bytes.Clone(key)
	g.log.Info("gossip member started", "address", g.address())
	return nil
}

// members returns the number of live members this node sees, 0 without a
// pool.
func (g *gossip) members() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ml == nil {
		return 0
	}
	return g.ml.NumMembers()
}

// shutdown stops gossip WITHOUT a graceful Leave. A Leave would tell the pool
// that this node departed on purpose, which the control plane could read as
// "nothing to worry about"; a stopping agent stops serving tasks just like a
// crashed one, so it must look exactly like a dead one and go through
// suspect → dead while the lease decides.
func (g *gossip) shutdown() {
	g.mu.Lock()
	g.closed = true
	ml, nt := g.ml, g.nt
	g.ml, g.nt = nil, nil
	g.mu.Unlock()
	if ml != nil {
		_ = ml.Shutdown()
	}
	if nt != nil {
		_ = nt.Shutdown()
	}
	g.joins.Wait()
}

// stdLogger routes memberlist's *log.Logger output into slog. memberlist puts
// the level into the message ("[WARN] memberlist: ..."), so the writer maps
// it back to a slog level instead of logging everything at one level (which
// slog.NewLogLogger would do): its DEBUG lines are too chatty for Info and
// its ERR lines too important for Debug.
func (g *gossip) stdLogger() *log.Logger {
	return log.New(memberlistLogWriter{log: g.log}, "", 0)
}

type memberlistLogWriter struct{ log *slog.Logger }

func (w memberlistLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{
		"[DEBUG]": slog.LevelDebug,
		"[INFO]":  slog.LevelInfo,
		"[WARN]":  slog.LevelWarn,
		"[ERR]":   slog.LevelError,
		"[ERROR]": slog.LevelError,
	} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			level, msg = l, strings.TrimSpace(rest)
			break
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}
