package account

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killUserProcesses ends every process whose real user id is uid and that
// holds no root id: SIGTERM, then SIGKILL for what is left after a grace
// period. It fails if any survives. Root daemons that take uid as their
// effective id for a moment (Dovecot's LMTP delivering a message) serve
// other accounts too and are left alone.
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

// processesOf lists the processes whose real user id is uid and none of
// whose ids is root.
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
		zombie := false
		for _, line := range strings.Split(string(b), "\n") {
			if st, ok := strings.CutPrefix(line, "State:"); ok {
				// A zombie holds nothing and cannot be signalled; its
				// parent reaps it.
				zombie = strings.HasPrefix(strings.TrimSpace(st), "Z")
			}
			if ids, ok := strings.CutPrefix(line, "Uid:"); ok {
				f := strings.Fields(ids) // real, effective, saved, filesystem
				if !zombie && len(f) == 4 && f[0] == want && !slices.Contains(f, "0") {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids, nil
}
