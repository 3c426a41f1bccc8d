package logtail

import (
	"bytes"
	"cmp"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/services"
)

const (
	// MaxLine caps one line; the rest of a longer line is skipped.
	MaxLine = 16 << 10
	// blockSize is one read; maxReadPerPoll bounds the work on one file
	// in one poll so that a burst in one log cannot starve the others.
	blockSize      = 64 << 10
	maxReadPerPoll = 1 << 20
	// maxRecords bounds the agent's own records waiting for the next
	// poll; older ones are dropped first.
	maxRecords = 4096
)

// Config configures an Engine.
type Config struct {
	// DataDir holds logtail/positions.json.
	DataDir string
	// DomainLogDir holds <user>/<domain>.{access,error}.log; "" follows none.
	DomainLogDir string
	// Services lists the daemons whose Status.LogFiles are followed, and
	// whose journal is when they have a Unit and no LogFiles.
	Services func() []services.Status
	// Journalctl (default /usr/bin/journalctl) reads the journal where
	// SystemdRunDir (default /run/systemd/system) says the node booted
	// with systemd; without either no journal is followed.
	Journalctl    string
	SystemdRunDir string
	// Consumers receive every new line, in turn, synchronously.
	Consumers []Consumer
	// PollInterval (default 1 s) is how often followed files are checked
	// for new bytes; ScanInterval (default 5 s) how often the set of files
	// is listed again and rotation is looked for; SaveInterval (default
	// 5 s) how often positions are persisted at most.
	PollInterval time.Duration
	ScanInterval time.Duration
	SaveInterval time.Duration
	// Logger receives the engine's own troubles; nil discards them.
	Logger *slog.Logger
	// Registry receives npanel_agent_log_lines_total; nil registers none.
	Registry prometheus.Registerer
}

// tailed is one open file.
type tailed struct {
	src     *Source
	f       *os.File
	ino     uint64
	off     int64  // bytes read
	partial []byte // read bytes of an unfinished line (off - len(partial) is acknowledged)
	// skipping is set after an overlong line was cut, until its newline.
	skipping bool
	// lastGrowth is when a rotated-away file last grew; it is closed
	// once it has been quiet for a while (nginx writes to it until its
	// reload).
	lastGrowth time.Time
	lines      prometheus.Counter
}

func (t *tailed) acked() int64 { return t.off - int64(len(t.partial)) }

func (t *tailed) position(path string) position {
	return position{Path: path, Inode: t.ino, Offset: t.acked(), Skipping: t.skipping}
}

// Engine follows the node's log files and hands new lines to consumers.
// Its methods other than Start and Close are for the loop goroutine.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	lines *prometheus.CounterVec

	files    map[string]*tailed // current file of each path
	draining []*tailed          // rotated away, read until quiet
	saved    map[string][]position
	scanned  bool // a scan ran: files seen later start at 0
	dirty    bool
	lastSave time.Time
	block    []byte
	entries  []Entry
	sources  map[Source]*Source
	lastScan time.Time

	journalOK bool
	journals  map[string]*journal // by unit
	cursors   map[string]string   // saved, of units not followed now
	jch       chan journalBatch

	recMu    sync.Mutex
	records  []Entry
	agentSrc *Source

	stop      chan struct{}
	done      chan struct{}
	scanned1  chan struct{} // closed after the first scan (tests wait on it)
	startOnce sync.Once
	closeOnce sync.Once
}

// New loads the saved positions. Start begins following.
func New(cfg Config) (*Engine, error) {
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Second)
	cfg.ScanInterval = cmp.Or(cfg.ScanInterval, 5*time.Second)
	cfg.SaveInterval = cmp.Or(cfg.SaveInterval, 5*time.Second)
	cfg.Journalctl = cmp.Or(cfg.Journalctl, defaultJournalctl)
	cfg.SystemdRunDir = cmp.Or(cfg.SystemdRunDir, defaultSystemdRunDir)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg: cfg,
		log: cfg.Logger.With("component", "logtail"),
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "npanel_agent_log_lines_total",
			Help: "Log lines read by the agent's tail engine, by service.",
		}, []string{"service"}),
		files:    map[string]*tailed{},
		sources:  map[Source]*Source{},
		journals: map[string]*journal{},
		jch:      make(chan journalBatch, journalQueue),
		block:    make([]byte, blockSize),
		agentSrc: &Source{Service: "agent"},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		scanned1: make(chan struct{}),
	}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(e.lines); err != nil {
			return nil, err
		}
	}
	if cfg.DataDir != "" {
		// Only a crash mid-save leaves one; no writer runs yet.
		_ = atomicfile.RemoveTemps(filepath.Dir(positionsPath(cfg.DataDir)))
	}
	saved, cursors, err := loadPositions(cfg.DataDir)
	if err != nil {
		// A damaged file costs a re-read from the ends, not the agent.
		e.log.Warn("log positions unreadable; starting at the ends of the logs", "err", err)
	}
	e.saved, e.cursors = saved, cursors
	e.journalOK = journalAvailable(cfg.Journalctl, cfg.SystemdRunDir)
	if !e.journalOK {
		e.log.Debug("no systemd journal to follow", "journalctl", cfg.Journalctl, "systemd", cfg.SystemdRunDir)
	}
	return e, nil
}

