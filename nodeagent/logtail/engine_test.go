package logtail

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/services"
)

// collect is a consumer that keeps copies of every line by path.
type collect struct {
	mu    sync.Mutex
	lines map[string][]string
	srcs  map[string]Source
	lvl   map[string]string
}

func newCollect() *collect {
	return &collect{lines: map[string][]string{}, srcs: map[string]Source{}, lvl: map[string]string{}}
}

func (c *collect) Consume(batch []Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range batch {
		key := e.Source.Path
		if key == "" {
			key = e.Source.Service
		}
		c.lines[key] = append(c.lines[key], string(e.Line))
		c.srcs[key] = *e.Source
		c.lvl[string(e.Line)] = e.Level
	}
}

func (c *collect) get(key string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines[key])
}

// waitLines waits until key has n lines and checks they are want.
func (c *collect) wait(t *testing.T, key string, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.get(key)
		if len(got) >= len(want) || time.Now().After(deadline) {
			if !slices.Equal(got, want) {
				t.Fatalf("%s: got %d lines %q, want %d %q", key, len(got), trimList(got), len(want), trimList(want))
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func trimList(l []string) []string {
	if len(l) > 6 {
		return append(slices.Clone(l[:3]), append([]string{"..."}, l[len(l)-3:]...)...)
	}
	return l
}

type fixture struct {
	data, logs string
	svcFiles   []string
	reg        *prometheus.Registry
	// scanEvery is the engine's ScanInterval (default 10 ms).
	scanEvery time.Duration
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	f := &fixture{data: filepath.Join(dir, "data"), logs: filepath.Join(dir, "domains")}
	if err := os.MkdirAll(filepath.Join(f.logs, "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) start(t *testing.T, cs ...Consumer) *Engine {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	e, err := New(Config{
		DataDir:      f.data,
		DomainLogDir: f.logs,
		Services: func() []services.Status {
			return []services.Status{{Name: "pdns", LogFiles: f.svcFiles}}
		},
		Consumers:    cs,
		PollInterval: 5 * time.Millisecond,
		ScanInterval: cmp.Or(f.scanEvery, 10*time.Millisecond),
		SaveInterval: 5 * time.Millisecond,
		Registry:     f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() { e.Close() })
	// What exists now is followed from its end, what comes later from 0.
	<-e.scanned1
	return e
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func lines(prefix string, from, to int) (string, []string) {
	var b strings.Builder
	var l []string
	for i := from; i < to; i++ {
		s := fmt.Sprintf("%s %d", prefix, i)
		b.WriteString(s + "\n")
		l = append(l, s)
	}
	return b.String(), l
}

// settle gives the engine a few polls.
func settle() { time.Sleep(60 * time.Millisecond) }

func TestStartupFileFromEndNewFileFromStart(t *testing.T) {
	f := newFixture(t)
	old := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, old, "before the agent\n")
	c := newCollect()
	f.start(t, c)
	settle()
	appendFile(t, old, "after\n")
	c.wait(t, old, []string{"after"})

	later := filepath.Join(f.logs, "alice", "b.example.error.log")
	appendFile(t, later, "2026/01/01 00:00:00 [error] 1#1: first\n")
	c.wait(t, later, []string{"2026/01/01 00:00:00 [error] 1#1: first"})
	c.mu.Lock()
	src, lvl := c.srcs[later], c.lvl["2026/01/01 00:00:00 [error] 1#1: first"]
	c.mu.Unlock()
	if want := (Source{Path: later, Service: "nginx", Account: "alice", Domain: "b.example", Kind: "error"}); src != want || lvl != "error" {
		t.Fatalf("source %+v level %q, want %+v error", src, lvl, want)
	}
}

func TestPartialLineHeldUntilNewline(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	c := newCollect()
	f.start(t, c)
	settle()
	appendFile(t, p, "abc")
	settle()
	if got := c.get(p); len(got) != 0 {
		t.Fatalf("partial line delivered: %q", got)
	}
	appendFile(t, p, "def\nghi\n")
	c.wait(t, p, []string{"abcdef", "ghi"})
}

func TestLongLineCut(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	c := newCollect()
	f.start(t, c)
	settle()
	long := strings.Repeat("x", 3*MaxLine+100)
	appendFile(t, p, long[:MaxLine/2])
	settle()
	appendFile(t, p, long[MaxLine/2:]+"\nnext\n"+long[:MaxLine+5]+"\nlast\n")
	c.wait(t, p, []string{long[:MaxLine], "next", long[:MaxLine], "last"})
}

func TestRotationByRename(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, p, "")
	c := newCollect()
	f.start(t, c)
	settle()
	s1, want := lines("gen1", 0, 100)
	appendFile(t, p, s1+"unfinished")
	settle()
	// What the agent's rotateLogs does; nginx writes to the old file
	// until its reload.
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, "")
	s2, w2 := lines("late", 0, 10)
	appendFile(t, p+".1", " line\n"+s2)
	s3, w3 := lines("gen2", 0, 100)
	appendFile(t, p, s3)
	want = append(append(append(want, "unfinished line"), w2...), w3...)
	deadline := time.Now().Add(5 * time.Second)
	for len(c.get(p)) < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := c.get(p)
	// The two generations are read in the same polls; each is in order.
	var g1, g2 []string
	for _, l := range got {
		if strings.HasPrefix(l, "gen2") {
			g2 = append(g2, l)
		} else {
			g1 = append(g1, l)
		}
	}
	if !slices.Equal(g1, want[:111]) || !slices.Equal(g2, w3) {
		t.Fatalf("got %q", trimList(got))
	}
}

// rotate does what the agent's rotateLogs does: path.1 becomes path.2,
// path becomes path.1, and a new empty path is put in place.
func rotate(t *testing.T, path string) {
	t.Helper()
	for _, mv := range [][2]string{{path + ".1", path + ".2"}, {path, path + ".1"}} {
		if err := os.Rename(mv[0], mv[1]); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	appendFile(t, path, "")
}

// byPrefix splits lines by their first word, keeping each group's order.
func byPrefix(ls []string) map[string][]string {
	out := map[string][]string{}
	for _, l := range ls {
		k, _, _ := strings.Cut(l, " ")
		out[k] = append(out[k], l)
	}
	return out
}

// waitGenerations waits for want's lines on key, whatever the order
// between generations, each generation in order and exactly once.
func (c *collect) waitGenerations(t *testing.T, key string, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.get(key)) < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	settle() // and nothing more
	got, exp := byPrefix(c.get(key)), byPrefix(want)
	for k, w := range exp {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: generation %s: got %d lines %q, want %d", key, k, len(got[k]), trimList(got[k]), len(w))
		}
	}
	for k, g := range got {
		if exp[k] == nil {
			t.Errorf("%s: unexpected lines %q", key, trimList(g))
		}
	}
}

// A file rotated twice between two scans: the generation in the middle
// was never followed by path, and is found as path.1 by the inodes.
func TestRotatedTwiceBetweenScans(t *testing.T) {
	f := newFixture(t)
	f.scanEvery = 300 * time.Millisecond
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, p, "")
	c := newCollect()
	f.start(t, c)
	s1, w1 := lines("gen1", 0, 50)
	appendFile(t, p, s1)
	c.wait(t, p, w1)
	// Both rotations take microseconds: a scan between them is a
	// chance of about one in a thousand (and loses nothing either).
	rotate(t, p)
	s2, w2 := lines("gen2", 0, 50)
	appendFile(t, p, s2)
	rotate(t, p)
	s3, w3 := lines("gen3", 0, 50)
	appendFile(t, p, s3)
	c.waitGenerations(t, p, slices.Concat(w1, w2, w3))
}

