package logtail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/nodeagent/services"
)

// Daemons run as systemd units log to the journal, not to files: one
// journalctl --follow per unit reads it. The readers hand batches to the
// engine loop through a bounded channel, so consumers are still called
// from one goroutine only; a full channel holds the reader back, and
// journalctl with it, which loses nothing: the journal is the buffer.

const (
	defaultJournalctl    = "/usr/bin/journalctl"
	defaultSystemdRunDir = "/run/systemd/system"

	// maxJournalJSON caps one JSON record; a longer one is skipped
	// whole. It fits a MaxLine message even as an array of byte values.
	maxJournalJSON = 256 << 10
	// A batch is sent when journalctl has nothing more buffered or when
	// it holds this many entries or line bytes.
	journalBatchLines = 256
	journalBatchBytes = 256 << 10
	// journalQueue batches wait for the loop at most (per engine).
	journalQueue = 16
)

// journalRestart is the first wait before journalctl is started again;
// it doubles to journalRestartMax. Tests shorten it.
var (
	journalRestart    = time.Second
	journalRestartMax = 30 * time.Second
)

// journalEnv is journalctl's whole environment: no pager, no colour, and
// nothing of the agent's.
var journalEnv = []string{"LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}

// journal is one unit followed. cursor and stopped belong to the loop.
type journal struct {
	unit   string
	src    *Source
	cursor string // last one consumers accepted
	cancel context.CancelFunc
	done   chan struct{}
	// stopped: batches still queued are dropped, their lines are after
	// cursor and read again if the unit comes back.
	stopped bool
}

// journalBatch is what one reader hands the loop.
type journalBatch struct {
	j       *journal
	entries []Entry
	cursor  string // of the last record read, shipped or skipped
}

// journalAvailable: journalctl is installed and the node booted with
// systemd (the sd_booted(3) test).
func journalAvailable(journalctl, runDir string) bool {
	fi, err := os.Stat(runDir)
	if err != nil || !fi.IsDir() {
		return false
	}
	fi, err = os.Stat(journalctl)
	return err == nil && fi.Mode().IsRegular()
}

// scanJournals starts a reader for every unit without log files and stops
// those of units gone.
func (e *Engine) scanJournals(sts []services.Status, now time.Time) {
	if !e.journalOK {
		return
	}
	units := map[string]string{} // unit → service
	for _, st := range sts {
		if st.Unit != "" && len(st.LogFiles) == 0 {
			units[st.Unit] = st.Name
		}
	}
	for unit, j := range e.journals {
		if svc, ok := units[unit]; !ok || svc != j.src.Service {
			e.stopJournal(j)
			delete(e.journals, unit)
		}
	}
	for unit, svc := range units {
		if _, ok := e.journals[unit]; ok {
			continue
		}
		j := &journal{unit: unit, src: e.source(want{src: Source{Service: svc, Unit: unit}}), done: make(chan struct{})}
		var since time.Time
		if c, ok := e.cursors[unit]; ok {
			j.cursor = c
			delete(e.cursors, unit)
		} else if e.scanned {
			// Appeared while the agent runs (installed, enabled): its
			// start is news, like a file that appears later.
			since = e.lastScan
		}
		ctx, cancel := context.WithCancel(context.Background())
		j.cancel = cancel
		e.journals[unit] = j
		go e.readJournal(ctx, j, j.cursor, since)
	}
}

// stopJournal kills j's journalctl and waits for its reader.
func (e *Engine) stopJournal(j *journal) {
	j.cancel()
	<-j.done
	j.stopped = true
	if j.cursor != "" {
		e.cursors[j.unit] = j.cursor
		e.dirty = true
	}
}

// takeJournal hands a reader's batch to the consumers and only then moves
// the unit's cursor.
func (e *Engine) takeJournal(b journalBatch) {
	if b.j.stopped {
		return
	}
	if len(b.entries) > 0 {
		e.lines.WithLabelValues(b.j.src.Service).Add(float64(len(b.entries)))
		e.deliver(b.entries)
	}
	if b.cursor != "" && b.cursor != b.j.cursor {
		b.j.cursor = b.cursor
		e.dirty = true
	}
}

// journalArgs is journalctl's argument vector: after the cursor when
// there is one, else from since, else from now.
func journalArgs(unit, cursor string, since time.Time) []string {
	args := []string{
		"--follow", "--output=json",
		// The rest of each record is never read; fewer bytes to parse.
		"--output-fields=MESSAGE,PRIORITY",
		// Else a field over 4 KiB is null: a long message would be lost.
		"--all",
		"--unit=" + unit,
	}
	switch {
	case cursor != "":
		args = append(args, "--after-cursor="+cursor)
	case !since.IsZero():
		// With --since, --follow shows everything since, not 10 lines.
		args = append(args, "--since=@"+strconv.FormatInt(since.Unix(), 10))
	default:
		args = append(args, "--lines=0")
	}
	return args
}

// readJournal runs journalctl for j until ctx ends, again after a wait
// when it exits.
func (e *Engine) readJournal(ctx context.Context, j *journal, cursor string, since time.Time) {
	defer close(j.done)
	log := e.log.With("unit", j.unit)
	wait := journalRestart
	for {
		started := time.Now()
		read, stderr, err := e.runJournalctl(ctx, j, cursor, since)
		if ctx.Err() != nil {
			return
		}
		if msg := bytes.TrimSpace(stderr); len(msg) > 0 {
			err = errors.Join(err, errors.New(string(msg)))
		}
		switch {
		case read != "":
			cursor = read
		case cursor != "" && bytes.Contains(stderr, []byte("cursor")):
			// "Failed to seek to cursor" (damaged, or another journal's):
			// go on from the cursor's time instead, which loses nothing.
			since = cursorTime(cursor)
			if since.IsZero() {
				since = started
			}
			log.Warn("journalctl failed after a cursor; reading from its time", "err", err, "since", since)
			cursor = ""
		case cursor == "" && since.IsZero():
			// Nothing read from --lines=0: start where this run did.
			since = started
		}
		if time.Since(started) >= journalRestartMax {
			wait = journalRestart
		}
		log.Warn("journalctl exited; starting it again", "err", err, "after", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, journalRestartMax)
	}
}

// cursorTime is the realtime a journal cursor names (its t= field, hex
// microseconds), zero if it has none.
func cursorTime(cursor string) time.Time {
	for _, f := range strings.Split(cursor, ";") {
		if v, ok := strings.CutPrefix(f, "t="); ok {
			if us, err := strconv.ParseInt(v, 16, 64); err == nil && us > 0 {
				return time.UnixMicro(us)
			}
		}
	}
	return time.Time{}
}

// runJournalctl runs one journalctl until it exits or ctx ends and
// returns the cursor of the last record read and the end of its stderr.
func (e *Engine) runJournalctl(ctx context.Context, j *journal, cursor string, since time.Time) (last string, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, e.cfg.Journalctl, journalArgs(j.unit, cursor, since)...)
	cmd.Env = journalEnv
	errTail := &tailBuffer{max: 512}
	cmd.Stderr = errTail
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	last = e.readRecords(ctx, j, out)
	err = cmd.Wait()
	return last, errTail.bytes(), err
}

