package chaos

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"time"
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
	err = eachApply(f, func(task, _ string, _ time.Duration) { out[task]++ })
	return out, err
}

// applyTimes collects how long each successful apply of action took, from
// one agent lifetime's log.
func applyTimes(path, action string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []time.Duration
	err = eachApply(f, func(_, act string, took time.Duration) {
		if act == action && took > 0 {
			out = append(out, took)
		}
	})
	return out, err
}

func eachApply(r io.Reader, f func(task, action string, took time.Duration)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Msg    string
			Task   string
			Action string
			Took   int64 // nanoseconds; only on success
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Task != "" && (e.Msg == "task succeeded" || e.Msg == "task failed") {
			f(e.Task, e.Action, time.Duration(e.Took))
		}
	}
	return sc.Err()
}
