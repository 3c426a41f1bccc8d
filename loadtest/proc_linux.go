package main

import "syscall"

// childProcAttr makes the kernel kill the server if the generator dies
// without cleaning up (SIGKILL, a crash): a load test must not leave a
// server with 100,000 accounts running.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
