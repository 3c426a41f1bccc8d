// Package controller is the one runtime every nPanel controller runs on,
// after client-go's workqueue and informers (Kubernetes' sample-controller):
//
//   - Queue: a de-duplicating work queue keyed by object name, with
//     AddAfter and a per-key exponential backoff (AddRateLimited, Forget).
//   - Source: a store.Kind the controller follows. Its informer lists the
//     kind, queues the keys its Handle picks, follows the store's watch from
//     the list's revision, lists again when the watch is compacted or lost,
//     and queues every kept key again each Resync period. The store runs one
//     list-and-watch loop per kind for all its followers (store.Follow).
//   - Controller (New(Options)): sources, a queue and workers calling
//     Sync(ctx, key) — or, for controllers that commit many objects in one
//     transaction, SyncBatch(ctx, keys) with up to BatchSize keys gathered
//     for up to Gather. A failed key comes back after its backoff; a
//     controller asks for a key again later with EnqueueAfter; Ticks queue
//     keys of its own at the start of a run and periodically.
//   - Manager: runs the registered controllers while this replica leads
//     (Lead, called with a context that ends when leadership is lost). Each
//     run starts with a fresh queue and fresh lists.
//   - Metrics: per controller (label "controller"): queue depth, sync
//     duration, retries.
//
// A controller in a few lines (the zone controller's shape):
//
//	c := controller.New(controller.Options{
//		Name:  "zone",
//		Store: st, // *store.Store
//		Sources: []controller.Source{
//			{Kind: store.KindZones, Resync: time.Minute},
//			{Kind: store.KindZoneOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
//		},
//		Sync:    zc.sync, // func(ctx, zoneName) error
//		Log:     log,
//		Metrics: metrics, // controller.NewMetrics(registry), once per registry
//	})
//	manager.Add(c) // runs while this replica leads
//
// A sync is level-triggered: it reads the object as it now stands and
// converges it, so a repeated or missed event costs work, never
// correctness; the resync catches what a watch missed.
package controller
