package web

import (
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/protos/agentpb"
)

// Traffic counts the requests of every site on the node from the lines of
// its access log (the tail engine hands them over: it is a
// logtail.Consumer), exposes them as Prometheus metrics (it is a
// prometheus.Collector) and keeps hourly buckets per domain on disk for
// read_traffic (traffic_store.go).
//
// Request times feed a fixed log-bucket histogram per domain with two
// rotating windows of half the quantile period each: the quantiles cover
// the last 2.5 to 5 minutes, at about 700 bytes a domain, where a CKMS
// summary per domain would hold thousands of samples.
type Traffic struct {
	mu      sync.Mutex
	domains map[domainKey]*domainStats
	store   *trafficStore // nil until Setup gave it a directory
	now     func() time.Time
	// logGone says a domain's access log no longer exists (Setup sets
	// it); the flush loop then forgets the domain once it is idle.
	logGone func(account, domain string) bool
	// removed are deleted accounts: the tail engine may still read the
	// end of their logs, which must not count again (a later account of
	// the same name would inherit it). Its next Ensure clears the mark.
	removed map[string]bool
	// flushing is the write loop Open started.
	flushing sync.WaitGroup
}

type domainKey struct{ account, domain string }

// Histogram layout: milliseconds, exact below 8, then four buckets per
// power of two (about ±12% error), the last one open (above ~17 min).
const (
	histBuckets = 84
	// quantileWindow is the age of the oldest request time the quantiles
	// may include; each of the two windows spans half of it.
	quantileWindow = 5 * time.Minute
	halfWindow     = int64(quantileWindow / time.Second / 2)
	// forgetAfter: a domain without lines for this long whose log is gone
	// loses its series (see Forget for the immediate way).
	forgetAfter = 24 * time.Hour
)

type domainStats struct {
	codes    [5]uint64 // 1xx..5xx
	bytes    uint64
	rtSum    float64 // seconds, since the agent started
	rtCount  uint64
	last     int64 // Unix seconds of the last line read
	winStart int64 // start of cur, a multiple of halfWindow
	cur      [histBuckets]uint32
	prev     [histBuckets]uint32
}

var _ logtail.Consumer = (*Traffic)(nil)
var _ prometheus.Collector = (*Traffic)(nil)

// NewTraffic returns counters that keep nothing on disk (Open gives them
// a directory).
func NewTraffic() *Traffic {
	return &Traffic{domains: make(map[domainKey]*domainStats), removed: make(map[string]bool), now: time.Now}
}

// Consume implements logtail.Consumer: it counts the access log lines of
// per-domain sources and ignores every other line.
func (t *Traffic) Consume(batch []logtail.Entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var (
		key domainKey
		ds  *domainStats
		src *logtail.Source
	)
	for i := range batch {
		e := &batch[i]
		if e.Source == nil || e.Source.Kind != "access" || e.Source.Domain == "" {
			continue
		}
		rec, ok := parseAccess(e.Line)
		if !ok {
			continue
		}
		if e.Source != src { // batches come in runs of one source
			src = e.Source
			key = domainKey{src.Account, src.Domain}
			ds = nil
			if t.removed[src.Account] {
				continue
			}
			ds = t.domains[key]
			if ds == nil {
				ds = &domainStats{}
				t.domains[key] = ds
			}
		}
		if ds == nil {
			continue
		}
		read := e.Time.Unix()
		if e.Time.IsZero() {
			read = t.now().Unix()
		}
		ds.add(rec, read)
		at := rec.unix
		if at == 0 {
			at = read
		}
		if t.store != nil {
			t.store.add(key, at, read/86400, rec)
		}
	}
}

func codeClass(status int) int {
	c := status/100 - 1
	return max(0, min(c, 4))
}

func (ds *domainStats) add(rec accessRecord, now int64) {
	ds.codes[codeClass(rec.status)]++
	ds.bytes += rec.bytes
	ds.rtSum += float64(rec.rtMS) / 1000
	ds.rtCount++
	ds.last = now
	ds.rotate(now)
	ds.cur[histIndex(rec.rtMS)]++
}

// rotate moves the windows on to the one now falls in.
func (ds *domainStats) rotate(now int64) {
	start := now - now%halfWindow
	switch {
	case start == ds.winStart:
	case start == ds.winStart+halfWindow:
		ds.prev, ds.cur = ds.cur, [histBuckets]uint32{}
		ds.winStart = start
	case start > ds.winStart:
		ds.prev, ds.cur = [histBuckets]uint32{}, [histBuckets]uint32{}
		ds.winStart = start
	}
	// A start before winStart (the clock stepped back) counts into cur.
}

func histIndex(ms uint64) int {
	if ms < 8 {
		return int(ms)
	}
	e := bits.Len64(ms) - 1 // >= 3
	idx := 4*(e-1) + int(ms>>(e-2)&3)
	return min(idx, histBuckets-1)
}

// histValue is the middle of bucket idx, in seconds.
func histValue(idx int) float64 {
	if idx < 8 {
		return float64(idx) / 1000
	}
	e := idx/4 + 1
	lower := uint64(4+idx%4) << (e - 2)
	width := uint64(1) << (e - 2)
	return (float64(lower) + float64(width)/2) / 1000
}