// Rotated twice while the agent was down: the rest of the followed file
// (now path.2), the generation between (path.1) and the new file.
func TestRestartAfterTwoRotations(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, p, "")
	c := newCollect()
	e := f.start(t, c)
	settle()
	s1, w1 := lines("gen1", 0, 50)
	appendFile(t, p, s1)
	c.wait(t, p, w1)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	s1b, w1b := lines("gen1", 50, 60)
	appendFile(t, p, s1b)
	rotate(t, p)
	s2, w2 := lines("gen2", 0, 50)
	appendFile(t, p, s2)
	rotate(t, p)
	s3, w3 := lines("gen3", 0, 50)
	appendFile(t, p, s3)
	f.start(t, c)
	c.waitGenerations(t, p, slices.Concat(w1, w1b, w2, w3))
}

// A restart inside an overlong line whose cut was shipped: the rest of
// the line is skipped, not shipped as a line of its own.
func TestRestartInsideLongLine(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, p, "")
	c := newCollect()
	e := f.start(t, c)
	settle()
	long := strings.Repeat("y", 2*MaxLine)
	appendFile(t, p, "first\n"+long[:MaxLine+10])
	c.wait(t, p, []string{"first", long[:MaxLine]})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, long[MaxLine+10:]+"\nnext\n")
	f.start(t, c)
	c.wait(t, p, []string{"first", long[:MaxLine], "next"})
	settle()
	if got := c.get(p); len(got) != 3 {
		t.Fatalf("got %d lines, want 3: %q", len(got), trimList(got))
	}
}

