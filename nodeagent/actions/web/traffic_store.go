package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

// The traffic store keeps hourly buckets per domain, one file per UTC day
// (DIR/2026-12-06.json), written whole and atomically at most once a
// minute and when the agent stops, trafficKeepDays days kept. The days
// lines arrived for since the last write are in memory (today's always,
// loaded again at start so that a restart goes on counting).
const (
	trafficKeepDays   = 35
	trafficFlushEvery = time.Minute
)

// hourBucket is one hour of one domain; the order is the file's.
type hourBucket [9]uint64

const (
	hbRequests = iota
	hbBytes
	hb1xx // .. hb1xx+4 = 5xx
	_
	_
	_
	_
	hbRTMillis // the sum of request times, ms
)

type dayBuckets struct {
	day     int64 // days since 1970-01-01 (UTC)
	domains map[domainKey]*[24]hourBucket
	dirty   bool
}

type trafficStore struct {
	dir  string
	days map[int64]*dayBuckets
}

// A day's file has one JSON object a line, one line per domain, so that
// a read of a few domains over a month decodes only their lines (a
// month of 1,000 busy domains is some 40 MB of JSON otherwise).
type trafficDomain struct {
	Account string `json:"account"`
	Domain  string `json:"domain"`
	// Hours: [hour, requests, bytes, 1xx, 2xx, 3xx, 4xx, 5xx, ms], hours
	// without requests left out.
	Hours [][10]uint64 `json:"hours"`
}

// linePrefix is how the line of key starts (field order is the struct's;
// names are validated and need no escaping, json.Marshal checks).
func linePrefix(key domainKey) []byte {
	a, _ := json.Marshal(key.account)
	d, _ := json.Marshal(key.domain)
	return []byte(`{"account":` + string(a) + `,"domain":` + string(d) + `,`)
}

func dayName(day int64) string { return time.Unix(day*86400, 0).UTC().Format(time.DateOnly) }

// Open gives the counters their directory: today's buckets are read back
// and kept there from now on, written every minute until ctx ends and
// once more then.
func (t *Traffic) Open(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	t.mu.Lock()
	opened := t.store != nil
	t.mu.Unlock()
	if opened {
		return nil // Setup ran again
	}
	s := &trafficStore{dir: dir, days: make(map[int64]*dayBuckets)}
	today := t.now().Unix() / 86400
	if _, err := s.load(today); err != nil {
		// A damaged file costs today's counts so far, never the
		// counting: it is kept aside for a look and the day starts anew.
		name := filepath.Join(dir, dayName(today)+".json")
		if rerr := os.Rename(name, name+".damaged"); rerr != nil {
			return err
		}
		s.days[today] = &dayBuckets{day: today, domains: make(map[domainKey]*[24]hourBucket)}
	}
	t.mu.Lock()
	t.store = s
	t.mu.Unlock()
	gone := t.logGone // read once: a second Setup may set it again
	go func() {
		tick := time.NewTicker(trafficFlushEvery)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				_ = t.Flush()
				return
			case <-tick.C:
				_ = t.Flush()
				if gone != nil && n%60 == 0 {
					t.ForgetIdle(gone)
				}
			}
		}
	}()
	return nil
}

// load returns the day's buckets, read from its file the first time.
func (s *trafficStore) load(day int64) (*dayBuckets, error) {
	if d := s.days[day]; d != nil {
		return d, nil
	}
	d, err := readTrafficDay(s.dir, day, nil)
	if err != nil {
		return nil, err
	}
	s.days[day] = d
	return d, nil
}

