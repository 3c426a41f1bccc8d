//go:build !linux

package services

import "syscall"

// sysProcAttr: only Linux can tie the daemon's life to the agent's.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// reap waits for the daemon, then kills what is left of its group. Without
// waitid(WNOWAIT) the group kill can only come after the reaping; the
// supervised mode this serves is for development on such systems.
func reap(in *instance) error {
	err := in.cmd.Wait()
	_ = syscall.Kill(-in.pid, syscall.SIGKILL)
	return err
}
