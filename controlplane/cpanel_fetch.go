package controlplane

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
)

// The cPanel fetch controller (leader only) finishes each fetch record
// (store cpanel_fetches.go) from its fetch_cpanel_backup task, written
// with the record by the API:
//
//	PENDING → RUNNING  the controller has seen the task queued for the node
//	RUNNING → DONE     the node reports the archive in its import area
//	        → FAILED   the node refused or failed (a retry is a new fetch)
//
// Once a fetch has ended its task is forgotten: the task is the only
// place the sealed SSH credentials were kept.
//
// A fetch whose task has not finished fetchDeadline after its creation,
// and whose record has not moved (progress) for fetchQuiet, is failed and
// its task forgotten: the node bounds its side (pkgacct 2 h, 60 s without
// a byte), so such a task is lost or its node is gone, and the sealed
// credentials should not wait for it.
const (
	fetchWorkers  = 1
	fetchResync   = 30 * time.Second
	fetchDeadline = 3 * time.Hour
	fetchQuiet    = 10 * time.Minute
)

// fetchSkew moves the fetch controller's clock on (tests only; atomic:
// controllers of other servers in the test process read it meanwhile).
var fetchSkew atomic.Int64

// fetchNow is the fetch controller's clock.
func fetchNow() time.Time { return time.Now().Add(time.Duration(fetchSkew.Load())) }

// fetchStuck reports whether f has outlived its deadline at now.
func fetchStuck(f *store.Fetch, now time.Time) bool {
	return now.Sub(f.CreatedAt) > fetchDeadline && now.Sub(f.UpdatedAt) > fetchQuiet
}

type cpanelFetchController struct {
	s   *Server
	st  *store.Store
	ctl *controller.Controller
}

func newCpanelFetchController(s *Server) *cpanelFetchController {
	c := &cpanelFetchController{s: s, st: s.store}
	var m *controller.Metrics
	if s.metrics != nil {
		m = s.metrics.controllers
	}
	c.ctl = controller.New(controller.Options{
		Name:  "cpanel-fetch",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindFetches, Handle: fetchEvent, Resync: fetchResync},
			{Kind: store.KindFetchOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		Sync:    c.sync,
		Workers: fetchWorkers,
		Log:     s.log,
		Metrics: m,
	})
	return c
}

// Run runs the controller for one term as leader.
func (c *cpanelFetchController) Run(ctx context.Context) { c.ctl.Run(ctx) }

func fetchEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		return ev.Name, false, false
	}
	f, err := store.DecodeFetch(ev)
	if err != nil {
		return ev.Name, false, false
	}
	// A finished fetch still holding its task is queued to forget it.
	busy := !f.Status.Finished() || f.TaskID != ""
	return ev.Name, busy, busy
}

func (c *cpanelFetchController) audit(f *store.Fetch, action, result string) store.AuditEvent {
	ev := store.NewAuditEvent("system", c.s.id, action, f.Node+":"+f.User+"@"+f.Host, result)
	ev.Detail = map[string]string{"id": f.ID, "path": f.Path}
	return ev
}

func (c *cpanelFetchController) sync(ctx context.Context, id string) (err error) {
	f, err := c.st.GetFetch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	outcomes, err := c.st.FetchOutcomes(ctx, id)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			return
		}
		for _, t := range outcomes {
			_ = c.st.ForgetFetchOutcome(context.WithoutCancel(ctx), id, t)
		}
	}()
	if f.Status.Finished() {
		return c.forgetTask(ctx, f)
	}
	t, _, err := c.st.GetTask(ctx, f.TaskID)
	if errors.Is(err, store.ErrNotFound) {
		return c.finish(ctx, f, store.FetchFailed, "the fetch task is lost", nil)
	}
	if err != nil {
		return err
	}
	if t.Status == store.TaskPending {
		if fetchStuck(f, fetchNow()) {
			return c.finish(ctx, f, store.FetchFailed,
				"the node did not finish the fetch within "+fetchDeadline.String()+" (no progress for "+fetchQuiet.String()+"): its task is forgotten", nil)
		}
		if f.Status != store.FetchPending {
			return nil
		}
		_, err := c.st.UpdateFetch(ctx, id, func(r *store.Fetch) error {
			if r.Status != store.FetchPending {
				return store.ErrUnchanged
			}
			r.Status = store.FetchRunning
			return nil
		}, store.AuditEvent{})
		return err
	}
	res, err := t.FetchCpanelBackupResult()
	if err != nil {
		return c.finish(ctx, f, store.FetchFailed, err.Error(), nil)
	}
	return c.finish(ctx, f, store.FetchDone, "", func(r *store.Fetch) {
		r.Bytes, r.SHA256 = res.GetBytes(), res.GetSha256()
		if res.GetRemotePath() != "" {
			r.RemotePath = res.GetRemotePath()
		}
	})
}

// finish ends a fetch, then forgets its task.
func (c *cpanelFetchController) finish(ctx context.Context, f *store.Fetch, status store.FetchStatus, msg string, fill func(*store.Fetch)) error {
	result := "ok: " + string(status)
	if msg != "" {
		result += ": " + msg
	}
	f, err := c.st.UpdateFetch(ctx, f.ID, func(r *store.Fetch) error {
		if r.Status.Finished() {
			return store.ErrUnchanged
		}
		r.Status, r.Error, r.FinishedAt = status, msg, time.Now().UTC()
		if fill != nil {
			fill(r)
		}
		return nil
	}, c.audit(f, "cpanelFetch.finish", result))
	if err != nil {
		return err
	}
	return c.forgetTask(ctx, f)
}

// forgetTask deletes the ended fetch's task, its sealed credentials with
// it, and clears the record's reference.
func (c *cpanelFetchController) forgetTask(ctx context.Context, f *store.Fetch) error {
	if f.TaskID == "" {
		return nil
	}
	if err := c.st.ForgetTask(ctx, &store.Task{ID: f.TaskID, Node: f.Node}); err != nil {
		return err
	}
	_, err := c.st.UpdateFetch(ctx, f.ID, func(r *store.Fetch) error {
		if r.TaskID == "" {
			return store.ErrUnchanged
		}
		r.TaskID, r.TaskGeneration = "", 0
		return nil
	}, store.AuditEvent{})
	return err
}