// readRecords parses journalctl's output into batches until it ends.
func (e *Engine) readRecords(ctx context.Context, j *journal, out io.Reader) (last string) {
	r := bufio.NewReaderSize(out, 64<<10)
	var (
		b    = journalBatch{j: j}
		size int
		long []byte
		skip bool
		sent string // cursor last handed over
	)
	send := func() bool {
		if len(b.entries) == 0 && last == sent {
			return true
		}
		b.cursor, sent = last, last
		select {
		case e.jch <- b:
		case <-ctx.Done():
			return false
		}
		b, size = journalBatch{j: j}, 0
		return true
	}
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skip {
				long = append(long, line...)
				if len(long) > maxJournalJSON {
					long, skip = long[:0], true
				}
			}
			continue
		}
		if len(long) > 0 {
			line = append(long, line...)
			long = long[:0]
		}
		if skip {
			skip = false
		} else if en, cur, ok := parseRecord(j.src, line); cur != "" {
			last = cur
			if ok {
				b.entries = append(b.entries, en)
				size += len(en.Line)
			}
		}
		if err != nil {
			send()
			return last
		}
		if r.Buffered() == 0 || len(b.entries) >= journalBatchLines || size >= journalBatchBytes {
			if !send() {
				return last
			}
		}
	}
}

// journalRecord is the part of journalctl's JSON that is read. A field
// is a string, an array of byte values when it is not UTF-8, an array of
// those when the record has it more than once, or null when too long.
type journalRecord struct {
	Message  json.RawMessage `json:"MESSAGE"`
	Priority json.RawMessage `json:"PRIORITY"`
	Realtime json.RawMessage `json:"__REALTIME_TIMESTAMP"`
	Cursor   json.RawMessage `json:"__CURSOR"`
}

// parseRecord reads one JSON line. ok is false for a record without a
// message; cursor is set whenever the record has one.
func parseRecord(src *Source, line []byte) (en Entry, cursor string, ok bool) {
	var rec journalRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		return Entry{}, "", false
	}
	cursor = string(fieldBytes(rec.Cursor))
	msg := fieldBytes(rec.Message)
	if msg == nil {
		return Entry{}, cursor, false
	}
	msg = bytes.TrimRight(msg, "\n")
	msg = msg[:min(len(msg), MaxLine)]
	en = Entry{Source: src, Time: time.Now(), Line: msg}
	if us, err := strconv.ParseInt(string(fieldBytes(rec.Realtime)), 10, 64); err == nil {
		en.Time = time.UnixMicro(us)
	}
	en.Level = priorityLevel(fieldBytes(rec.Priority))
	if en.Level == "" {
		en.Level = level(src, msg)
	}
	return en, cursor, true
}

// fieldBytes is a journal field's value, nil when absent or null. Of a
// field given more than once, the first value.
func fieldBytes(raw json.RawMessage) []byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil
		}
		return []byte(s)
	case '[':
		var vals []json.RawMessage
		if json.Unmarshal(raw, &vals) != nil || len(vals) == 0 {
			return nil
		}
		if v := bytes.TrimSpace(vals[0]); len(v) > 0 && (v[0] == '"' || v[0] == '[' || v[0] == 'n') {
			return fieldBytes(vals[0])
		}
		out := make([]byte, 0, len(vals))
		for _, v := range vals {
			n, err := strconv.ParseUint(string(v), 10, 8)
			if err != nil {
				return nil
			}
			out = append(out, byte(n))
		}
		return out
	}
	return nil
}

// priorityLevel maps syslog priorities to Loki's level names.
func priorityLevel(p []byte) string {
	if len(p) != 1 || p[0] < '0' || p[0] > '7' {
		return ""
	}
	switch n := p[0] - '0'; {
	case n <= 3:
		return "error"
	case n == 4:
		return "warn"
	case n <= 6:
		return "info"
	default:
		return "debug"
	}
}

// tailBuffer keeps the last max bytes written: journalctl's complaint.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.b)
}
