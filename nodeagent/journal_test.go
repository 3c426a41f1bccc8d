package nodeagent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openTestJournal(t *testing.T, dir string) *journal {
	t.Helper()
	j, err := openJournal(dir, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.close() })
	return j
}

func entry(id string) journalEntry {
	e, err := entryFromResult(&agentpb.TaskResult{TaskId: id, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
		Result: &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{Payload: id}}, Generation: 7, FinishedUnixNano: 42})
	if err != nil {
		panic(err)
	}
	return e
}

func mustLookup(t *testing.T, j *journal, id string) (journalEntry, bool) {
	t.Helper()
	e, ok, err := j.lookup(id)
	if err != nil {
		t.Fatalf("lookup %s: %v", id, err)
	}
	return e, ok
}

func TestJournalAppendLookupReload(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir)
	failed := journalEntry{ID: "b", Status: statusFailed, Error: "invalid input: nope", Reason: agentpb.ErrorReason_ERROR_REASON_INVALID, Generation: 3, Finished: 9}
	for _, e := range []journalEntry{entry("a"), failed} {
		if err := j.append(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := mustLookup(t, j, "missing"); ok {
		t.Fatal("found an id never appended")
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}

	j2 := openTestJournal(t, dir)
	got, ok := mustLookup(t, j2, "a")
	if !ok || !reflect.DeepEqual(got, entry("a")) {
		t.Fatalf("after reopen: %+v, %v", got, ok)
	}
	got, ok = mustLookup(t, j2, "b")
	if !ok || !reflect.DeepEqual(got, failed) {
		t.Fatalf("after reopen: %+v, %v", got, ok)
	}
	res, err := got.result()
	if err != nil || res.GetStatus() != agentpb.TaskStatus_TASK_STATUS_FAILED || res.GetError() != failed.Error || res.GetTaskId() != "b" || res.GetGeneration() != 3 ||
		res.GetReason() != agentpb.ErrorReason_ERROR_REASON_INVALID || res.GetResult() != nil {
		t.Fatalf("result = %v", res)
	}
	if fi, _ := os.Stat(filepath.Join(dir, journalFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v", fi.Mode().Perm())
	}
}

func TestJournalResultRoundTrip(t *testing.T) {
	for _, in := range []*agentpb.TaskResult{
		{TaskId: "x", Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, Generation: 5, FinishedUnixNano: 77,
			Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: "example.com", Serial: 2026120501, Ds: []string{"example.com. 3600 IN DS 1 13 2 ab"}}}},
		{TaskId: "y", Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "rollover step too early", Reason: agentpb.ErrorReason_ERROR_REASON_TOO_EARLY},
		{TaskId: "z", Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}, // an action without a result
	} {
		e, err := entryFromResult(in)
		if err != nil {
			t.Fatal(err)
		}
		// Through the JSON line, as the journal stores it.
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var back journalEntry
		if err := json.Unmarshal(line, &back); err != nil {
			t.Fatal(err)
		}
		out, err := back.result()
		if err != nil || !proto.Equal(out, in) {
			t.Fatalf("round trip of %s: %v (%v) != %v", line, out, err, in)
		}
	}
}

// TestJournalLoadsResultJSONLines: a journal written before results were
// typed still loads and answers its tasks, without their JSON payload.
func TestJournalLoadsResultJSONLines(t *testing.T) {
	dir := t.TempDir()
	old := `{"id":"old","status":"SUCCEEDED","result_json":"{\"zone\":\"example.com\",\"serial\":7}","generation":4,"finished":11}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, journalFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	j := openTestJournal(t, dir)
	e, ok := mustLookup(t, j, "old")
	if !ok {
		t.Fatal("old line not loaded")
	}
	res, err := e.result()
	if err != nil || res.GetTaskId() != "old" || res.GetStatus() != agentpb.TaskStatus_TASK_STATUS_SUCCEEDED || res.GetGeneration() != 4 || res.GetResult() != nil {
		t.Fatalf("old line answers %v (%v)", res, err)
	}
}

func TestJournalTornLastLine(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir)
	for _, id := range []string{"a", "b"} {
		if err := j.append(entry(id)); err != nil {
			t.Fatal(err)
		}
	}
	j.close()
	// A crash in the middle of the third append.
	f, err := os.OpenFile(filepath.Join(dir, journalFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"id":"c","status":"SUCC`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	j2 := openTestJournal(t, dir)
	for _, id := range []string{"a", "b"} {
		if _, ok := mustLookup(t, j2, id); !ok {
			t.Fatalf("%s lost", id)
		}
	}
	if _, ok := mustLookup(t, j2, "c"); ok {
		t.Fatal("torn entry c was loaded")
	}
	// The next append must start on a line of its own.
	if err := j2.append(entry("d")); err != nil {
		t.Fatal(err)
	}
	j2.close()
	j3 := openTestJournal(t, dir)
	if _, ok := mustLookup(t, j3, "d"); !ok || j3.lines != 3 {
		t.Fatalf("after torn line and append: d found=%v lines=%d", ok, j3.lines)
	}
}

func TestJournalSkipsCorruptMiddleLine(t *testing.T) {
	dir := t.TempDir()
	content := string(mustJSONLine(t, entry("a"))) + "not json\n" + string(mustJSONLine(t, entry("b")))
	if err := os.WriteFile(filepath.Join(dir, journalFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	j := openTestJournal(t, dir)
	for _, id := range []string{"a", "b"} {
		if _, ok := mustLookup(t, j, id); !ok {
			t.Fatalf("%s lost", id)
		}
	}
}

func TestJournalCompactionKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	j := openTestJournal(t, dir)
	j.max, j.keep = 10, 4
	for i := range 11 {
		if err := j.append(entry(fmt.Sprint("t", i))); err != nil {
			t.Fatal(err)
		}
	}
	// The 11th append crossed max: t7..t10 remain.
	if j.lines != 4 {
		t.Fatalf("lines after compaction = %d", j.lines)
	}
	check := func(j *journal) {
		t.Helper()
		for i := range 11 {
			_, ok := mustLookup(t, j, fmt.Sprint("t", i))
			if want := i >= 7; ok != want {
				t.Errorf("t%d present=%v, want %v", i, ok, want)
			}
		}
	}
	check(j)
	// Appends after compaction go to the new file.
	if err := j.append(entry("t11")); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustLookup(t, j, "t11"); !ok {
		t.Fatal("t11 lost")
	}
	j.close()
	j2 := openTestJournal(t, dir)
	check(j2)
	if _, ok := mustLookup(t, j2, "t11"); !ok || j2.lines != 5 {
		t.Fatalf("after reopen: t11=%v lines=%d", ok, j2.lines)
	}
	assertNoTemps(t, dir)
}

func mustJSONLine(t *testing.T, e journalEntry) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}