func TestTruncation(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	appendFile(t, p, "")
	c := newCollect()
	f.start(t, c)
	settle()
	s, want := lines("a", 0, 50)
	appendFile(t, p, s)
	c.wait(t, p, want)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	settle()
	appendFile(t, p, "b\n")
	c.wait(t, p, append(want, "b"))
}

func TestRestartResumesWithoutLossOrDuplicates(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "a.example.access.log")
	q := filepath.Join(f.logs, "alice", "b.example.access.log")
	appendFile(t, p, "")
	appendFile(t, q, "")
	c := newCollect()
	e := f.start(t, c)
	settle()
	s, want := lines("one", 0, 100)
	appendFile(t, p, s+"half")
	appendFile(t, q, s)
	c.wait(t, p, want)
	c.wait(t, q, want)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// While the agent is down: p grows, q grows and is rotated.
	s2, w2 := lines("two", 0, 100)
	appendFile(t, p, " line\n"+s2)
	appendFile(t, q, s2)
	if err := os.Rename(q, q+".1"); err != nil {
		t.Fatal(err)
	}
	s3, w3 := lines("three", 0, 10)
	appendFile(t, q, s3)

	f.start(t, c)
	c.wait(t, p, append(append(want, "half line"), w2...))
	c.wait(t, q, append(append(want, w2...), w3...))
}

func TestManyFiles(t *testing.T) {
	f := newFixture(t)
	c := newCollect()
	f.start(t, c)
	settle()
	var paths []string
	for i := range 300 {
		for _, kind := range []string{"access", "error"} {
			p := filepath.Join(f.logs, fmt.Sprintf("u%d", i%7), fmt.Sprintf("d%d.example.%s.log", i, kind))
			os.MkdirAll(filepath.Dir(p), 0o755)
			paths = append(paths, p)
		}
	}
	s, want := lines("x", 0, 20)
	for _, p := range paths {
		appendFile(t, p, s)
	}
	for _, p := range paths {
		c.wait(t, p, want)
	}
	if got := f.lines(t, "nginx"); got != float64(len(paths)*20) {
		t.Fatalf("npanel_agent_log_lines_total{service=nginx} = %v, want %d", got, len(paths)*20)
	}
}

