//go:build !linux

package main

import (
	"os"
	"syscall"
)

// childProcAttr: only Linux can tie the child's life to ours.
func childProcAttr() *syscall.SysProcAttr { return nil }

// preallocate: a plain resize where fallocate is not available.
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }

// datasync: fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }
