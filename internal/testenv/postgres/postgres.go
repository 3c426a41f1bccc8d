// Package postgres starts a private PostgreSQL 15 cluster for tests: initdb
// into a fresh directory, postgres on its own unix socket directory with
// TCP off, both run as the postgres OS user (initdb refuses root), stopped
// by PID at cleanup (also when the test fails).
//
// The bootstrap superuser is AdminUser with a random password and
// scram-sha-256 on the socket, the way the database actions log in; like
// package mariadb it imports nothing of nPanel.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Binaries used (Debian 12 paths).
const (
	BinDir   = "/usr/lib/postgresql/15/bin"
	Postgres = BinDir + "/postgres"
	Initdb   = BinDir + "/initdb"
	PgDump   = BinDir + "/pg_dump"
	Psql     = BinDir + "/psql"
	// Port only names the socket file (.s.PGSQL.<port>): TCP is off.
	Port = 5432
	// AdminUser is the bootstrap superuser.
	AdminUser = "npanel"
	// OSUser runs the cluster.
	OSUser = "postgres"
)

// Server is a running private PostgreSQL cluster.
type Server struct {
	Dir           string
	DataDir       string
	SocketDir     string
	AdminPassword string
	PID           int
}

// Require fails under CI=true and skips elsewhere when PostgreSQL is missing
// or the test is not root (it switches to the postgres user).
func Require(t testing.TB) {
	t.Helper()
	for _, p := range []string{Postgres, Initdb} {
		if _, err := os.Stat(p); err != nil {
			if strings.EqualFold(os.Getenv("CI"), "true") {
				t.Fatalf("%s is not installed; make test installs it (see Makefile deps)", p)
			}
			t.Skipf("%s is not installed (run make deps)", p)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("PostgreSQL tests run as root (the cluster runs as the postgres user)")
	}
}

// Layout places a cluster's directories; zero fields default to
// subdirectories of a fresh temporary directory.
type Layout struct {
	DataDir, SocketDir string
}

// Start creates and starts a cluster.
func Start(t testing.TB) *Server { return StartWith(t, Layout{}) }

// StartWith is Start with the directories of l, whose parents must be
// searchable by the postgres user and which must not exist yet.
func StartWith(t testing.TB, l Layout) *Server {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "npt-postgres-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	s := &Server{
		Dir:           dir,
		DataDir:       l.DataDir,
		SocketDir:     l.SocketDir,
		AdminPassword: hex.EncodeToString(rnd[:]),
	}
	if s.DataDir == "" {
		s.DataDir = filepath.Join(dir, "data")
	}
	if s.SocketDir == "" {
		s.SocketDir = filepath.Join(dir, "run")
	}
	cred := credential(t)
	for _, d := range []string{s.DataDir, s.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	pwfile := filepath.Join(s.SocketDir, ".pwfile")
	if err := os.WriteFile(pwfile, []byte(s.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	initdb := exec.CommandContext(ctx, Initdb, "-D", s.DataDir, "-U", AdminUser, "--pwfile="+pwfile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	_ = os.Remove(pwfile)

	cmd := exec.Command(Postgres, "-D", s.DataDir, "-k", s.SocketDir, "-p", strconv.Itoa(Port),
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "shared_buffers=32MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "postgres.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start postgres: %v", err)
	}
	logf.Close()
	s.PID = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(s.PID, syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(s.PID, syscall.SIGKILL)
			<-exited
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := s.Connect(ctx, "postgres")
		if err == nil {
			c.Close(ctx)
			return s
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.out"))
			t.Fatalf("postgres exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.out"))
			t.Fatalf("postgres not ready after 30s: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ConnString is a keyword/value connection string for user on database db
// over the socket.
func (s *Server) ConnString(user, password, db string) string {
	q := url.Values{}
	q.Set("host", s.SocketDir)
	q.Set("port", strconv.Itoa(Port))
	q.Set("user", user)
	q.Set("password", password)
	q.Set("dbname", db)
	q.Set("sslmode", "disable")
	return "postgres:///?" + q.Encode()
}

// Connect opens one admin connection to database db.
func (s *Server) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, s.ConnString(AdminUser, s.AdminPassword, db))
}

// MustConnect is Connect, failing the test on error, closed at cleanup.
func (s *Server) MustConnect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	c, err := s.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Pgpass is the admin credential as a pgpass(5) line.
func (s *Server) Pgpass() string {
	return fmt.Sprintf("*:*:*:%s:%s\n", AdminUser, s.AdminPassword)
}

func credential(t testing.TB) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(OSUser)
	if err != nil {
		t.Fatalf("user %s: %v", OSUser, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}
