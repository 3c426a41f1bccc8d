// Package mariadb starts a private MariaDB server for tests: a fresh data
// directory made by mariadb-install-db, mariadbd on its own unix socket with
// networking off, stopped by PID at cleanup (also when the test fails).
//
// It imports nothing of nPanel, so that tests of any package (the database
// actions included) can use it without an import cycle through
// internal/testenv, which pulls in the whole agent.
package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Binaries used (Debian 12 paths; the tests run there).
const (
	Mariadbd   = "/usr/sbin/mariadbd"
	InstallDB  = "/usr/bin/mariadb-install-db"
	Client     = "/usr/bin/mariadb"
	DumpBinary = "/usr/bin/mariadb-dump"
)

// Server is a running private mariadbd.
type Server struct {
	Dir     string // everything of this server lives here
	DataDir string
	Socket  string
	Config  string // the --defaults-file
	PID     int

	cmd *exec.Cmd
}

// Require fails under CI=true and skips elsewhere when MariaDB is missing
// or the test is not root (mariadbd must drop to the mysql user).
func Require(t testing.TB) {
	t.Helper()
	for _, p := range []string{Mariadbd, InstallDB} {
		if _, err := os.Stat(p); err != nil {
			if strings.EqualFold(os.Getenv("CI"), "true") {
				t.Fatalf("%s is not installed; make test installs it (see Makefile deps)", p)
			}
			t.Skipf("%s is not installed (run make deps)", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("MariaDB tests run as root (mariadbd drops to the mysql user)")
	}
}

// Layout places a server's directories; zero fields default to
// subdirectories of a fresh temporary directory.
type Layout struct {
	DataDir, RunDir, Socket, PIDFile, TmpDir string
}

// Start installs a data directory and starts mariadbd on it. root@localhost
// authenticates by unix_socket: the test process (root) logs in as root
// without a password, as the agent does on a fresh supervised node.
func Start(t testing.TB) *Server { return StartWith(t, Layout{}) }

// StartWith is Start with the directories of l (for tests that place the
// server where a platform profile under a prefix expects it). The parents
// of l's directories must be searchable by the mysql user.
func StartWith(t testing.TB, l Layout) *Server {
	t.Helper()
	Require(t)
	// Not t.TempDir: its parents are 0700 and mariadbd runs as mysql.
	dir, err := os.MkdirTemp("", "npt-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	def := func(v *string, rel string) {
		if *v == "" {
			*v = filepath.Join(dir, rel)
		}
	}
	def(&l.DataDir, "data")
	def(&l.RunDir, "run")
	def(&l.Socket, "run/mysqld.sock")
	def(&l.PIDFile, "run/mysqld.pid")
	def(&l.TmpDir, "tmp")
	s := &Server{Dir: dir, DataDir: l.DataDir, Socket: l.Socket, Config: filepath.Join(dir, "my.cnf")}
	cfg := fmt.Sprintf(`[mariadbd]
datadir=%s
socket=%s
pid-file=%s
tmpdir=%s
log-error=%s/error.log
user=mysql
skip-networking
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=2
`, l.DataDir, l.Socket, l.PIDFile, l.TmpDir, dir)
	if err := os.WriteFile(s.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	uid, gid := lookupUser(t, "mysql")
	for _, p := range []string{l.DataDir, l.RunDir, l.TmpDir} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, InstallDB, "--defaults-file="+s.Config,
		"--auth-root-authentication-method=socket", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}

	cmd := exec.Command(Mariadbd, "--defaults-file="+s.Config)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	logf, err := os.Create(filepath.Join(dir, "mariadbd.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start mariadbd: %v", err)
	}
	logf.Close()
	s.cmd, s.PID = cmd, cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(s.PID, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(s.PID, syscall.SIGKILL)
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := s.Root()
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		if err == nil {
			return s
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "mariadbd.out"))
			t.Fatalf("mariadbd exited: %s", tail(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "mariadbd.out"))
			t.Fatalf("mariadbd not ready after 30s: %v\n%s", err, tail(log))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Root opens a pool logged in as root over the socket (unix_socket
// authentication, no password).
func (s *Server) Root() (*sql.DB, error) {
	return s.Open("root", "", "")
}

// Open opens a pool as user over the socket, using database db ("" none).
func (s *Server) Open(user, password, db string) (*sql.DB, error) {
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.DBName = "unix", s.Socket, user, password, db
	c.AllowNativePasswords = true
	c.InterpolateParams = true
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// MustRoot is Root, failing the test on error, closed at cleanup.
func (s *Server) MustRoot(t testing.TB) *sql.DB {
	t.Helper()
	db, err := s.Root()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func lookupUser(t testing.TB, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return uid, gid
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// QueryAs logs in to the MariaDB listening on socket as user and runs
// stmts in database db ("" for none), returning the first error: what an
// account's application would do with its credentials.
func QueryAs(socket, user, password, db string, stmts ...string) error {
	conn, err := sql.Open("mysql", user+":"+password+"@unix("+socket+")/"+db+"?timeout=5s")
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.PingContext(ctx); err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	return nil
}
