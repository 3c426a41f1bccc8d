// Package testenv starts real nPanel servers, agents and their dependencies
// in-process for tests: real embedded etcd, real mTLS, real gRPC streams, on
// loopback ports. Everything it starts is stopped by t.Cleanup, also when
// the test fails. Server.StartIsolatedAgent runs an agent as a process with
// a user database of its own, for tests that need two nodes holding the
// same account user (a migration).
package testenv

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/daemon"
)

// Logger returns the logger test components write to: silent by default,
// NPANEL_TEST_LOG=debug|info|warn to see it on stderr.
func Logger() *slog.Logger {
	lvl := os.Getenv("NPANEL_TEST_LOG")
	if lvl == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(lvl))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// FreeAddr returns a loopback address whose port is free for TCP and UDP
// and was not handed out before in this process (daemon.FreePort). Tests
// that restart a server need fixed ports, so port 0 will not do.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := daemon.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// WaitFor polls cond every 20 ms until it holds or timeout passes, then
// fails the test with msg. It replaces sleeps: the test waits exactly as long
// as the system needs, up to a bound.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Context returns a context cancelled at cleanup.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// RequireDaemon fails in CI and skips elsewhere when a daemon binary the test
// needs is missing: in CI a missing daemon is a broken setup, not a reason to
// pass.
func RequireDaemon(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatalf("%s is not installed; make test installs it (see Makefile deps)", path)
	}
	t.Skipf("%s is not installed (run make deps)", path)
}
