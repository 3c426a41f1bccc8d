package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// Fetches of cPanel archives from old servers: one record per fetch,
// written with its fetch_cpanel_backup task in one transaction and
// finished by the fetch controller (controlplane/cpanel_fetch.go) from
// the task's result. The SSH credentials travel only in the task, sealed
// to the node; the controller forgets the task once the fetch has ended,
// so the record keeps the host and fingerprint and no secret.
const (
	prefixFetches = prefix + "cpanel-fetches/"
	// prefixFetchLocks holds, per node, host and account, the id of the
	// fetch that runs pkgacct for it: every such fetch has pkgacct write
	// the same /home/cpmove-ACCOUNT.tar.gz on the server, so two at once
	// would download each other's half-written archive.
	prefixFetchLocks = prefix + "cpanel-fetch-locks/"
	fetchDoneKind    = "cpanel-fetch"
)

// The fetch records and their finished tasks, named by fetch id.
var (
	KindFetches       = Kind{label: "cpanel-fetches", prefix: prefixFetches}
	KindFetchOutcomes = Kind{label: "cpanel-fetch-outcomes", prefix: prefixDone + fetchDoneKind + "/", name: firstSegment}
)

// FetchStatus is where a fetch is in its life.
type FetchStatus string

const (
	FetchPending FetchStatus = "PENDING"
	FetchRunning FetchStatus = "RUNNING"
	FetchDone    FetchStatus = "DONE"
	FetchFailed  FetchStatus = "FAILED"
)

// Finished reports whether the fetch has ended.
func (s FetchStatus) Finished() bool { return s == FetchDone || s == FetchFailed }

// Fetch is one pull of an archive from an old cPanel server.
type Fetch struct {
	ID                 string `json:"id"`
	Node               string `json:"node"`
	Host               string `json:"host"`
	Port               int    `json:"port"`
	User               string `json:"user"`
	HostKeyFingerprint string `json:"hostKeyFingerprint"`
	Account            string `json:"account,omitempty"`
	RemotePath         string `json:"remotePath,omitempty"`
	// Path is where the archive lands, relative to the node's import area.
	Path           string      `json:"path"`
	Status         FetchStatus `json:"status"`
	Bytes          uint64      `json:"bytes,omitempty"`
	SHA256         string      `json:"sha256,omitempty"`
	Error          string      `json:"error,omitempty"`
	TaskID         string      `json:"taskId,omitempty"`
	TaskGeneration int64       `json:"taskGeneration,omitempty"`
	CreatedBy      string      `json:"createdBy"`
	CreatedAt      time.Time   `json:"createdAt"`
	UpdatedAt      time.Time   `json:"updatedAt"`
	FinishedAt     time.Time   `json:"finishedAt,omitzero"`
}

// FetchObject names a fetch as the object of its task.
func FetchObject(id string) string { return fetchDoneKind + "/" + id }

func fetchLockKey(f *Fetch) string {
	return prefixFetchLocks + f.Node + "/" + f.Host + "/" + f.Account
}

func fetchKey(id string) (string, error) {
	if _, err := importKey(id); err != nil {
		return "", fmt.Errorf("fetch %q: %w", id, ErrNotFound)
	}
	return prefixFetches + id, nil
}

// DecodeFetch decodes a KindFetches event.
func DecodeFetch(ev Event) (*Fetch, error) { return decodeJSON[Fetch]([]byte(ev.Name), ev.Value) }

