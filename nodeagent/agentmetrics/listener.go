package agentmetrics

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ServerConfig configures the /metrics listener.
type ServerConfig struct {
	// Addr is host:port; port 0 picks one (Server.Addr tells which).
	Addr string
	// Handler serves /metrics (promhttp with the agent's registry).
	Handler http.Handler
	// Tokens are the scrape tokens admitted as Bearer.
	Tokens *TokenSet
	// Root is the cluster CA: a client certificate chaining to it is
	// admitted without a token.
	Root *x509.Certificate
	// GetCertificate returns the node's current certificate at each
	// handshake, so a renewed one is served without a restart.
	GetCertificate func() (*tls.Certificate, error)
	Logger         *slog.Logger
}

// Timeouts of the listener. A scrape of a large node writes a few
// megabytes; anything slower than these is a stuck or hostile client.
const (
	firstByteTimeout  = 10 * time.Second
	readHeaderTimeout = 10 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Server serves /metrics over plain HTTP and TLS on one port: the first
// byte a client sends tells them apart (0x16 opens a TLS handshake, no
// HTTP method starts with it). Prometheus configurations can then use
// either a scrape token over HTTP (or HTTPS) or a cluster client
// certificate, without a second port to open in firewalls.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	tls  *tls.Config
	log  *slog.Logger
	conn chan net.Conn
	done chan struct{}
	once sync.Once
}

// Listen binds cfg.Addr. Serve then serves until its context ends.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.Handler == nil || cfg.Tokens == nil || cfg.Root == nil || cfg.GetCertificate == nil {
		return nil, errors.New("metrics listener: handler, tokens, root and certificate are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cfg.Root)
	s := &Server{
		ln: ln,
		tls: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// A certificate that is presented must chain to the cluster
			// root or the handshake fails; without one, a token decides.
			ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs:  pool,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return cfg.GetCertificate()
			},
		},
		log:  log,
		conn: make(chan net.Conn),
		done: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", authorize(cfg.Tokens, cfg.Handler))
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then closes the listener and every
// connection.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve((*chanListener)(s)) }()
	go s.accept()
	select {
	case <-ctx.Done():
	case err := <-errc:
		s.close()
		return err
	}
	s.close()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	<-errc
	return nil
}

func (s *Server) close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.ln.Close()
	})
}

// accept hands each connection to a goroutine that reads its first byte:
// a client that sends nothing holds only its own goroutine, never the
// accept loop.
func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.close()
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-s.done:
				return
			}
			continue
		}
		go s.sniff(c)
	}
}

func (s *Server) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(firstByteTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var conn net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == 0x16 {
		// net/http does the handshake of a *tls.Conn itself, under its
		// own timeouts, and fills Request.TLS.
		conn = tls.Server(conn, s.tls)
	}
	select {
	case s.conn <- conn:
	case <-s.done:
		_ = c.Close()
	}
}

// peekedConn reads first what sniff peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is the listener http.Server sees: the sniffed connections.
type chanListener Server

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error { (*Server)(l).close(); return nil }

func (l *chanListener) Addr() net.Addr { return l.ln.Addr() }

// authorize admits a verified cluster client certificate or a Bearer
// scrape token; anything else gets 401 with a challenge.
func authorize(tokens *TokenSet, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		if tok, ok := bearer(r.Header.Get("Authorization")); ok && tokens.Admit(tok) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="npanel metrics"`)
		http.Error(w, "a scrape token (Authorization: Bearer) or a cluster client certificate is required", http.StatusUnauthorized)
	})
}

func bearer(h string) (string, bool) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}
