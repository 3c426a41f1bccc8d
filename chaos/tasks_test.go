package chaos

import (
	"bufio"
	"encoding/json"
	"os"
)

type journaled struct {
	ID       string
	Finished int64 // unix nanoseconds
}

// journalEntries reads an agent's journal (JSON lines, one per task
// applied and recorded).
func journalEntries(path string) ([]journaled, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []journaled
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e journaled
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.ID != "" {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// appliedTasks counts, per task id, the applies one agent lifetime logged
// (--log-format json --log-level debug: "task succeeded" or "task failed").
func appliedTasks(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Msg  string
			Task string
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Task != "" && (e.Msg == "task succeeded" || e.Msg == "task failed") {
			out[e.Task]++
		}
	}
	return out, sc.Err()
}
