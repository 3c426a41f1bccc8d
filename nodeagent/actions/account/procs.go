package account

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killUserProcesses ends every process running as uid (by real,
// effective, saved or filesystem id): SIGTERM, then SIGKILL for what is
// left after a grace period. It fails if any survives.
func killUserProcesses(ctx context.Context, uid uint32) error {
	if uid == 0 {
		return errors.New("refusing to signal the processes of uid 0")
	}
	const grace = 3 * time.Second
	sig := syscall.SIGTERM
	deadline := time.Now().Add(grace)
	for {
		pids, err := processesOf(uid)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if sig == syscall.SIGKILL {
				return fmt.Errorf("processes %v of uid %d survived SIGKILL", pids, uid)
			}
			sig, deadline = syscall.SIGKILL, time.Now().Add(grace)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig) // it may have exited meanwhile
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// processesOf lists the processes any of whose user ids is uid.
func processesOf(uid uint32) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	want := strconv.FormatUint(uint64(uid), 10)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue // exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if ids, ok := strings.CutPrefix(line, "Uid:"); ok {
				for _, id := range strings.Fields(ids) {
					if id == want {
						pids = append(pids, pid)
						break
					}
				}
				break
			}
		}
	}
	return pids, nil
}
