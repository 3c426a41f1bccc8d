package nodeagent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

const journalFile = "journal"

// The journal is compacted once it holds more than journalMaxEntries lines,
// keeping the newest journalKeepEntries.
//
// Forgetting old entries is safe because the journal only has to answer
// re-sends, and the gateway deletes a task from its queue as soon as it has
// the result. A task can therefore reach the agent again only when a re-send
// (after a reconnect, or a periodic resync) raced the acknowledgement of its
// result: that window spans at most the tasks that were unacknowledged at one
// moment, which is bounded by what a node is given at once, orders of
// magnitude below 10,000. Even a task that slips past the journal is harmless
// by design: tasks are ensures of a whole object at a generation, so applying
// one twice converges to the same state.
const (
	journalMaxEntries  = 50_000
	journalKeepEntries = 10_000
)

// journalEntry is one line of the journal: the outcome of one task, kept so
// that a re-sent task is answered with the recorded result instead of being
// applied again.
//
// Lines written before results were typed carry "result_json" instead of
// "result". That key is no longer read: such an entry still answers its
// task (status, error, generation), without the payload, which the control
// plane then treats as a result that does not decode (it retries the object
// instead of reading zero values from it).
type journalEntry struct {
	ID     string              `json:"id"`
	Status string              `json:"status"` // "SUCCEEDED" or "FAILED"
	Error  string              `json:"error,omitempty"`
	Reason agentpb.ErrorReason `json:"reason,omitempty"`
	// Result is an agentpb.TaskResult holding only its oneof result, in
	// protobuf wire form (base64 in the JSON line).
	Result     []byte `json:"result,omitempty"`
	Generation int64  `json:"generation"`
	Finished   int64  `json:"finished"` // unix nanoseconds
}

const (
	statusSucceeded = "SUCCEEDED"
	statusFailed    = "FAILED"
)

func entryFromResult(r *agentpb.TaskResult) (journalEntry, error) {
	st := statusFailed
	if r.GetStatus() == agentpb.TaskStatus_TASK_STATUS_SUCCEEDED {
		st = statusSucceeded
	}
	e := journalEntry{
		ID:         r.GetTaskId(),
		Status:     st,
		Error:      r.GetError(),
		Reason:     r.GetReason(),
		Generation: r.GetGeneration(),
		Finished:   r.GetFinishedUnixNano(),
	}
	if r.GetResult() != nil {
		b, err := proto.Marshal(&agentpb.TaskResult{Result: r.GetResult()})
		if err != nil {
			return journalEntry{}, fmt.Errorf("encode result of %q: %w", e.ID, err)
		}
		e.Result = b
	}
	return e, nil
}

// result rebuilds the recorded TaskResult. The payload was written by
// entryFromResult; one that no longer decodes is an error, so that the
// task is applied again rather than answered with an empty result.
func (e journalEntry) result() (*agentpb.TaskResult, error) {
	st := agentpb.TaskStatus_TASK_STATUS_FAILED
	if e.Status == statusSucceeded {
		st = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
	}
	r := &agentpb.TaskResult{}
	if err := proto.Unmarshal(e.Result, r); err != nil {
		return nil, fmt.Errorf("decode journaled result of %q: %w", e.ID, err)
	}
	r.TaskId, r.Status, r.Error, r.Reason = e.ID, st, e.Error, e.Reason
	r.Generation, r.FinishedUnixNano = e.Generation, e.Finished
	return r, nil
}

// span locates one line of the journal file.
type span struct {
	off int64
	n   int
}

// journal is an append-only file of JSON lines, one per finished task, each
// synced before the task's result is sent.
//
// Only the location of each entry is held in memory, not the entry: lookups
// hit only for re-sent tasks, which are rare, while a full in-memory copy of
// tens of thousands of results would dominate the agent's idle footprint.
type journal struct {
	dir  string
	log  *slog.Logger
	max  int
	keep int

	mu    sync.Mutex
	f     *os.File
	size  int64
	lines int // valid entries in the file
	index map[string]span
}