// readTrafficDay reads a day's file: every domain's line, or with only
// those of the listed keys.
func readTrafficDay(dir string, day int64, only []domainKey) (*dayBuckets, error) {
	d := &dayBuckets{day: day, domains: make(map[domainKey]*[24]hourBucket)}
	b, err := os.ReadFile(filepath.Join(dir, dayName(day)+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("traffic: %w", err)
	}
	var prefixes [][]byte
	for _, k := range only {
		prefixes = append(prefixes, linePrefix(k))
	}
	for line := range bytes.Lines(b) {
		if only != nil && !slices.ContainsFunc(prefixes, func(p []byte) bool { return bytes.HasPrefix(line, p) }) {
			continue
		}
		var td trafficDomain
		if err := json.Unmarshal(line, &td); err != nil {
			return nil, fmt.Errorf("traffic: %s: %w", dayName(day), err)
		}
		hours := new([24]hourBucket)
		for _, h := range td.Hours {
			if h[0] < 24 {
				copy(hours[h[0]][:], h[1:])
			}
		}
		d.domains[domainKey{td.Account, td.Domain}] = hours
	}
	return d, nil
}

// add counts rec in its hour. Called with Traffic.mu held.
func (s *trafficStore) add(key domainKey, at, today int64, rec accessRecord) {
	day := at / 86400
	if day <= today-trafficKeepDays || day > today+1 {
		return
	}
	d, err := s.load(day)
	if err != nil {
		return // an unreadable day: counted in the metrics only
	}
	hours := d.domains[key]
	if hours == nil {
		hours = new([24]hourBucket)
		d.domains[key] = hours
	}
	h := &hours[at%86400/3600]
	h[hbRequests]++
	h[hbBytes] += rec.bytes
	h[hb1xx+codeClass(rec.status)]++
	h[hbRTMillis] += rec.rtMS
	d.dirty = true
}

func (d *dayBuckets) file() ([]byte, error) {
	keys := make([]domainKey, 0, len(d.domains))
	for k := range d.domains {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b domainKey) int {
		if c := strings.Compare(a.account, b.account); c != 0 {
			return c
		}
		return strings.Compare(a.domain, b.domain)
	})
	var out bytes.Buffer
	for _, k := range keys {
		td := trafficDomain{Account: k.account, Domain: k.domain}
		for i, h := range d.domains[k] {
			if h[hbRequests] == 0 {
				continue
			}
			var row [10]uint64
			row[0] = uint64(i)
			copy(row[1:], h[:])
			td.Hours = append(td.Hours, row)
		}
		line, err := json.Marshal(td)
		if err != nil {
			return nil, err
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

// Flush writes the days that changed, forgets the past ones from memory
// and removes the files older than trafficKeepDays.
func (t *Traffic) Flush() error {
	t.mu.Lock()
	s := t.store
	if s == nil {
		t.mu.Unlock()
		return nil
	}
	today := t.now().Unix() / 86400
	type out struct {
		day  int64
		data []byte
	}
	var writes []out
	var firstErr error
	for day, d := range s.days {
		if d.dirty {
			b, err := d.file()
			if err != nil {
				firstErr = err
				continue
			}
			writes = append(writes, out{day, b})
			d.dirty = false
		}
	}
	t.mu.Unlock()
	var failed []int64
	for _, w := range writes {
		if _, err := writeFile(s.dir, dayName(w.day)+".json", w.data, 0o600); err != nil {
			failed = append(failed, w.day)
			if firstErr == nil {
				firstErr = fmt.Errorf("traffic: %w", err)
			}
		}
	}
	// Past days leave memory once written (and read from their file if
	// needed again); not before, or a read in between would miss them.
	t.mu.Lock()
	for _, day := range failed {
		if d := s.days[day]; d != nil {
			d.dirty = true // written again at the next flush
		}
	}
	for day, d := range s.days {
		if day < today && !d.dirty {
			delete(s.days, day)
		}
	}
	t.mu.Unlock()
	ents, _ := os.ReadDir(s.dir)
	oldest := dayName(today - trafficKeepDays + 1)
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && len(name) == len(oldest) && name < oldest {
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
	return firstErr
}

// Read returns the buckets of account's domains from since on, hourly or
// daily (UTC), oldest first, empty buckets left out. Only the account's
// own counters are read: the key is the account whose log directory the
// lines came from.
func (t *Traffic) Read(account string, domains []string, since time.Time, step agentpb.TrafficStep) ([]*agentpb.DomainTraffic, error) {
	now := t.now()
	today := now.Unix() / 86400
	first := max(since.Unix()/86400, today-trafficKeepDays+1)
	width := int64(3600)
	if step == agentpb.TrafficStep_TRAFFIC_STEP_DAY {
		width = 86400
	}
	from := since.Unix() - since.Unix()%width // the bucket since falls in
	res := make([]*agentpb.DomainTraffic, len(domains))
	byStart := make([]map[int64]*agentpb.TrafficBucket, len(domains))
	for i, d := range domains {
		res[i] = &agentpb.DomainTraffic{Domain: d}
		byStart[i] = make(map[int64]*agentpb.TrafficBucket)
	}
	for day := first; day <= today; day++ {
		t.mu.Lock()
		var d *dayBuckets
		dir := ""
		if t.store != nil {
			d = t.store.days[day]
			dir = t.store.dir
		}
		var copies []*[24]hourBucket
		if d != nil {
			for _, dom := range domains {
				if h := d.domains[domainKey{account, dom}]; h != nil {
					c := *h
					copies = append(copies, &c)
				} else {
					copies = append(copies, nil)
				}
			}
		}
		t.mu.Unlock()
		if d == nil {
			if dir == "" {
				continue
			}
			keys := make([]domainKey, len(domains))
			for i, dom := range domains {
				keys[i] = domainKey{account, dom}
			}
			fd, err := readTrafficDay(dir, day, keys)
			if err != nil {
				return nil, err
			}
			for _, dom := range domains {
				copies = append(copies, fd.domains[domainKey{account, dom}])
			}
		}
		for i, hours := range copies {
			if hours == nil {
				continue
			}
			for h, hb := range hours {
				start := day*86400 + int64(h)*3600
				if hb[hbRequests] == 0 || start < from {
					continue
				}
				start -= start % width
				b := byStart[i][start]
				if b == nil {
					b = &agentpb.TrafficBucket{StartUnix: start}
					byStart[i][start] = b
					res[i].Buckets = append(res[i].Buckets, b)
				}
				b.Requests += hb[hbRequests]
				b.Bytes += hb[hbBytes]
				b.Status_1Xx += hb[hb1xx]
				b.Status_2Xx += hb[hb1xx+1]
				b.Status_3Xx += hb[hb1xx+2]
				b.Status_4Xx += hb[hb1xx+3]
				b.Status_5Xx += hb[hb1xx+4]
				b.RequestSecondsSum += float64(hb[hbRTMillis]) / 1000
			}
		}
	}
	return res, nil
}
