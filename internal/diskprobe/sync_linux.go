package diskprobe

import (
	"os"
	"syscall"
)

// preallocate reserves size bytes for f, so that a write within them
// changes no file size and its sync is data only, as for etcd's WAL.
func preallocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}

// datasync flushes f's data (fdatasync, as etcd's WAL does).
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
