package services

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Defaults for the zero values of Spec's timing fields.
const (
	defaultStopTimeout  = 10 * time.Second
	defaultReadyTimeout = 30 * time.Second
	// versionTimeout bounds Spec.Version: it runs a binary with -v or asks
	// an API, which takes milliseconds unless something is wrong.
	versionTimeout = 5 * time.Second
	// readyPollInterval is how often Spec.Ready is retried. The daemons
	// here come up in 30–150 ms (TESTING.md), so a finer poll buys little.
	readyPollInterval = 50 * time.Millisecond
	// reloadSpacing is the least time between two reloads of one daemon.
	// nginx takes ~50 ms to finish a reload at small scale and ~200 ms at
	// 1,000 vhosts (TESTING.md); a HUP before it is done starts yet
	// another generation of workers. Callers within the window share one
	// reload, so a burst of changes costs one or two.
	reloadSpacing = 200 * time.Millisecond
)

func stopSignal(s Spec) syscall.Signal {
	if s.StopSignal == 0 {
		return syscall.SIGTERM
	}
	return s.StopSignal
}

func stopTimeout(s Spec) time.Duration {
	if s.StopTimeout <= 0 {
		return defaultStopTimeout
	}
	return s.StopTimeout
}

func readyTimeout(s Spec) time.Duration {
	if s.ReadyTimeout <= 0 {
		return defaultReadyTimeout
	}
	return s.ReadyTimeout
}

// errGone is what pollReady returns when gone reports the daemon died.
var errGone = errors.New("daemon is gone")

// pollReady calls ready until it returns nil, ctx ends or gone (if not nil)
// reports that the daemon died, whichever comes first. A nil ready means
// ready at once. The error on timeout carries ready's last error, which is
// usually the useful part ("connection refused", "no such file").
func pollReady(ctx context.Context, ready func(context.Context) error, gone func() bool) error {
	if ready == nil {
		return nil
	}
	var last error
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
		if gone != nil && gone() {
			return errGone
		}
		err := ready(ctx)
		if err == nil {
			// Something answered, but if our daemon died meanwhile it
			// was someone else (another server on the same port).
			if gone != nil && gone() {
				return errGone
			}
			return nil
		}
		last = err
		t.Reset(readyPollInterval)
	}
}

// notify sends on a Changes channel without blocking: the buffer of one
// holds "something changed", and a reader looks at Status for what.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
