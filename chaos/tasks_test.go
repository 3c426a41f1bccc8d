package chaos

import (
	"bufio"
	"encoding/json"
	"os"
)

// journalIDs reads the task ids of an agent's journal (JSON lines, one per
// task applied and recorded).
func journalIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct{ ID string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.ID != "" {
			ids = append(ids, e.ID)
		}
	}
	return ids, sc.Err()
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
