package account

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

// A process running as the user, one that ignores SIGTERM among them, is
// gone after killUserProcesses; others are left alone.
func TestKillUserProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run processes as another uid")
	}
	const uid = 64999 // no user: a uid nothing else runs as
	start := func(uid uint32, argv ...string) *exec.Cmd {
		c := exec.Command(argv[0], argv[1:]...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		// Reaped as soon as it exits, so a killed process leaves no
		// zombie that would still list as the user's.
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		t.Cleanup(func() { _ = c.Process.Kill(); <-done })
		return c
	}
	start(uid, "/usr/bin/sleep", "60")
	start(uid, "/usr/bin/perl", "-e", `$SIG{TERM}="IGNORE"; sleep 60`)
	other := start(uid-1, "/usr/bin/sleep", "60")

	if err := killUserProcesses(context.Background(), uid); err != nil {
		t.Fatal(err)
	}
	if pids, _ := processesOf(uid); len(pids) != 0 {
		t.Fatalf("left running: %v", pids)
	}
	if pids, _ := processesOf(uid - 1); !slices.Contains(pids, other.Process.Pid) {
		t.Fatal("a process of another user was signalled")
	}
	if killUserProcesses(context.Background(), 0) == nil {
		t.Fatal("uid 0 accepted")
	}
}