// openJournal loads dir/journal, creating it if needed. An unterminated last
// line, which a crash during an append leaves behind, is cut off: that
// task's result was never sent (the append happens first), so the gateway
// will send the task again and it is applied again.
func openJournal(dir string, log *slog.Logger) (*journal, error) {
	j := &journal{dir: dir, log: log, max: journalMaxEntries, keep: journalKeepEntries}
	if err := j.load(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *journal) path() string { return filepath.Join(j.dir, journalFile) }

func (j *journal) load() error {
	f, err := os.OpenFile(j.path(), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	index := make(map[string]span)
	lines, skipped := 0, 0
	var off int64
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				j.log.Warn("journal: dropping torn last line", "bytes", len(line))
				if err := f.Truncate(off); err != nil {
					f.Close()
					return fmt.Errorf("journal: cut torn last line: %w", err)
				}
				if err := f.Sync(); err != nil {
					f.Close()
					return fmt.Errorf("journal: sync: %w", err)
				}
			}
			break
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("read journal: %w", err)
		}
		var e journalEntry
		if err := json.Unmarshal(line, &e); err != nil || e.ID == "" {
			// A corrupt line in the middle cannot come from a torn append;
			// losing it costs at most one repeated (idempotent) apply, so
			// keep the rest rather than refuse to start.
			skipped++
		} else {
			index[e.ID] = span{off: off, n: len(line)}
			lines++
		}
		off += int64(len(line))
	}
	if skipped > 0 {
		j.log.Warn("journal: skipped corrupt lines", "count", skipped)
	}
	j.f, j.size, j.lines, j.index = f, off, lines, index
	return nil
}

// lookup returns the recorded outcome of task id.
func (j *journal) lookup(id string) (journalEntry, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	sp, ok := j.index[id]
	if !ok {
		return journalEntry{}, false, nil
	}
	if j.f == nil {
		return journalEntry{}, false, errors.New("journal is closed")
	}
	buf := make([]byte, sp.n)
	if _, err := j.f.ReadAt(buf, sp.off); err != nil {
		return journalEntry{}, false, fmt.Errorf("read journal entry %q: %w", id, err)
	}
	var e journalEntry
	if err := json.Unmarshal(buf, &e); err != nil {
		return journalEntry{}, false, fmt.Errorf("decode journal entry %q: %w", id, err)
	}
	return e, true, nil
}

// append records e durably: when it returns nil the entry survives a crash.
func (j *journal) append(e journalEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry %q: %w", e.ID, err)
	}
	line = append(line, '\n')

	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("journal is closed")
	}
	if _, err := j.f.Write(line); err != nil {
		// Cut a partial write off so the next append starts on a clean line.
		_ = j.f.Truncate(j.size)
		return fmt.Errorf("append journal entry %q: %w", e.ID, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	j.index[e.ID] = span{off: j.size, n: len(line)}
	j.size += int64(len(line))
	j.lines++
	if j.lines > j.max {
		start := time.Now()
		if err := j.compactLocked(); err != nil {
			// The entry itself is safely recorded; a failed compaction only
			// means the file keeps growing until the next attempt.
			j.log.Error("journal: compact", "err", err)
		} else {
			j.log.Info("journal: compacted", "kept", j.lines, "took", time.Since(start))
		}
	}
	return nil
}

// compactLocked rewrites the journal with only its newest j.keep entries,
// atomically, so that a crash leaves either the old or the new file.
func (j *journal) compactLocked() error {
	drop := j.lines - j.keep
	if drop <= 0 {
		return nil
	}
	index := make(map[string]span, j.keep)
	var size int64
	kept := 0
	err := writeFileAtomicFunc(j.dir, journalFile, 0o600, func(w io.Writer) error {
		r := bufio.NewReader(io.NewSectionReader(j.f, 0, j.size))
		seen := 0
		for {
			line, err := r.ReadBytes('\n')
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			var e journalEntry
			if json.Unmarshal(line, &e) != nil || e.ID == "" {
				continue
			}
			seen++
			if seen <= drop {
				continue
			}
			if _, err := w.Write(line); err != nil {
				return err
			}
			index[e.ID] = span{off: size, n: len(line)}
			size += int64(len(line))
			kept++
		}
	})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(j.path(), os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		// The new file is in place but cannot be opened: without a handle
		// the journal cannot work at all, so say so loudly in every append.
		j.f.Close()
		j.f = nil
		return fmt.Errorf("reopen compacted journal: %w", err)
	}
	j.f.Close()
	j.f, j.size, j.lines, j.index = f, size, kept, index
	return nil
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
