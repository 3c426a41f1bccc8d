// Package pdns starts a PowerDNS authoritative server for a test: gsqlite3
// backend in a temp dir, DNS on a loopback address and a free port, the HTTP
// API on 127.0.0.1. Every instance can be both primary and secondary, so two
// of them on different loopback addresses replicate to each other.
//
// It does not import internal/testenv (which imports the agent and through
// it the DNS actions, whose tests use this package); RequireServer follows
// testenv.RequireDaemon's rule: fail under CI=true, skip elsewhere.
package pdns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/daemon"
)

// Fixed binaries and schema of the Debian 12 packages.
const (
	ServerBinary = "/usr/sbin/pdns_server"
	Sqlite3      = "/usr/bin/sqlite3"
	Schema       = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"
)

// Server is one running pdns_server.
type Server struct {
	IP      string // loopback address it answers DNS on
	DNSAddr string // IP:port
	APIAddr string // 127.0.0.1:port
	APIURL  string // http://APIAddr
	APIKey  string
	Dir     string // config, database, socket and log
	PID     int

	cmd  *exec.Cmd
	done chan struct{}
}

// Options tune a server.
type Options struct {
	// IP is the loopback address for DNS and outgoing NOTIFY/AXFR queries;
	// default 127.0.0.1. Use 127.0.0.2 for a second instance, so that the
	// primary can tell its secondary apart by address.
	IP string
	// Extra lines appended to pdns.conf.
	Extra []string
}

// RequireServer fails under CI=true and skips elsewhere when PowerDNS with
// the gsqlite3 backend or sqlite3 is not installed.
func RequireServer(t testing.TB) {
	t.Helper()
	for _, p := range []string{ServerBinary, Sqlite3, Schema} {
		if _, err := os.Stat(p); err != nil {
			if strings.EqualFold(os.Getenv("CI"), "true") {
				t.Fatalf("%s is not installed; make test installs it (see Makefile deps)", p)
			}
			t.Skipf("%s is not installed (run make deps)", p)
		}
	}
}

// Start runs a server and registers its stop with t.Cleanup; it returns once
// the API answers. A port taken between its pick and PowerDNS's bind (by
// another test binary) is picked again, twice at most.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	RequireServer(t)
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	for attempt := 1; ; attempt++ {
		s := &Server{IP: opts.IP, Dir: t.TempDir(), done: make(chan struct{})}
		err := s.start(opts)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		s.Stop()
		tail := s.LogTail()
		if attempt < 3 && strings.Contains(tail, "Address already in use") {
			continue
		}
		t.Fatalf("pdns on %s: %v\n%s", s.DNSAddr, err, tail)
	}
}

func (s *Server) start(opts Options) error {
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	s.APIKey = hex.EncodeToString(key)
	dnsPort, err := daemon.FreePort(opts.IP)
	if err != nil {
		return err
	}
	apiPort, err := daemon.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	s.DNSAddr = net.JoinHostPort(opts.IP, strconv.Itoa(dnsPort))
	s.APIAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))
	s.APIURL = "http://" + s.APIAddr

	db := filepath.Join(s.Dir, "pdns.sqlite3")
	if err := createDB(db); err != nil {
		return err
	}
	sock := filepath.Join(s.Dir, "run")
	if err := os.Mkdir(sock, 0o755); err != nil {
		return err
	}
	conf := []string{
		"launch=gsqlite3",
		"gsqlite3-database=" + db,
		"gsqlite3-dnssec=yes",
		"daemon=no",
		"guardian=no",
		"disable-syslog=yes",
		"log-timestamp=no",
		"loglevel=4",
		"socket-dir=" + sock,
		"local-address=" + opts.IP,
		"local-port=" + strconv.Itoa(dnsPort),
		"query-local-address=" + opts.IP,
		"api=yes",
		"api-key=" + s.APIKey,
		"webserver=yes",
		"webserver-address=127.0.0.1",
		"webserver-port=" + strconv.Itoa(apiPort),
		"webserver-allow-from=127.0.0.0/8",
		"primary=yes",
		"secondary=yes",
		"allow-notify-from=127.0.0.0/8",
		"allow-axfr-ips=",
		// As the agent configures it: NOTIFY only to ALSO-NOTIFY targets.
		"only-notify=",
		"security-poll-suffix=",
	}
	conf = append(conf, opts.Extra...)
	if err := os.WriteFile(filepath.Join(s.Dir, "pdns.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(s.Dir, "pdns.log"))
	if err != nil {
		return err
	}
	s.cmd = exec.Command(ServerBinary, "--config-dir="+s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start: %w", err)
	}
	s.PID = s.cmd.Process.Pid
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s.waitReady(10 * time.Second)
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	daemon.Stop(s.PID, s.done)
}

// LogTail returns the end of the server's log, for failure messages.
func (s *Server) LogTail() string {
	return daemon.LogTail(filepath.Join(s.Dir, "pdns.log"), 4000)
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("pdns_server exited during start")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL+"/api/v1/servers/localhost", nil)
		req.Header.Set("X-API-Key", s.APIKey)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("API answered %s", resp.Status)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("API not ready after %s: %v", limit, last)
}

func createDB(path string) error {
	schema, err := os.ReadFile(Schema)
	if err != nil {
		return err
	}
	cmd := exec.Command(Sqlite3, path)
	cmd.Stdin = bytes.NewReader(schema)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("create %s: %v: %s", path, err, out)
	}
	return nil
}
