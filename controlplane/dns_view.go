package controlplane

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// dnsServiceName is the name the agent's DNS module reports its daemon by.
const dnsServiceName = "pdns"

// dnsViewMaxAge bounds how stale the controller's list of DNS servers may
// be; a zone sent to a server that just went away is caught by its task.
const dnsViewMaxAge = 2 * time.Second

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

// runsDNS reports whether node's last services report has its DNS server
// running (from the mirror: no etcd read for a node that runs none).
func runsDNS(ctx context.Context, st *store.Store, node string) bool {
	rep, err := st.CachedServices(ctx, node)
	if err != nil {
		return false
	}
	for _, svc := range rep.Services {
		if svc.Name == dnsServiceName && svc.State == "running" && len(svc.Listen) > 0 {
			return true
		}
	}
	return false
}

// dnsViewCache is the replica's dnsView, shared by the zone controller and
// the API (zoneWriter).
type dnsViewCache struct {
	mu sync.Mutex
	v  *dnsView
	at time.Time
}

func (vc *dnsViewCache) get(ctx context.Context, st *store.Store) (*dnsView, error) {
	return vc.read(ctx, st, dnsViewMaxAge)
}

// fresh is get without the cache.
func (vc *dnsViewCache) fresh(ctx context.Context, st *store.Store) (*dnsView, error) {
	return vc.read(ctx, st, 0)
}

func (vc *dnsViewCache) read(ctx context.Context, st *store.Store, maxAge time.Duration) (*dnsView, error) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.v != nil && time.Since(vc.at) < maxAge {
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
