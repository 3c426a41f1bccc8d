// Package daemon holds what the test helpers that run one daemon each
// (pdns, pebble) share. It imports nothing of the project, so that the
// agent's own tests may use those helpers.
package daemon

import (
	"os"
	"syscall"
	"time"
)

// Stop ends the process pid (SIGTERM, then SIGKILL after 5 s) and waits
// until done is closed (its waiter saw it exit).
func Stop(pid int, done <-chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
	}
}

// LogTail returns the last n bytes of the log at path, for failure
// messages.
func LogTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