// Start begins following in a goroutine of its own.
func (e *Engine) Start() {
	e.startOnce.Do(func() { go e.loop() })
}

// Close stops following and saves the positions reached. It waits for a
// Consume call in progress.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.stop)
		// Never started: nothing to wait for.
		e.startOnce.Do(func() { close(e.done) })
		<-e.done
		// The loop is gone: its state is ours.
		for unit, j := range e.journals {
			e.stopJournal(j)
			delete(e.journals, unit)
		}
		err = e.savePositions()
		for _, t := range e.files {
			t.f.Close()
		}
		for _, t := range e.draining {
			t.f.Close()
		}
	})
	return err
}

func (e *Engine) loop() {
	defer close(e.done)
	e.scan(time.Now())
	close(e.scanned1)
	lastScan := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-e.stop:
			return
		case b := <-e.jch:
			e.takeJournal(b)
			continue
		case <-timer.C:
		}
		now := time.Now()
		if now.Sub(lastScan) >= e.cfg.ScanInterval {
			e.scan(now)
			lastScan = now
		}
		behind := e.poll(now)
		if e.dirty && now.Sub(e.lastSave) >= e.cfg.SaveInterval {
			if err := e.savePositions(); err != nil {
				e.log.Warn("save log positions", "err", err)
			}
		}
		next := e.cfg.PollInterval
		if behind {
			// More is waiting than one poll reads: come back soon, but
			// yield the core in between.
			next = 10 * time.Millisecond
		}
		timer.Reset(next)
	}
}

// poll hands out the agent's records and the new lines of every file. It
// reports whether a file has more bytes than one poll reads.
func (e *Engine) poll(now time.Time) (behind bool) {
	e.recMu.Lock()
	recs := e.records
	e.records = nil
	e.recMu.Unlock()
	if len(recs) > 0 {
		e.lines.WithLabelValues("agent").Add(float64(len(recs)))
		e.deliver(recs)
	}
	kept := e.draining[:0]
	for _, t := range e.draining {
		before := t.off
		if e.read(t, now) {
			behind = true
		}
		if t.off != before {
			t.lastGrowth = now
		}
		if now.Sub(t.lastGrowth) < e.drainQuiet() {
			kept = append(kept, t)
			continue
		}
		// The rotated file is done: its unfinished last line ends here.
		if len(t.partial) > 0 && !t.skipping {
			e.entries = append(e.entries[:0], Entry{Source: t.src, Time: now, Line: t.partial, Level: level(t.src, t.partial)})
			t.lines.Inc()
			e.deliver(e.entries)
		}
		t.f.Close()
		e.dirty = true
	}
	clear(e.draining[len(kept):])
	e.draining = kept
	for _, t := range e.files {
		if e.read(t, now) {
			behind = true
		}
	}
	return behind
}

// drainQuiet is how long a rotated-away file is kept open after its last
// growth: nginx workers still serving a long request when the reload came
// log it to the old file when it ends, minutes later.
func (e *Engine) drainQuiet() time.Duration { return max(e.cfg.ScanInterval, 10*time.Minute) }

// read hands out t's new complete lines, at most maxReadPerPoll bytes.
func (e *Engine) read(t *tailed, now time.Time) (more bool) {
	fi, err := t.f.Stat()
	if err != nil {
		return false
	}
	size := fi.Size()
	if size < t.acked() {
		// Truncated in place: what is there now is new.
		t.off, t.partial, t.skipping = 0, t.partial[:0], false
		e.dirty = true
	} else if size < t.off {
		t.off, t.partial = t.acked(), t.partial[:0]
	}
	budget := int64(maxReadPerPoll)
	for t.off < size && budget > 0 {
		n := min(int64(len(e.block)), size-t.off, budget)
		k, err := t.f.ReadAt(e.block[:n], t.off)
		if k == 0 {
			if err != nil && !errors.Is(err, fs.ErrClosed) {
				e.log.Debug("read log", "path", t.src.Path, "err", err)
			}
			break
		}
		t.off += int64(k)
		budget -= int64(k)
		e.split(t, e.block[:k], now)
		e.dirty = true
	}
	return t.off < size
}

