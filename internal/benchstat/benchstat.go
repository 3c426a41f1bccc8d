// Package benchstat reports latency percentiles from a benchmark, so every
// benchmark names them alike (NAME-p50-ms, NAME-p99-ms).
package benchstat

import (
	"slices"
	"testing"
	"time"
)

// Percentile returns the q-quantile (0..1) of ds by the nearest rank; it
// sorts ds.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(q*float64(len(ds)-1))]
}

// Report adds NAME-p50-ms and NAME-p99-ms of ds to b's results ("p50-ms"
// and "p99-ms" when name is empty).
func Report(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	if name != "" {
		name += "-"
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(Percentile(ds, 0.5)), name+"p50-ms")
	b.ReportMetric(ms(Percentile(ds, 0.99)), name+"p99-ms")
}