// CreateFetch writes a new fetch with its task (tracked on the record)
// and audit event in one transaction; the node must exist. A fetch of an
// account (pkgacct) is refused with ErrConflict while another fetch of
// the same account from the same host by the same node has not ended:
// the transaction takes the account's lock key, compared as read, so two
// concurrent creations cannot both pass.
func (s *Store) CreateFetch(ctx context.Context, f *Fetch, spec *agentpb.Task, audit AuditEvent) error {
	key, err := fetchKey(f.ID)
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{absent(key), present(nodeKey(f.Node))}
	var lockOps []clientv3.Op
	if f.Account != "" {
		lk := fetchLockKey(f)
		resp, err := s.cli.Get(ctx, lk)
		if err != nil {
			return fmt.Errorf("create fetch %s: %w", f.ID, err)
		}
		if len(resp.Kvs) == 0 {
			cmps = append(cmps, absent(lk))
		} else {
			// The holder's record is read outside the transaction; a
			// fetch only goes from running to ended, never back, and a
			// holder gone (or ended without releasing) is taken over.
			holder := string(resp.Kvs[0].Value)
			h, _, err := getJSON[Fetch](ctx, s.cli, prefixFetches+holder)
			switch {
			case err == nil && !h.Status.Finished():
				return fmt.Errorf("fetch %s of account %s from %s by node %s is %s: one at a time (pkgacct writes one archive per account): %w",
					holder, f.Account, f.Host, f.Node, h.Status, ErrConflict)
			case err != nil && !errors.Is(err, ErrNotFound):
				return fmt.Errorf("create fetch %s: %w", f.ID, err)
			}
			cmps = append(cmps, unchanged(lk, resp.Kvs[0].ModRevision))
		}
		lockOps = append(lockOps, clientv3.OpPut(lk, f.ID))
	}
	now := time.Now().UTC()
	f.CreatedAt, f.UpdatedAt, f.Status = now, now, FetchPending
	t, ops, err := taskOps(f.Node, spec, FetchObject(f.ID), f.CreatedBy, nil, now)
	if err != nil {
		return err
	}
	f.TaskID, f.TaskGeneration = t.ID, spec.GetGeneration()
	ops = append(ops, clientv3.OpPut(key, mustJSON(f)))
	ops = append(ops, lockOps...)
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create fetch %s: %w", f.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("create fetch %s (node %s gone, or another fetch of the account started meanwhile): %w", f.ID, f.Node, ErrConflict)
	}
	return nil
}

// GetFetch reads one fetch.
func (s *Store) GetFetch(ctx context.Context, id string) (*Fetch, error) {
	key, err := fetchKey(id)
	if err != nil {
		return nil, err
	}
	f, _, err := getJSON[Fetch](ctx, s.cli, key)
	return f, err
}

// ListFetches reads at most limit fetches with ids after after, oldest
// first; more says whether any follow.
func (s *Store) ListFetches(ctx context.Context, after string, limit int) (out []Fetch, more bool, err error) {
	return pageJSON[Fetch](ctx, s.cli, prefixFetches, after, limit)
}

// UpdateFetch applies fn to the fetch and writes it back with the audit
// event, if nobody wrote it meanwhile (retrying otherwise).
func (s *Store) UpdateFetch(ctx context.Context, id string, fn func(f *Fetch) error, audit AuditEvent) (*Fetch, error) {
	key, err := fetchKey(id)
	if err != nil {
		return nil, err
	}
	f, err := updateRecord(ctx, s, key, FetchObject(id),
		func(f *Fetch) ([]*ObjectTask, error) {
			f.UpdatedAt = time.Now().UTC()
			return nil, fn(f)
		}, nil, audit)
	if err == nil && f.Status.Finished() && f.Account != "" {
		// The account's lock goes with the fetch, if it is still this
		// fetch's. Best effort: a lock whose fetch has ended is taken
		// over by CreateFetch.
		lk := fetchLockKey(f)
		_, _ = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(lk), "=", f.ID)).Then(clientv3.OpDelete(lk)).Commit()
	}
	return f, err
}

// FetchOutcomes lists the finished tasks of fetch id not yet handled.
func (s *Store) FetchOutcomes(ctx context.Context, id string) ([]string, error) {
	return s.outcomes(ctx, fetchDoneKind, id)
}

// ForgetFetchOutcome deletes a handled done notice.
func (s *Store) ForgetFetchOutcome(ctx context.Context, id, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(fetchDoneKind, id, task))
	return err
}

// ScanCpanelServerResult is the result of scanCpanelServer.
func (t *Task) ScanCpanelServerResult() (*agentpb.ScanCpanelServerResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetScanCpanelServer)
}

// FetchCpanelBackupResult is the result of fetchCpanelBackup.
func (t *Task) FetchCpanelBackupResult() (*agentpb.FetchCpanelBackupResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetFetchCpanelBackup)
}
