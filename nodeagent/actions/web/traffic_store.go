package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

// The traffic store keeps hourly buckets per domain, one file per UTC day
// (DIR/2026-12-06.json), trafficKeepDays days kept. Memory holds only what
// was counted since the last write (a bucket per domain and hour that had
// requests): at most once a minute, and when the agent stops, each day
// with new counts is read, added to and written back whole, atomically.
// A full day of 1,000 busy domains is some 1.7 MB of buckets that thus
// stay on disk.
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

func (h *hourBucket) addAll(o *hourBucket) {
	for i := range h {
		h[i] += o[i]
	}
}

// dayBuckets is a day's file in memory.
type dayBuckets struct {
	day     int64 // days since 1970-01-01 (UTC)
	domains map[domainKey]*[24]hourBucket
}

// hourKey is a domain's hour, in hours since 1970 (UTC).
type hourKey struct {
	key  domainKey
	hour int64
}

type trafficStore struct {
	dir string
	// delta is what was counted since the last write (Traffic.mu).
	delta map[hourKey]*hourBucket
	// ioMu orders Flush and Read: a read sees each count once, in a
	// file or in delta, never in both or neither.
	ioMu sync.Mutex
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

// Open gives the counters their directory, where they are written every
// minute until ctx ends and once more then.
func (t *Traffic) Open(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	t.mu.Lock()
	if t.store != nil {
		t.mu.Unlock()
		return nil // Setup ran again
	}
	t.store = &trafficStore{dir: dir, delta: make(map[hourKey]*hourBucket)}
	t.mu.Unlock()
	gone := t.logGone // read once: a second Setup may set it again
	t.flushing.Add(1)
	go func() {
		defer t.flushing.Done()
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

// Wait returns once the write loop of Open has ended (its ctx ended) and
// made its last write.
func (t *Traffic) Wait() { t.flushing.Wait() }

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
	hk := hourKey{key, at / 3600}
	h := s.delta[hk]
	if h == nil {
		h = new(hourBucket)
		s.delta[hk] = h
	}
	h[hbRequests]++
	h[hbBytes] += rec.bytes
	h[hb1xx+codeClass(rec.status)]++
	h[hbRTMillis] += rec.rtMS
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

// Flush adds what was counted since the last write to the days' files
// and removes the files older than trafficKeepDays.
func (t *Traffic) Flush() error {
	t.mu.Lock()
	s := t.store
	t.mu.Unlock()
	if s == nil {
		return nil
	}
	s.ioMu.Lock() // before mu, as in Read
	defer s.ioMu.Unlock()
	t.mu.Lock()
	delta := s.delta
	s.delta = make(map[hourKey]*hourBucket)
	today := t.now().Unix() / 86400
	t.mu.Unlock()

	byDay := make(map[int64][]hourKey)
	for hk := range delta {
		byDay[hk.hour/24] = append(byDay[hk.hour/24], hk)
	}
	var firstErr error
	for day, keys := range byDay {
		if err := s.addToDay(day, keys, delta); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			// Counted again at the next flush.
			t.mu.Lock()
			for _, hk := range keys {
				if h := s.delta[hk]; h != nil {
					h.addAll(delta[hk])
				} else {
					s.delta[hk] = delta[hk]
				}
			}
			t.mu.Unlock()
		}
	}
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

// purgeAccount removes account's lines from every day's file. Called
// with ioMu held.
func (s *trafficStore) purgeAccount(account string) error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		t, err := time.Parse(time.DateOnly, name)
		if err != nil {
			continue
		}
		d, err := readTrafficDay(s.dir, t.Unix()/86400, nil)
		if err != nil {
			// Kept aside, as addToDay does: a damaged file must not make
			// every deletion of an account fail.
			name := filepath.Join(s.dir, e.Name())
			if rerr := os.Rename(name, name+".damaged"); rerr != nil {
				return err
			}
			continue
		}
		n := len(d.domains)
		maps.DeleteFunc(d.domains, func(k domainKey, _ *[24]hourBucket) bool { return k.account == account })
		if len(d.domains) == n {
			continue
		}
		b, err := d.file()
		if err != nil {
			return err
		}
		if _, err := writeFile(s.dir, e.Name(), b, 0o600); err != nil {
			return fmt.Errorf("traffic: %w", err)
		}
	}
	return nil
}

// addToDay adds the counts of keys (all of one day) to the day's file.
func (s *trafficStore) addToDay(day int64, keys []hourKey, delta map[hourKey]*hourBucket) error {
	d, err := readTrafficDay(s.dir, day, nil)
	if err != nil {
		// A damaged file costs its counts, never the counting: it is
		// kept aside for a look and the day starts anew.
		name := filepath.Join(s.dir, dayName(day)+".json")
		if rerr := os.Rename(name, name+".damaged"); rerr != nil {
			return err
		}
		d = &dayBuckets{day: day, domains: make(map[domainKey]*[24]hourBucket)}
	}
	for _, hk := range keys {
		hours := d.domains[hk.key]
		if hours == nil {
			hours = new([24]hourBucket)
			d.domains[hk.key] = hours
		}
		hours[hk.hour%24].addAll(delta[hk])
	}
	b, err := d.file()
	if err != nil {
		return err
	}
	if _, err := writeFile(s.dir, dayName(day)+".json", b, 0o600); err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	return nil
}

// Read returns the buckets of account's domains from since on, hourly or
// daily (UTC), oldest first, empty buckets left out. Only the account's
// own counters are read: the key is the account whose log directory the
// lines came from.
func (t *Traffic) Read(account string, domains []string, since time.Time, step agentpb.TrafficStep) ([]*agentpb.DomainTraffic, error) {
	res := make([]*agentpb.DomainTraffic, len(domains))
	for i, d := range domains {
		res[i] = &agentpb.DomainTraffic{Domain: d}
	}
	t.mu.Lock()
	s := t.store
	t.mu.Unlock()
	if s == nil {
		return res, nil
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	today := t.now().Unix() / 86400
	first := max(since.Unix()/86400, today-trafficKeepDays+1)
	width := int64(3600)
	if step == agentpb.TrafficStep_TRAFFIC_STEP_DAY {
		width = 86400
	}
	from := since.Unix() - since.Unix()%width // the bucket since falls in
	keys := make([]domainKey, len(domains))
	index := make(map[domainKey]int, len(domains))
	for i, d := range domains {
		keys[i] = domainKey{account, d}
		index[keys[i]] = i
	}
	// Hours not written yet, by day.
	pending := make(map[int64]map[hourKey]hourBucket)
	t.mu.Lock()
	for hk, h := range s.delta {
		if _, ok := index[hk.key]; ok && hk.hour/24 >= first {
			if pending[hk.hour/24] == nil {
				pending[hk.hour/24] = make(map[hourKey]hourBucket)
			}
			pending[hk.hour/24][hk] = *h
		}
	}
	t.mu.Unlock()
	byStart := make([]map[int64]*agentpb.TrafficBucket, len(domains))
	for i := range byStart {
		byStart[i] = make(map[int64]*agentpb.TrafficBucket)
	}
	for day := first; day <= today; day++ {
		d, err := readTrafficDay(s.dir, day, keys)
		if err != nil {
			return nil, err
		}
		for hk, h := range pending[day] {
			hours := d.domains[hk.key]
			if hours == nil {
				hours = new([24]hourBucket)
				d.domains[hk.key] = hours
			}
			hours[hk.hour%24].addAll(&h)
		}
		for key, hours := range d.domains {
			i, ok := index[key]
			if !ok {
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
