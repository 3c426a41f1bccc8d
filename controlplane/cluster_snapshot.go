package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
)

// SnapshotPath serves a snapshot of the control plane's etcd to admins.
const SnapshotPath = "/v1/cluster/snapshot"

// EmbeddedEtcd implements graph.Cluster.
func (s *Server) EmbeddedEtcd() bool { return s.etcd != nil }

// snapshotHandler streams an etcd snapshot (the keyspace with the sealed CA
// and every tenant's records) to an admin. Its callers come through
// auth.Middleware, which has refused bad tokens already. One snapshot at a
// time: each holds a read transaction of the whole database open for as
// long as the download takes.
func (s *Server) snapshotHandler(refusals *store.RefusalAudit) http.Handler {
	busy := make(chan struct{}, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		src := auth.Source(ctx)
		p, ok := auth.FromContext(ctx)
		if !ok {
			refusals.Record(ctx, store.RefusedRead, store.NewAuditEvent("anonymous", src, "clusterSnapshot", "etcd", graph.CodeUnauthenticated))
			w.Header().Set("WWW-Authenticate", `Bearer realm="npanel"`)
			graph.WriteError(w, http.StatusUnauthorized, graph.CodeUnauthenticated, "authentication required: send Authorization: Bearer <token> of an admin")
			return
		}
		if p.Role != store.RoleAdmin {
			refusals.Record(ctx, store.RefusedRead, store.NewAuditEvent(p.Name, src, "clusterSnapshot", "etcd", graph.CodeForbidden))
			graph.WriteError(w, http.StatusForbidden, graph.CodeForbidden, "a cluster snapshot requires the admin role")
			return
		}
		select {
		case busy <- struct{}{}:
			defer func() { <-busy }()
		default:
			graph.WriteError(w, http.StatusConflict, graph.CodeConflict, "another snapshot is being taken on this replica; try again when it is done")
			return
		}
		// Recorded before a byte leaves: a download cut short by a crash
		// of this replica is still on the record.
		if err := s.auditSnapshot(r, p.Name, "started", 0, nil); err != nil {
			graph.WriteError(w, http.StatusServiceUnavailable, graph.CodeUnavailable, "the audit log cannot record the snapshot: "+err.Error())
			return
		}
		rc, err := s.store.Snapshot(ctx)
		if err != nil {
			_ = s.auditSnapshot(r, p.Name, "error: "+err.Error(), 0, nil)
			graph.WriteError(w, http.StatusServiceUnavailable, graph.CodeUnavailable, err.Error())
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="npanel-etcd-`+time.Now().UTC().Format("20060102T150405Z")+`.db"`)
		w.Header().Set("Cache-Control", "no-store")
		h := sha256.New()
		start := time.Now()
		n, err := io.Copy(io.MultiWriter(w, h), rc)
		if err != nil {
			_ = s.auditSnapshot(r, p.Name, "error: "+err.Error(), n, nil)
			s.log.Warn("cluster snapshot cut short", "actor", p.Name, "bytes", n, "err", err)
			// Headers are gone: only an aborted response tells the
			// client that what it got is not a whole snapshot.
			panic(http.ErrAbortHandler)
		}
		_ = s.auditSnapshot(r, p.Name, "ok", n, h)
		s.log.Info("cluster snapshot taken", "actor", p.Name, "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	})
}

func (s *Server) auditSnapshot(r *http.Request, actor, result string, n int64, h hash.Hash) error {
	ev := store.NewAuditEvent(actor, auth.Source(r.Context()), "clusterSnapshot", "etcd", result)
	ev.Detail = map[string]string{"bytes": strconv.FormatInt(n, 10), "replica": s.id}
	if h != nil {
		ev.Detail["sha256"] = hex.EncodeToString(h.Sum(nil))
	}
	// The request's context may be done (the client went away); the
	// audit event is written regardless.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	err := s.store.AppendAudit(ctx, ev)
	if err != nil {
		s.log.Error("audit cluster snapshot", "err", err)
	}
	return err
}
