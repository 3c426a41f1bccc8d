package chaos

import (
	"net"
	"sync"
)

// blackhole is a TCP proxy an agent reaches one replica's gateway through.
// Cut stalls it as a network partition does: connections stay open, bytes
// stop flowing both ways and new connections hang unanswered, until Heal.
type blackhole struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	heal  chan struct{} // closed on Heal
	conns map[net.Conn]bool
}

func newBlackhole(listen, target string) (*blackhole, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	b := &blackhole{ln: ln, target: target, heal: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(b.heal)
	go b.serve()
	return b, nil
}

func (b *blackhole) Addr() string { return b.ln.Addr().String() }

func (b *blackhole) Cut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.cut {
		b.cut, b.heal = true, make(chan struct{})
	}
}

func (b *blackhole) Heal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cut {
		b.cut = false
		close(b.heal)
	}
}

// gate blocks while the link is cut.
func (b *blackhole) gate() {
	b.mu.Lock()
	h := b.heal
	b.mu.Unlock()
	<-h
}

func (b *blackhole) track(c net.Conn, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.conns[c] = true
	} else {
		delete(b.conns, c)
	}
}

func (b *blackhole) Close() {
	b.ln.Close()
	b.Heal()
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		c.Close()
	}
}

func (b *blackhole) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.track(c, true)
		go func() {
			defer func() { c.Close(); b.track(c, false) }()
			b.gate()
			up, err := net.Dial("tcp", b.target)
			if err != nil {
				return
			}
			b.track(up, true)
			defer func() { up.Close(); b.track(up, false) }()
			done := make(chan struct{}, 2)
			go func() { b.pipe(up, c); done <- struct{}{} }()
			go func() { b.pipe(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}

// pipe copies src to dst, holding every chunk while the link is cut.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
