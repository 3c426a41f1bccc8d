package controlplane

import (
	"net"
	"net/netip"
	"sync"
)

// apiListener bounds the API's connections, so that a flood of them cannot
// take the file descriptors etcd and the agent gateway need: at most max
// open at once (further clients wait in the kernel's accept backlog, which
// costs this process nothing), and at most perIP from one client address
// (more are closed as soon as accepted). Trusted proxies carry many clients
// and are exempt from the per-IP bound.
type apiListener struct {
	net.Listener
	sem     chan struct{}
	done    chan struct{}
	close   sync.Once
	perIP   int
	trusted []netip.Prefix
	m       *metrics

	mu sync.Mutex
	n  map[netip.Addr]int
}

func newAPIListener(ln net.Listener, max, perIP int, trusted []netip.Prefix, m *metrics) *apiListener {
	return &apiListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{}),
		perIP: perIP, trusted: trusted, m: m, n: map[netip.Addr]int{}}
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
		ip := remoteIP(c)
		if !l.acquire(ip) {
			c.Close()
			<-l.sem
			l.m.apiConnsRefused.Inc()
			continue
		}
		l.m.apiConns.Inc()
		return &apiConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *apiListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func (l *apiListener) acquire(ip netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] >= l.perIP {
		return false
	}
	l.n[ip]++
	return true
}

func (l *apiListener) release(ip netip.Addr) {
	l.mu.Lock()
	if _, ok := l.n[ip]; ok {
		if l.n[ip]--; l.n[ip] <= 0 {
			delete(l.n, ip)
		}
	}
	l.mu.Unlock()
	l.m.apiConns.Dec()
	<-l.sem
}

type apiConn struct {
	net.Conn
	l    *apiListener
	ip   netip.Addr
	once sync.Once
}

func (c *apiConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
