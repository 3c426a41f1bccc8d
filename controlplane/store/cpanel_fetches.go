package store

import (
	"context"
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
	fetchDoneKind = "cpanel-fetch"
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

func fetchKey(id string) (string, error) {
	if _, err := importKey(id); err != nil {
		return "", fmt.Errorf("fetch %q: %w", id, ErrNotFound)
	}
	return prefixFetches + id, nil
}

// DecodeFetch decodes a KindFetches event.
func DecodeFetch(ev Event) (*Fetch, error) { return decodeJSON[Fetch]([]byte(ev.Name), ev.Value) }

// CreateFetch writes a new fetch with its task (tracked on the record)
// and audit event in one transaction; the node must exist.
func (s *Store) CreateFetch(ctx context.Context, f *Fetch, spec *agentpb.Task, audit AuditEvent) error {
	key, err := fetchKey(f.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	f.CreatedAt, f.UpdatedAt, f.Status = now, now, FetchPending
	t, ops, err := taskOps(f.Node, spec, FetchObject(f.ID), f.CreatedBy, nil, now)
	if err != nil {
		return err
	}
	f.TaskID, f.TaskGeneration = t.ID, spec.GetGeneration()
	ops = append(ops, clientv3.OpPut(key, mustJSON(f)))
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(key), present(nodeKey(f.Node))).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create fetch %s: %w", f.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("create fetch %s (or node %s gone): %w", f.ID, f.Node, ErrConflict)
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
	from := prefixFetches
	if after != "" {
		from = prefixFetches + after + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixFetches)), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, false, fmt.Errorf("list fetches: %w", err)
	}
	out = make([]Fetch, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		f, err := decodeJSON[Fetch](kv.Key, kv.Value)
		if err != nil {
			return nil, false, err
		}
		out = append(out, *f)
	}
	return out, resp.More, nil
}

// UpdateFetch applies fn to the fetch and writes it back with the audit
// event, if nobody wrote it meanwhile (retrying otherwise).
func (s *Store) UpdateFetch(ctx context.Context, id string, fn func(f *Fetch) error, audit AuditEvent) (*Fetch, error) {
	key, err := fetchKey(id)
	if err != nil {
		return nil, err
	}
	return updateRecord(ctx, s, key, FetchObject(id),
		func(f *Fetch) ([]*ObjectTask, error) {
			f.UpdatedAt = time.Now().UTC()
			return nil, fn(f)
		}, nil, audit)
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
