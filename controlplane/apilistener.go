package controlplane

import (
	"net"
	"net/netip"
	"sync"

	"github.com/npanel/npanel/controlplane/clientip"
)

// apiListener bounds the API's connections, so that a flood of them cannot
// take the file descriptors etcd and the agent gateway need: at most max
// open at once (further clients wait in the kernel's accept backlog, which
// costs this process nothing), and at most perIP from one client (more are
// closed as soon as accepted), counted by clientip.Key like every per-client
// limit, so an IPv6 client's whole /64 shares one budget. Trusted proxies
// carry many clients and are exempt from the per-IP bound.
type apiListener struct {
	net.Listener
	sem     chan struct{}
	done    chan struct{}
	close   sync.Once
	perIP   *clientip.Limiter
	trusted []netip.Prefix
	m       *metrics
}

func newAPIListener(ln net.Listener, max, perIP int, trusted []netip.Prefix, m *metrics) *apiListener {
	return &apiListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{}),
		perIP: clientip.NewLimiter(perIP), trusted: trusted, m: m}
}

func (l *apiListener) Accept() (net.Conn, error) {
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.sem
			return nil, err
		}
		key := l.key(c)
		if !l.perIP.Acquire(key) {
			c.Close()
			<-l.sem
			l.m.apiConnsRefused.Inc()
			continue
		}
		l.m.apiConns.Inc()
		return &apiConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *apiListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// key is the per-IP key c counts under; "" (not counted) for a trusted
// proxy or a peer without an IP.
func (l *apiListener) key(c net.Conn) string {
	ip, ok := clientip.Peer(c.RemoteAddr().String())
	if !ok {
		return ""
	}
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return ""
		}
	}
	return clientip.Key(ip)
}

func (l *apiListener) release(key string) {
	l.perIP.Release(key)
	l.m.apiConns.Dec()
	<-l.sem
}

type apiConn struct {
	net.Conn
	l    *apiListener
	key  string
	once sync.Once
}

func (c *apiConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}
