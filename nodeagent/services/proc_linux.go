package services

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts a daemon in its own process group, so a Ctrl-C or
// signal aimed at the agent's group does not reach it and we can kill its
// workers as a group, and has the kernel SIGKILL it if the agent dies, so
// a crashed agent does not leave daemons holding the ports its successor
// needs.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime does not end threads except when a goroutine
// exits while locked to one with runtime.LockOSThread, which this package
// never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// reap waits for the daemon to exit, kills what is left of its process
// group (workers whose master crashed would otherwise keep the ports) and
// collects its exit status.
//
// The group is killed between the exit and the reaping, which WNOWAIT makes
// possible: until the leader is reaped its PID, and so the group ID, cannot
// be reused by an unrelated process, so the kill cannot hit a stranger.
func reap(in *instance) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, in.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	_ = syscall.Kill(-in.pid, syscall.SIGKILL)
	return in.cmd.Wait()
}