// split hands out the complete lines of b (the bytes following t's
// partial line) and keeps the rest as the partial line.
func (e *Engine) split(t *tailed, b []byte, now time.Time) {
	e.entries = e.entries[:0]
	usedPartial := false
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		seg := b[:i]
		b = b[i+1:]
		if t.skipping {
			t.skipping = false
			continue
		}
		if len(t.partial) > 0 && !usedPartial {
			t.partial = append(t.partial, seg[:min(len(seg), max(0, MaxLine-len(t.partial)))]...)
			seg, usedPartial = t.partial, true
		}
		seg = seg[:min(len(seg), MaxLine)]
		e.entries = append(e.entries, Entry{Source: t.src, Time: now, Line: seg, Level: level(t.src, seg)})
	}
	if len(e.entries) > 0 {
		t.lines.Add(float64(len(e.entries)))
		e.deliver(e.entries)
	}
	if usedPartial {
		t.partial = t.partial[:0]
	}
	if len(b) == 0 || t.skipping {
		return
	}
	t.partial = append(t.partial, b...)
	if len(t.partial) >= MaxLine {
		// Held no longer: an unbounded line must not grow memory.
		cut := t.partial[:MaxLine]
		e.entries = append(e.entries[:0], Entry{Source: t.src, Time: now, Line: cut, Level: level(t.src, cut)})
		t.lines.Inc()
		e.deliver(e.entries)
		t.partial, t.skipping = t.partial[:0], true
	}
}

func (e *Engine) deliver(batch []Entry) {
	for _, c := range e.cfg.Consumers {
		c.Consume(batch)
	}
}

// want is one file the node has now.
type want struct {
	path string
	src  Source
}

// scan lists the files to follow, opens new ones, notices rotation and
// closes those that went away.
func (e *Engine) scan(now time.Time) {
	var ws []want
	if dir := e.cfg.DomainLogDir; dir != "" {
		users, _ := os.ReadDir(dir)
		for _, u := range users {
			if !u.IsDir() || strings.HasPrefix(u.Name(), ".") {
				continue
			}
			ents, _ := os.ReadDir(filepath.Join(dir, u.Name()))
			for _, f := range ents {
				name := f.Name()
				if !f.Type().IsRegular() {
					continue
				}
				for _, kind := range []string{"access", "error"} {
					if d, ok := strings.CutSuffix(name, "."+kind+".log"); ok && d != "" {
						ws = append(ws, want{filepath.Join(dir, u.Name(), name),
							Source{Service: "nginx", Account: u.Name(), Domain: d, Kind: kind}})
					}
				}
			}
		}
	}
	if e.cfg.Services != nil {
		sts := e.cfg.Services()
		for _, st := range sts {
			for _, p := range st.LogFiles {
				ws = append(ws, want{p, Source{Service: st.Name}})
			}
		}
		e.scanJournals(sts, now)
	}
	seen := make(map[string]bool, len(ws))
	for _, w := range ws {
		if seen[w.path] {
			continue
		}
		seen[w.path] = true
		e.follow(w, now)
	}
	for p, t := range e.files {
		if !seen[p] {
			// Gone from the node's list (domain deleted): read what is
			// left, then close.
			delete(e.files, p)
			t.lastGrowth = now
			e.draining = append(e.draining, t)
			e.dirty = true
		}
	}
	if !e.scanned {
		// Positions of files gone while the agent was down would be
		// kept forever; one that comes back is new and read from 0.
		for p := range e.saved {
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				delete(e.saved, p)
			}
		}
	}
	e.scanned, e.lastScan = true, now
}

