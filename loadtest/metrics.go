package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metricSet is one scrape of a Prometheus text exposition: the value of
// every series, keyed by the series as written (name plus labels).
type metricSet map[string]float64

// parseMetrics reads a text exposition. Comments and malformed lines are
// skipped.
func parseMetrics(body io.Reader) metricSet {
	m := metricSet{}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[strings.TrimSpace(line[:i])] = v
		}
	}
	return m
}

// fetchMetrics scrapes base/metrics, with token as bearer if given (the
// server's /metrics wants an admin's token).
func fetchMetrics(ctx context.Context, base, token string) (metricSet, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body), nil
}

// value returns an unlabelled series.
func (m metricSet) value(name string) (float64, bool) {
	v, ok := m[name]
	return v, ok
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// histogram returns the buckets of an unlabelled histogram, by bound.
func (m metricSet) histogram(name string) []bucket {
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le: le, count: v})
	}
	slices.SortFunc(bs, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return bs
}

// histStats summarises what a histogram recorded between two scrapes:
// observations, their mean, and the bucket bound the p99 falls under (an
// upper estimate), all in milliseconds for a histogram in seconds.
type histStats struct {
	Count  float64 `json:"count"`
	MeanMs float64 `json:"meanMs"`
	P99Ms  float64 `json:"p99UpperBoundMs"`
}

func histDelta(before, after metricSet, name string) histStats {
	n := after[name+"_count"] - before[name+"_count"]
	if n <= 0 {
		return histStats{}
	}
	h := histStats{Count: n, MeanMs: round3(1000 * (after[name+"_sum"] - before[name+"_sum"]) / n)}
	prev := map[float64]float64{}
	for _, b := range before.histogram(name) {
		prev[b.le] = b.count
	}
	for _, b := range after.histogram(name) {
		if b.count-prev[b.le] >= 0.99*n {
			if math.IsInf(b.le, 1) {
				h.P99Ms = math.Inf(1)
			} else {
				h.P99Ms = round3(1000 * b.le)
			}
			break
		}
	}
	if math.IsInf(h.P99Ms, 1) {
		h.P99Ms = -1 // beyond the last finite bucket; JSON has no infinity
	}
	return h
}