func (f *fixture) lines(t *testing.T, service string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "npanel_agent_log_lines_total" && m.GetLabel()[0].GetValue() == service {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestServiceLogFiles(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(filepath.Dir(f.logs), "pdns.log")
	f.svcFiles = []string{p}
	c := newCollect()
	f.start(t, c)
	settle()
	appendFile(t, p, "Dec 06 12:00:00 pdns[1]: hello\n")
	c.wait(t, p, []string{"Dec 06 12:00:00 pdns[1]: hello"})
	c.mu.Lock()
	src := c.srcs[p]
	c.mu.Unlock()
	if src.Service != "pdns" || src.Account != "" || src.Domain != "" {
		t.Fatalf("source %+v", src)
	}
}

func TestAgentLogRecords(t *testing.T) {
	f := newFixture(t)
	var out bytes.Buffer
	h := Handler(slog.NewTextHandler(&out, nil), nil)
	log := slog.New(h).With("node", "n1")
	log.Info("before the engine")
	c := newCollect()
	e := f.start(t, c)
	h.Attach(e)
	log.Warn("after", "k", "v")
	log.Debug("not enabled")
	deadline := time.Now().Add(5 * time.Second)
	for len(c.get("agent")) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := c.get("agent")
	if len(got) != 2 || !strings.Contains(got[0], "before the engine") || !strings.Contains(got[1], "level=WARN msg=after node=n1 k=v") {
		t.Fatalf("agent lines %q", got)
	}
	c.mu.Lock()
	lvl := c.lvl[got[1]]
	c.mu.Unlock()
	if lvl != "warn" {
		t.Fatalf("level %q", lvl)
	}
	if !strings.Contains(out.String(), "msg=after") {
		t.Fatal("next handler did not get the record")
	}
}

func TestAgentLogRecent(t *testing.T) {
	h := Handler(slog.NewTextHandler(io.Discard, nil), nil)
	log := slog.New(h)
	for i := range RingLines + 10 {
		log.Info("line", "i", i, "even", i%2 == 0)
	}
	got, trunc := h.Recent(time.Time{}, 3, "even=true")
	if len(got) != 3 || !trunc || !strings.Contains(got[2], fmt.Sprintf("i=%d ", RingLines+8)) || !strings.Contains(got[0], fmt.Sprintf("i=%d ", RingLines+4)) {
		t.Fatalf("Recent = %q %v", got, trunc)
	}
	got, trunc = h.Recent(time.Now().Add(time.Hour), 10, "")
	if len(got) != 0 || trunc {
		t.Fatalf("future since: %q %v", got, trunc)
	}
	got, trunc = h.Recent(time.Time{}, 5000, "")
	if len(got) != RingLines || !trunc {
		t.Fatalf("all: %d %v", len(got), trunc)
	}
}

func TestLevel(t *testing.T) {
	other := &Source{Service: "x"}
	for _, c := range []struct{ line, want string }{
		{"2026/12/06 12:00:00 [error] 12#12: *1 open() failed", "error"},
		{"2026/12/06 12:00:00 [warn] 12#12: conflicting server name", "warn"},
		{"2026/12/06 12:00:00 [crit] 12#12: x", "error"},
		{"2026/12/06 12:00:00 [notice] 12#12: signal process started", "info"},
		{"2026-12-06 12:00:00 0 [Warning] Aborted connection", "warn"},
		{"2026-12-06 12:00:00 0 [Note] mariadbd: ready", "info"},
		{"2026-12-06 12:00:00.000 UTC [12] ERROR:  relation does not exist", "error"},
		{"2026-12-06 12:00:00.000 UTC [12] LOG:  checkpoint starting", "info"},
		{"[06-Dec-2026 12:00:00] WARNING: [pool a] server reached pm.max_children", "warn"},
		{"time=2026-12-06T12:00:00Z level=ERROR msg=x", "error"},
		{"Dec 06 12:00:00 Done launching threads, ready to distribute questions", ""},
	} {
		if got := level(other, []byte(c.line)); got != c.want {
			t.Errorf("level(%q) = %q, want %q", c.line, got, c.want)
		}
	}
	if got := level(&Source{Kind: "access"}, []byte(`{"status":"500"}`)); got != "info" {
		t.Errorf("access level %q", got)
	}
}

func TestPositionsOfVanishedFilesForgotten(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.logs, "alice", "gone.example.access.log")
	appendFile(t, p, "")
	e := f.start(t, newCollect())
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(positionsPath(f.data)); !strings.Contains(string(b), "gone.example") {
		t.Fatalf("positions %s", b)
	}
	os.Remove(p)
	e = f.start(t, newCollect())
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(positionsPath(f.data)); strings.Contains(string(b), "gone.example") {
		t.Fatalf("positions of a removed file kept: %s", b)
	}
}

// counter counts lines per path.
type counter struct {
	n map[string]int
}

func (c *counter) Consume(batch []Entry) {
	for _, e := range batch {
		c.n[e.Source.Path]++
	}
}

// A burst in one log is read a bounded amount per poll: another log's
// line is not held up until the burst is through.
func TestBurstDoesNotStarveOtherFiles(t *testing.T) {
	f := newFixture(t)
	big := filepath.Join(f.logs, "alice", "big.example.access.log")
	small := filepath.Join(f.logs, "alice", "small.example.access.log")
	c := &counter{n: map[string]int{}}
	// Driven by hand, without the loop: one scan, then single polls.
	e, err := New(Config{DataDir: f.data, DomainLogDir: f.logs, Consumers: []Consumer{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	now := time.Now()
	e.scan(now)
	line := strings.Repeat("x", 99) + "\n"
	const lines = 160000 // 16 MB
	appendFile(t, big, strings.Repeat(line, lines))
	appendFile(t, small, "hello\n")
	e.scan(now)
	if behind := e.poll(now); !behind {
		t.Fatal("one poll read the whole burst")
	}
	if c.n[small] != 1 || c.n[big] > maxReadPerPoll/len(line) {
		t.Fatalf("after one poll: %d lines of the burst, %d of the other log", c.n[big], c.n[small])
	}
	for e.poll(now) {
	}
	if c.n[big] != lines {
		t.Fatalf("read %d of %d burst lines", c.n[big], lines)
	}
}