// follow opens w.path if it is new or was rotated.
func (e *Engine) follow(w want, now time.Time) {
	fi, err := os.Stat(w.path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	ino := inode(fi)
	cur := e.files[w.path]
	if cur != nil && cur.ino == ino {
		return
	}
	f, err := os.OpenFile(w.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		e.log.Debug("open log", "path", w.path, "err", err)
		return
	}
	ofi, err := f.Stat()
	if err != nil || inode(ofi) != ino {
		// Replaced between stat and open: the next scan takes it.
		f.Close()
		return
	}
	src := e.source(w)
	t := &tailed{src: src, f: f, ino: ino, lines: e.lines.WithLabelValues(src.Service)}
	switch {
	case cur != nil:
		// Rotated: the old file is read to its end, the new one from 0,
		// and so are generations that came and went between two scans.
		cur.lastGrowth = now
		e.draining = append(e.draining, cur)
		e.drainMissed(w, generations(w.path), map[uint64]bool{cur.ino: true, ino: true}, now)
	default:
		if p, ok := e.takeSaved(w.path, ino); ok {
			t.off, t.skipping = min(p.Offset, ofi.Size()), p.Skipping
		} else if !e.scanned && len(e.saved[w.path]) == 0 {
			// Present before this start and never followed: its past
			// was never ours to ship. (A file replacing a followed
			// one is new: read from 0.)
			t.off = ofi.Size()
		}
		// Saved positions of other generations: the file rotated while
		// the agent was down; read the rest of the old ones too.
		if ps := e.saved[w.path]; len(ps) > 0 {
			gens := generations(w.path)
			known := map[uint64]bool{ino: true}
			for _, p := range ps {
				known[p.Inode] = true
				if i := slices.IndexFunc(gens, func(g generation) bool { return g.ino == p.Inode }); i >= 0 {
					e.drainGeneration(w, gens[i].name, p, now)
				}
			}
			e.drainMissed(w, gens, known, now)
		}
		delete(e.saved, w.path)
	}
	e.files[w.path] = t
	e.dirty = true
}

// maxGenerations bounds the rotated generations (path.1, path.2, …)
// looked through for a followed file's inode.
const maxGenerations = 9

// generation is path.N as found now.
type generation struct {
	name string
	ino  uint64
}

// generations lists path.1, path.2, … up to the first missing one.
func generations(path string) []generation {
	var out []generation
	for i := 1; i <= maxGenerations; i++ {
		name := path + "." + strconv.Itoa(i)
		fi, err := os.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			break
		}
		out = append(out, generation{name, inode(fi)})
	}
	return out
}

// drainMissed reads from 0 the generations gens newer than the newest one
// followed (known holds the inodes followed, current included): when
// rotation shifted a followed file to path.N, path.1 … path.N-1 were
// written and rotated away unseen. With no followed file among the
// generations nothing can be told apart, and nothing is read.
func (e *Engine) drainMissed(w want, gens []generation, known map[uint64]bool, now time.Time) {
	newest := slices.IndexFunc(gens, func(g generation) bool { return known[g.ino] })
	for i := newest - 1; i >= 0; i-- { // oldest first
		if !slices.ContainsFunc(e.draining, func(t *tailed) bool { return t.ino == gens[i].ino }) {
			e.drainGeneration(w, gens[i].name, position{Inode: gens[i].ino}, now)
		}
	}
}

// drainGeneration opens name, if it still is inode p.Inode, and reads it
// to its end from p.
func (e *Engine) drainGeneration(w want, name string, p position, now time.Time) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	fi, err := f.Stat()
	if err != nil || inode(fi) != p.Inode || fi.Size() < p.Offset {
		f.Close()
		return
	}
	src := e.source(w)
	e.draining = append(e.draining, &tailed{src: src, f: f, ino: p.Inode, off: p.Offset, skipping: p.Skipping,
		lastGrowth: now, lines: e.lines.WithLabelValues(src.Service)})
}

func (e *Engine) takeSaved(path string, ino uint64) (position, bool) {
	ps := e.saved[path]
	for i, p := range ps {
		if p.Inode == ino {
			e.saved[path] = append(ps[:i:i], ps[i+1:]...)
			return p, true
		}
	}
	return position{}, false
}

// source interns w's labels so that consumers may key on the pointer.
func (e *Engine) source(w want) *Source {
	k := w.src
	k.Path = w.path
	if s, ok := e.sources[k]; ok {
		return s
	}
	s := &k
	e.sources[k] = s
	return s
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// addRecord queues one of the agent's own records for the next poll.
func (e *Engine) addRecord(en Entry) {
	en.Source = e.agentSrc
	e.recMu.Lock()
	if len(e.records) >= maxRecords {
		// The oldest quarter goes: one copy per many records.
		e.records = append(e.records[:0], e.records[maxRecords/4:]...)
	}
	e.records = append(e.records, en)
	e.recMu.Unlock()
}
