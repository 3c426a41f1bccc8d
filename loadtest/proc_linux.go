package main

import (
	"os"
	"syscall"
)

// childProcAttr makes the kernel kill the server if the generator dies
// without cleaning up (SIGKILL, a crash): a load test must not leave a
// server with 100,000 accounts running.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// preallocate reserves size bytes for f, so that a write within them
// changes no file size and its sync is data only, as for etcd's WAL.
func preallocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}

// datasync flushes f's data (fdatasync, as etcd's WAL does).
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