// quantiles returns the q-quantiles of the last two windows, NaN when they
// are empty (Prometheus's convention for a summary without observations).
func (ds *domainStats) quantiles(now int64, qs []float64) []float64 {
	ds.rotate(now)
	var total uint64
	for i := range ds.cur {
		total += uint64(ds.cur[i]) + uint64(ds.prev[i])
	}
	out := make([]float64, len(qs))
	for j, q := range qs {
		if total == 0 {
			out[j] = math.NaN()
			continue
		}
		rank := uint64(math.Ceil(q * float64(total)))
		rank = max(rank, 1)
		var seen uint64
		for i := range ds.cur {
			seen += uint64(ds.cur[i]) + uint64(ds.prev[i])
			if seen >= rank {
				out[j] = histValue(i)
				break
			}
		}
	}
	return out
}

// Forget drops the series of one domain (its site was removed).
func (t *Traffic) Forget(account, domain string) {
	t.mu.Lock()
	delete(t.domains, domainKey{account, domain})
	t.mu.Unlock()
}

// retain drops the series of account's domains that are not among sites.
func (t *Traffic) retain(account string, sites []*agentpb.Site) {
	t.mu.Lock()
	delete(t.removed, account)
	for k := range t.domains {
		if k.account == account && !slices.ContainsFunc(sites, func(s *agentpb.Site) bool { return s.GetDomain() == k.domain }) {
			delete(t.domains, k)
		}
	}
	t.mu.Unlock()
}

// ForgetAccount drops the series and the stored history of every domain
// of account (it was deleted).
func (t *Traffic) ForgetAccount(account string) error {
	t.mu.Lock()
	s := t.store
	t.mu.Unlock()
	if s != nil {
		s.ioMu.Lock() // before mu, as in Flush
		defer s.ioMu.Unlock()
	}
	t.mu.Lock()
	t.removed[account] = true
	for k := range t.domains {
		if k.account == account {
			delete(t.domains, k)
		}
	}
	if s != nil {
		for hk := range s.delta {
			if hk.key.account == account {
				delete(s.delta, hk)
			}
		}
	}
	t.mu.Unlock()
	if s == nil {
		return nil
	}
	// A later account of the same name must not inherit its history.
	return s.purgeAccount(account)
}

// ForgetIdle drops the series of domains without a line for 24 h for which
// gone says the log no longer exists; the agent may call it now and then
// as a safety net for Forget.
func (t *Traffic) ForgetIdle(gone func(account, domain string) bool) {
	cut := t.now().Add(-forgetAfter).Unix()
	var idle []domainKey
	t.mu.Lock()
	for k, ds := range t.domains {
		if ds.last < cut {
			idle = append(idle, k)
		}
	}
	t.mu.Unlock()
	for _, k := range idle {
		if gone(k.account, k.domain) {
			t.mu.Lock()
			if ds := t.domains[k]; ds != nil && ds.last < cut {
				delete(t.domains, k)
			}
			t.mu.Unlock()
		}
	}
}

var (
	domainRequestsDesc = prometheus.NewDesc("npanel_domain_requests_total",
		"Requests served for a domain, by status class.", []string{"account", "domain", "code"}, nil)
	domainBytesDesc = prometheus.NewDesc("npanel_domain_response_bytes_total",
		"Response body bytes sent for a domain.", []string{"account", "domain"}, nil)
	domainDurationDesc = prometheus.NewDesc("npanel_domain_request_duration_seconds",
		"Request time of a domain's requests; quantiles over the last 5 minutes.", []string{"account", "domain"}, nil)
	codeLabels = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}
	summaryQs  = []float64{0.5, 0.95}
)

// Describe implements prometheus.Collector.
func (t *Traffic) Describe(ch chan<- *prometheus.Desc) {
	ch <- domainRequestsDesc
	ch <- domainBytesDesc
	ch <- domainDurationDesc
}

// Collect implements prometheus.Collector. Status classes a domain never
// answered with are left out rather than reported as zero: 1,000 domains
// would otherwise be 5,000 series mostly at zero.
func (t *Traffic) Collect(ch chan<- prometheus.Metric) {
	type sample struct {
		key   domainKey
		codes [5]uint64
		bytes uint64
		sum   float64
		count uint64
		q     []float64
	}
	now := t.now().Unix()
	t.mu.Lock()
	out := make([]sample, 0, len(t.domains))
	for k, ds := range t.domains {
		out = append(out, sample{key: k, codes: ds.codes, bytes: ds.bytes, sum: ds.rtSum, count: ds.rtCount, q: ds.quantiles(now, summaryQs)})
	}
	t.mu.Unlock()
	// Sent outside the lock: the registry may be slow to drain ch.
	for _, s := range out {
		for i, n := range s.codes {
			if n > 0 {
				ch <- prometheus.MustNewConstMetric(domainRequestsDesc, prometheus.CounterValue, float64(n), s.key.account, s.key.domain, codeLabels[i])
			}
		}
		ch <- prometheus.MustNewConstMetric(domainBytesDesc, prometheus.CounterValue, float64(s.bytes), s.key.account, s.key.domain)
		ch <- prometheus.MustNewConstSummary(domainDurationDesc, s.count, s.sum,
			map[float64]float64{summaryQs[0]: s.q[0], summaryQs[1]: s.q[1]}, s.key.account, s.key.domain)
	}
}
