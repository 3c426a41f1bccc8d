package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

// Imports of cPanel archives: one record per import, driven by the import
// controller on the leader (controlplane/cpanel_import.go). The record
// holds the analyze result (protobuf; its password hashes and keys are
// sealed to the import's node, never clear) and, once finished, the report
// of what was imported, adapted and skipped. An index key maps the created
// account to its import so that the account shows its report.
const (
	prefixImports          = prefix + "imports/"
	prefixImportsOfAccount = prefix + "import-accounts/"
	importDoneKind         = "import"
)

// The import records and the finished tasks of imports, named by import id.
var (
	KindImports        = Kind{label: "imports", prefix: prefixImports}
	KindImportOutcomes = Kind{label: "import-outcomes", prefix: prefixDone + importDoneKind + "/", name: firstSegment}
)

// ImportStatus is where an import is in its life.
type ImportStatus string

const (
	ImportPending   ImportStatus = "PENDING"
	ImportAnalyzing ImportStatus = "ANALYZING"
	ImportCreating  ImportStatus = "CREATING"
	ImportFilling   ImportStatus = "FILLING"
	ImportDone      ImportStatus = "DONE"
	ImportPartial   ImportStatus = "PARTIAL"
	ImportFailed    ImportStatus = "FAILED"
)

// Finished reports whether the import has nothing left to do.
func (s ImportStatus) Finished() bool {
	return s == ImportDone || s == ImportPartial || s == ImportFailed
}

// ImportItem is one line of an import's report.
type ImportItem struct {
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	Disposition string `json:"disposition"` // IMPORT, ADAPT, SKIP, FAILED
	Note        string `json:"note,omitempty"`
	Entry       string `json:"entry,omitempty"`
	Bytes       uint64 `json:"bytes,omitempty"`
}

// Import is one cPanel archive import.
type Import struct {
	ID    string `json:"id"`
	Node  string `json:"node"`
	Path  string `json:"path"`
	Owner string `json:"owner"`
	Plan  string `json:"plan"`
	// Username is the account's name as asked ("": the cPanel user's).
	Username string `json:"username,omitempty"`
	// Account is the created account's id, once created.
	Account string       `json:"account,omitempty"`
	Status  ImportStatus `json:"status"`
	Error   string       `json:"error,omitempty"`
	// Report is the node's agentpb.CpanelReport in protobuf wire form.
	Report []byte `json:"report,omitempty"`
	// Items is the final report: the analysis with what the import did.
	Items []ImportItem `json:"items,omitempty"`
	// Done names the creation steps finished (resumed imports skip them).
	Done           []string  `json:"done,omitempty"`
	TaskID         string    `json:"taskId,omitempty"`
	TaskGeneration int64     `json:"taskGeneration,omitempty"`
	CreatedBy      string    `json:"createdBy"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	FinishedAt     time.Time `json:"finishedAt,omitzero"`
}

// ImportObject names an import as the object of its tasks.
func ImportObject(id string) string { return importDoneKind + "/" + id }

func importKey(id string) (string, error) {
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("import %q: %w", id, ErrNotFound)
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return "", fmt.Errorf("import %q: %w", id, ErrNotFound)
		}
	}
	return prefixImports + id, nil
}

// NewImportID returns a time-ordered unique id.
func NewImportID(now time.Time) string { return NewAccountID(now) }

// DecodeImport decodes a KindImports event.
func DecodeImport(ev Event) (*Import, error) { return decodeJSON[Import]([]byte(ev.Name), ev.Value) }

// CreateImport writes a new import (PENDING) with its audit event.
func (s *Store) CreateImport(ctx context.Context, im *Import, audit AuditEvent) error {
	key, err := importKey(im.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	im.CreatedAt, im.UpdatedAt = now, now
	if im.Status == "" {
		im.Status = ImportPending
	}
	ops := []clientv3.Op{clientv3.OpPut(key, mustJSON(im))}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(key)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create import %s: %w", im.ID, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// GetImport reads one import.
func (s *Store) GetImport(ctx context.Context, id string) (*Import, error) {
	key, err := importKey(id)
	if err != nil {
		return nil, err
	}
	im, _, err := getJSON[Import](ctx, s.cli, key)
	return im, err
}

// ListImports reads at most limit imports with ids after after, oldest
// first; more says whether any follow.
func (s *Store) ListImports(ctx context.Context, after string, limit int) (out []Import, more bool, err error) {
	return pageJSON[Import](ctx, s.cli, prefixImports, after, limit)
}

// UpdateImport applies fn to the import and writes it back with the tasks
// fn returns, if nobody wrote it meanwhile (retrying otherwise); a tracked
// task is recorded as the one in flight. Setting Account the first time
// writes the account's index key in the same transaction.
func (s *Store) UpdateImport(ctx context.Context, id string, fn func(im *Import) ([]*ObjectTask, error), audit AuditEvent) (*Import, error) {
	key, err := importKey(id)
	if err != nil {
		return nil, err
	}
	im, err := updateRecord(ctx, s, key, ImportObject(id),
		func(im *Import) ([]*ObjectTask, error) {
			im.UpdatedAt = time.Now().UTC()
			return fn(im)
		},
		func(im *Import, task string, gen int64) { im.TaskID, im.TaskGeneration = task, gen },
		audit)
	if err != nil || im.Account == "" {
		return im, err
	}
	// The index is written after the record: an import whose account is
	// set and whose index is missing (a crash between) has it written
	// again by its next update.
	if _, err := s.cli.Put(ctx, prefixImportsOfAccount+im.Account, im.ID); err != nil {
		return im, fmt.Errorf("index import %s: %w", id, err)
	}
	return im, nil
}

// ImportOfAccount returns the import that created account, ErrNotFound
// when none did.
func (s *Store) ImportOfAccount(ctx context.Context, account string) (*Import, error) {
	resp, err := s.cli.Get(ctx, prefixImportsOfAccount+account)
	if err != nil {
		return nil, fmt.Errorf("import of account %s: %w", account, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("import of account %s: %w", account, ErrNotFound)
	}
	im, err := s.GetImport(ctx, string(resp.Kvs[0].Value))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("import of account %s: %w", account, ErrNotFound)
	}
	return im, err
}

// ImportOutcomes lists the finished tasks of import id not yet handled.
func (s *Store) ImportOutcomes(ctx context.Context, id string) ([]string, error) {
	return s.outcomes(ctx, importDoneKind, id)
}

// ForgetImportOutcome deletes a handled done notice.
func (s *Store) ForgetImportOutcome(ctx context.Context, id, task string) error {
	_, err := s.cli.Delete(ctx, doneKey(importDoneKind, id, task))
	return err
}

// AnalyzeCpanelBackupResult is the result of analyzeCpanelBackup.
func (t *Task) AnalyzeCpanelBackupResult() (*agentpb.AnalyzeCpanelBackupResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetAnalyzeCpanelBackup)
}

// ImportCpanelBackupResult is the result of importCpanelBackup.
func (t *Task) ImportCpanelBackupResult() (*agentpb.ImportCpanelBackupResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetImportCpanelBackup)
}

// DecodeCpanelReport decodes an import's Report (nil when it has none).
func DecodeCpanelReport(b []byte) (*agentpb.CpanelReport, error) {
	if len(b) == 0 {
		return nil, nil
	}
	rep := &agentpb.CpanelReport{}
	if err := proto.Unmarshal(b, rep); err != nil {
		return nil, fmt.Errorf("decode cPanel report: %w", err)
	}
	return rep, nil
}
