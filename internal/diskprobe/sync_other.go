//go:build !linux

package diskprobe

import "os"

// preallocate: a plain resize where fallocate is not available.
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }

// datasync: fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }
