package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// serverGCPercent is the server's GOGC unless $GOGC says otherwise. Most
// of what the server allocates lives for one request or one etcd round
// trip; collecting at 5x the live heap instead of Go's 2x takes the
// collector's marking (which on two cores takes one of them for a third of
// the time at the default) mostly out of request latency under load.
const serverGCPercent = 400

// serverMemoryShare is the part of the memory available to the process
// that the collector treats as a soft limit unless $GOMEMLIMIT says
// otherwise: near it the collector runs as often as it must, so the
// larger GOGC never costs the process its memory.
const serverMemoryShare = 0.6

// tuneGC applies serverGCPercent and serverMemoryShare.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if m := availableMemory(); m > 0 {
			debug.SetMemoryLimit(int64(float64(m) * serverMemoryShare))
		}
	}
}

// availableMemory is the memory limit of the process's cgroup (v2), else
// the machine's RAM, in bytes; 0 when neither can be read.
func availableMemory() int64 {
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
				lim, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", rel, "memory.max"))
				if v, perr := strconv.ParseInt(strings.TrimSpace(string(lim)), 10, 64); err == nil && perr == nil && v > 0 {
					return v // "max" (no limit) does not parse
				}
			}
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
