package store

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// taskHub tells API requests waiting on a task (a mutation waiting for its
// node) that the task's record changed, from one watch per replica on the
// task records. A request must never open a watch of its own: thousands of
// them opened and cancelled on the shared in-process etcd client wedge its
// watch stream, and with it every other watch on that client (etcd issues
// #18879, #20716).
//
// A waiter gets a signal, not the record: its channel holds one pending
// signal and a send never blocks, so a waiter that does not read cannot
// hold up the watch. It reads the record itself when signalled.
type taskHub struct {
	cli *clientv3.Client
	// prefix is what the hub watches; a waiter's id is the key without it.
	prefix string
	// filterDelete drops deletions: a task record's deletion is not news.
	filterDelete bool

	mu      sync.Mutex
	running bool
	waiters map[string]map[*taskWaiter]struct{}
}

type taskWaiter struct{ ch chan struct{} }

func newTaskHub(cli *clientv3.Client) *taskHub {
	return &taskHub{cli: cli, prefix: prefixTasks, filterDelete: true, waiters: map[string]map[*taskWaiter]struct{}{}}
}

// newStatusHub signals waiters on the database statuses (dbstate/), the
// way taskHub does on tasks (see WaitDatabaseObject).
func newStatusHub(cli *clientv3.Client) *taskHub {
	return &taskHub{cli: cli, prefix: prefixDBState, waiters: map[string]map[*taskWaiter]struct{}{}}
}

func (h *taskHub) notify(w *taskWaiter) {
	select {
	case w.ch <- struct{}{}:
	default: // a signal is pending already
	}
}

// notifyAll wakes every waiter: after the watch was lost, any record may
// have changed unseen.
func (h *taskHub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ws := range h.waiters {
		for w := range ws {
			h.notify(w)
		}
	}
}

func (h *taskHub) run(ctx context.Context, log *slog.Logger) {
	h.mu.Lock()
	h.running = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running = false
		h.mu.Unlock()
		h.notifyAll()
	}()
	for ctx.Err() == nil {
		err := h.follow(ctx)
		h.notifyAll()
		if ctx.Err() != nil {
			return
		}
		log.Warn("task hub: watching again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (h *taskHub) follow(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// From now: a waiter reads the record after subscribing, so changes
	// before that are in what it reads.
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if h.filterDelete {
		opts = append(opts, clientv3.WithFilterDelete())
	}
	for wr := range h.cli.Watch(wctx, h.prefix, opts...) {
		if err := wr.Err(); err != nil {
			return err
		}
		h.mu.Lock()
		for _, ev := range wr.Events {
			for w := range h.waiters[strings.TrimPrefix(string(ev.Kv.Key), h.prefix)] {
				h.notify(w)
			}
		}
		h.mu.Unlock()
	}
	return ctx.Err()
}

func (h *taskHub) add(id string) (*taskWaiter, bool) {
	w := &taskWaiter{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[id] == nil {
		h.waiters[id] = map[*taskWaiter]struct{}{}
	}
	h.waiters[id][w] = struct{}{}
	return w, h.running
}

func (h *taskHub) remove(id string, w *taskWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[id], w)
	if len(h.waiters[id]) == 0 {
		delete(h.waiters, id)
	}
}

// taskPoll is how often a waiter reads its task regardless of signals: a
// safety net for a hub that is not running (a store without RunMirrors) or
// between two watches.
const taskPoll = time.Second

// WaitTask returns the task once it has finished, or as it stands when
// timeout passes or ctx ends. It opens no watch: the replica's one watch on
// task records (RunMirrors) signals it, and without that it polls.
func (s *Store) WaitTask(ctx context.Context, id string, timeout time.Duration) (*Task, error) {
	return waitOn(ctx, s.taskWaits, id, timeout,
		func() (*Task, error) {
			t, _, err := s.GetTask(ctx, id)
			return t, err
		},
		func(t *Task) bool { return t.Status != TaskPending })
}

// waitOn reads a record until done says it is what the caller waits for,
// when hub signals a change of id and every taskPoll besides, and returns
// it then, or as it stands when timeout passes or ctx ends.
func waitOn[T any](ctx context.Context, hub *taskHub, id string, timeout time.Duration, read func() (T, error), done func(T) bool) (T, error) {
	w, running := hub.add(id)
	defer hub.remove(id, w)
	poll := taskPoll
	if !running {
		poll = 100 * time.Millisecond
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		v, err := read()
		if err != nil || done(v) {
			return v, err
		}
		select {
		case <-w.ch:
		case <-tick.C:
		case <-deadline.C:
			return v, nil
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}
