package logtail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/services"
)

// fakeJournalEnv names the directory of the fake journal; the test binary
// run with journalctl's arguments is the fake (see TestMain).
const fakeJournalEnv = "NPANEL_FAKE_JOURNAL"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "--follow" {
		os.Exit(fakeJournalctl(os.Getenv(fakeJournalEnv), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeJournalctl serves DIR/UNIT.jsonl as the unit's journal: it appends
// its pid and argv to DIR/UNIT.argv, prints the records after the cursor
// (or those appended from now on with --lines=0, or all with --since),
// then follows the file until killed, or exits 3 once DIR/UNIT.exit
// exists.
func fakeJournalctl(dir string, args []string) int {
	var unit, cursor string
	fromNow := false
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--unit="):
			unit = strings.TrimPrefix(a, "--unit=")
		case strings.HasPrefix(a, "--after-cursor="):
			cursor = strings.TrimPrefix(a, "--after-cursor=")
		case a == "--lines=0":
			fromNow = true
		}
	}
	if dir == "" || unit == "" {
		fmt.Fprintln(os.Stderr, "fake journalctl: no directory or unit")
		return 2
	}
	base := filepath.Join(dir, unit)
	f, err := os.OpenFile(base+".argv", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 2
	}
	fmt.Fprintf(f, "%d %s\n", os.Getpid(), strings.Join(args, " "))
	f.Close()
	records := func() []string {
		b, _ := os.ReadFile(base + ".jsonl")
		return strings.SplitAfter(string(b), "\n")[:strings.Count(string(b), "\n")]
	}
	next := 0
	switch {
	case fromNow:
		next = len(records())
	case cursor != "":
		next = -1
		for i, r := range records() {
			var rec struct {
				Cursor string `json:"__CURSOR"`
			}
			if json.Unmarshal([]byte(r), &rec) == nil && rec.Cursor == cursor {
				next = i + 1
			}
		}
		if next < 0 {
			fmt.Fprintln(os.Stderr, "Failed to seek to cursor: Invalid argument")
			return 1
		}
	}
	for {
		rs := records()
		for ; next < len(rs); next++ {
			os.Stdout.WriteString(rs[next])
		}
		if _, err := os.Stat(base + ".exit"); err == nil {
			return 3
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// journalRec is one record as journalctl --output=json prints it; msg is
// a string, a []int of byte values or nil.
func journalRec(t *testing.T, cursor string, msg any, prio string, at time.Time) string {
	t.Helper()
	m := map[string]any{"__CURSOR": cursor, "MESSAGE": msg, "__REALTIME_TIMESTAMP": strconv.FormatInt(at.UnixMicro(), 10)}
	if prio != "" {
		m["PRIORITY"] = prio
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// entries is a consumer that keeps copies of journal entries.
type entries struct {
	mu  sync.Mutex
	got []Entry
}

func (c *entries) Consume(batch []Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range batch {
		if e.Source.Unit != "" {
			e.Line = bytes.Clone(e.Line)
			c.got = append(c.got, e)
		}
	}
}

func (c *entries) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var l []string
	for _, e := range c.got {
		l = append(l, string(e.Line))
	}
	return l
}

func (c *entries) wait(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.lines()
		if len(got) >= len(want) || time.Now().After(deadline) {
			if !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// journalFixture is an engine following fake units.
type journalFixture struct {
	dir, data string
	mu        sync.Mutex
	units     []services.Status
	reg       *prometheus.Registry
}

func newJournalFixture(t *testing.T, units ...services.Status) *journalFixture {
	f := &journalFixture{dir: t.TempDir(), data: filepath.Join(t.TempDir(), "data"), units: units}
	old, oldRestart := journalEnv, journalRestart
	journalEnv = append(slices.Clone(journalEnv), fakeJournalEnv+"="+f.dir)
	journalRestart = 20 * time.Millisecond
	// Registered first, run last: after every engine closed.
	t.Cleanup(func() { journalEnv, journalRestart = old, oldRestart })
	return f
}

func (f *journalFixture) setUnits(units ...services.Status) {
	f.mu.Lock()
	f.units = units
	f.mu.Unlock()
}

func (f *journalFixture) start(t *testing.T, c Consumer) *Engine {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	e, err := New(Config{
		DataDir: f.data,
		Services: func() []services.Status {
			f.mu.Lock()
			defer f.mu.Unlock()
			return slices.Clone(f.units)
		},
		Journalctl:    os.Args[0],
		SystemdRunDir: f.dir,
		Consumers:     []Consumer{c},
		PollInterval:  5 * time.Millisecond,
		ScanInterval:  10 * time.Millisecond,
		SaveInterval:  5 * time.Millisecond,
		Registry:      f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() { e.Close() })
	<-e.scanned1
	return e
}

func (f *journalFixture) append(t *testing.T, unit string, recs ...string) {
	t.Helper()
	appendFile(t, filepath.Join(f.dir, unit+".jsonl"), strings.Join(recs, ""))
}

// runs waits for n journalctl runs of unit and returns their pids and argv.
func (f *journalFixture) runs(t *testing.T, unit string, n int) (pids []int, argv []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(f.dir, unit+".argv"))
		pids, argv = nil, nil
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			pid, args, ok := strings.Cut(l, " ")
			if !ok {
				continue
			}
			p, _ := strconv.Atoi(pid)
			pids, argv = append(pids, p), append(argv, args)
		}
		if len(argv) >= n {
			return pids, argv
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d journalctl runs, want %d: %q", unit, len(argv), n, argv)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// savedCursor is unit's cursor in positions.json.
func (f *journalFixture) savedCursor(unit string) string {
	b, _ := os.ReadFile(positionsPath(f.data))
	var pf positionsFile
	_ = json.Unmarshal(b, &pf)
	for _, j := range pf.Journals {
		if j.Unit == unit {
			return j.Cursor
		}
	}
	return ""
}

func (f *journalFixture) waitCursor(t *testing.T, unit, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.savedCursor(unit) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: saved cursor %q, want %q", unit, f.savedCursor(unit), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJournalEntries(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"},
		// Has log files: read from those, not the journal.
		services.Status{Name: "nginx", Unit: "nginx.service", LogFiles: []string{filepath.Join(t.TempDir(), "x.log")}})
	f.append(t, "pdns.service", journalRec(t, "c0", "before the agent", "6", time.Now()))
	c := &entries{}
	f.start(t, c)
	_, argv := f.runs(t, "pdns.service", 1)
	want := "--follow --output=json --output-fields=MESSAGE,PRIORITY --all --unit=pdns.service --lines=0"
	if argv[0] != want {
		t.Fatalf("argv %q, want %q", argv[0], want)
	}
	at := time.Date(2026, 12, 6, 12, 0, 0, 123456000, time.UTC)
	long := strings.Repeat("x", MaxLine+100)
	f.append(t, "pdns.service",
		journalRec(t, "c1", "emergency", "0", at),
		journalRec(t, "c2", "failed", "3", at.Add(time.Microsecond)),
		journalRec(t, "c3", "careful", "4", at),
		journalRec(t, "c4", "notice", "5", at),
		journalRec(t, "c5", "hello", "6", at),
		journalRec(t, "c6", "details", "7", at),
		journalRec(t, "c7", []int{'b', 'a', 'd', 0xff, '!'}, "6", at),
		journalRec(t, "c8", nil, "6", at),
		journalRec(t, "c9", "[error] no priority", "", at),
		journalRec(t, "c10", long, "6", at),
		"not json\n",
		journalRec(t, "c11", "last\n", "6", at),
	)
	c.wait(t, []string{"emergency", "failed", "careful", "notice", "hello", "details", "bad\xff!",
		"[error] no priority", long[:MaxLine], "last"})
	c.mu.Lock()
	got := slices.Clone(c.got)
	c.mu.Unlock()
	wantLevels := []string{"error", "error", "warn", "info", "info", "debug", "info", "error", "info", "info"}
	for i, e := range got {
		if e.Level != wantLevels[i] {
			t.Errorf("%q: level %q, want %q", e.Line[:min(len(e.Line), 20)], e.Level, wantLevels[i])
		}
		if *e.Source != (Source{Service: "pdns", Unit: "pdns.service"}) {
			t.Errorf("source %+v", *e.Source)
		}
	}
	if !got[0].Time.Equal(at) || !got[1].Time.Equal(at.Add(time.Microsecond)) {
		t.Errorf("times %v %v, want %v and 1µs later", got[0].Time, got[1].Time, at)
	}
	f.waitCursor(t, "pdns.service", "c11")
	if n := countLines(t, f.reg, "pdns"); n != 10 {
		t.Errorf("npanel_agent_log_lines_total{service=pdns} = %v, want 10", n)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "nginx.service.argv")); err == nil {
		t.Error("journalctl ran for a unit with log files")
	}
}

func countLines(t *testing.T, reg *prometheus.Registry, service string) float64 {
	t.Helper()
	return (&fixture{reg: reg}).lines(t, service)
}

func TestJournalCursorResumesAfterRestart(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"})
	c := &entries{}
	e := f.start(t, c)
	f.runs(t, "pdns.service", 1)
	now := time.Now()
	f.append(t, "pdns.service", journalRec(t, "c1", "one", "6", now), journalRec(t, "c2", "two", "6", now))
	c.wait(t, []string{"one", "two"})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.savedCursor("pdns.service"); got != "c2" {
		t.Fatalf("saved cursor %q, want c2", got)
	}
	// Logged while the agent is down.
	f.append(t, "pdns.service", journalRec(t, "c3", "three", "6", now))
	f.start(t, c)
	_, argv := f.runs(t, "pdns.service", 2)
	if !strings.HasSuffix(argv[1], " --after-cursor=c2") || strings.Contains(argv[1], "--lines") {
		t.Fatalf("second run %q, want --after-cursor=c2", argv[1])
	}
	f.append(t, "pdns.service", journalRec(t, "c4", "four", "6", now))
	c.wait(t, []string{"one", "two", "three", "four"})
	f.waitCursor(t, "pdns.service", "c4")
}

func alive(pid int) bool {
	// A zombie still answers: only a reaped process is ESRCH.
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestJournalUnitGoneStopsItsProcess(t *testing.T) {
	pdns := services.Status{Name: "pdns", Unit: "pdns.service"}
	f := newJournalFixture(t, pdns)
	c := &entries{}
	f.start(t, c)
	pids, _ := f.runs(t, "pdns.service", 1)
	f.append(t, "pdns.service", journalRec(t, "c1", "one", "6", time.Now()))
	c.wait(t, []string{"one"})
	if !alive(pids[0]) {
		t.Fatal("journalctl not running")
	}
	f.setUnits()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pids[0]) {
		if time.Now().After(deadline) {
			t.Fatal("journalctl of a unit gone still runs (or was never reaped)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Logged while not followed, read when the unit is back.
	f.append(t, "pdns.service", journalRec(t, "c2", "two", "6", time.Now()))
	settle()
	f.setUnits(pdns, services.Status{Name: "mariadb", Unit: "mariadb.service"})
	_, argv := f.runs(t, "pdns.service", 2)
	if !strings.HasSuffix(argv[1], " --after-cursor=c1") {
		t.Fatalf("run after the unit came back %q, want --after-cursor=c1", argv[1])
	}
	c.wait(t, []string{"one", "two"})
	// A unit new while the agent runs is read from the previous scan on.
	_, argv = f.runs(t, "mariadb.service", 1)
	if !strings.Contains(argv[0], " --since=@") {
		t.Fatalf("new unit's run %q, want --since", argv[0])
	}
}

func TestJournalctlExitRestarts(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"})
	exit := filepath.Join(f.dir, "pdns.service.exit")
	appendFile(t, exit, "")
	c := &entries{}
	f.start(t, c)
	f.runs(t, "pdns.service", 1)
	f.append(t, "pdns.service", journalRec(t, "c1", "one", "6", time.Now()))
	// The runs after the first see "one" and exit at once.
	_, argv := f.runs(t, "pdns.service", 3)
	if strings.Contains(argv[1], "--lines=0") || !strings.Contains(argv[1], "--since=@") {
		t.Fatalf("restart without a cursor %q, want --since", argv[1])
	}
	if err := os.Remove(exit); err != nil {
		t.Fatal(err)
	}
	f.append(t, "pdns.service", journalRec(t, "c2", "two", "6", time.Now()))
	c.wait(t, []string{"one", "two"})
	_, argv = f.runs(t, "pdns.service", 3)
	if last := argv[len(argv)-1]; !strings.HasSuffix(last, " --after-cursor=c1") && !strings.HasSuffix(last, " --after-cursor=c2") {
		t.Fatalf("restart after a record %q, want --after-cursor", last)
	}
}

func TestJournalCursorRefused(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"})
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	// A cursor the fake does not know; its t= field says when.
	cur := fmt.Sprintf("s=abc;i=1;b=def;m=1;t=%x;x=0", at.UnixMicro())
	b, _ := json.Marshal(positionsFile{Journals: []journalPosition{{"pdns.service", cur}}})
	if err := os.MkdirAll(filepath.Dir(positionsPath(f.data)), 0o700); err != nil {
		t.Fatal(err)
	}
	appendFile(t, positionsPath(f.data), string(b))
	c := &entries{}
	f.start(t, c)
	_, argv := f.runs(t, "pdns.service", 2)
	if want := fmt.Sprintf(" --since=@%d", at.Unix()); !strings.HasSuffix(argv[1], want) {
		t.Fatalf("run after a refused cursor %q, want %q", argv[1], want)
	}
}

func TestJournalUnavailable(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"})
	e, err := New(Config{
		DataDir:       f.data,
		Services:      func() []services.Status { return f.units },
		Journalctl:    os.Args[0],
		SystemdRunDir: filepath.Join(f.dir, "no-systemd"),
		ScanInterval:  10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	defer e.Close()
	settle()
	if _, err := os.Stat(filepath.Join(f.dir, "pdns.service.argv")); err == nil {
		t.Fatal("journalctl ran on a node without systemd")
	}
	if journalAvailable(filepath.Join(f.dir, "journalctl"), f.dir) {
		t.Fatal("available without journalctl")
	}
}

func TestFieldBytes(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want []byte
	}{
		{`"hi"`, []byte("hi")},
		{`[104,105,255]`, []byte("hi\xff")},
		{`["first","second"]`, []byte("first")},
		{`[[104,255],"second"]`, []byte("h\xff")},
		{`null`, nil},
		{``, nil},
		{`[300]`, nil},
		{`12`, nil},
	} {
		if got := fieldBytes(json.RawMessage(tc.raw)); !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("fieldBytes(%s) = %q, want %q", tc.raw, got, tc.want)
		}
	}
	if got := cursorTime("s=1;i=2;b=3;m=4;t=5f1e2d3c4b5a6;x=7"); got.UnixMicro() != 0x5f1e2d3c4b5a6 {
		t.Errorf("cursorTime = %v", got)
	}
	if !cursorTime("garbage").IsZero() {
		t.Error("cursorTime of garbage not zero")
	}
}

func TestJournalCloseLeavesNothing(t *testing.T) {
	f := newJournalFixture(t, services.Status{Name: "pdns", Unit: "pdns.service"},
		services.Status{Name: "mariadb", Unit: "mariadb.service"})
	c := &entries{}
	e := f.start(t, c)
	p1, _ := f.runs(t, "pdns.service", 1)
	p2, _ := f.runs(t, "mariadb.service", 1)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{p1[0], p2[0]} {
		if alive(pid) {
			t.Errorf("journalctl %d still there after Close", pid)
		}
	}
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
	if strings.Contains(buf.String(), "readJournal") || strings.Contains(buf.String(), "os/exec") {
		t.Errorf("goroutines left after Close:\n%s", buf.String())
	}
}
