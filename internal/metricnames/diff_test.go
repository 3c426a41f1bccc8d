package metricnames

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestDiff(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewCounter(prometheus.CounterOpts{Name: "npanel_a_total", Help: "a"}),
		prometheus.NewHistogram(prometheus.HistogramOpts{Name: "npanel_b_seconds", Help: "b"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "npanel_new", Help: "not listed yet"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "other_gauge", Help: "outside the prefixes"}),
	)
	// A vector with no child is not gathered.
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "npanel_c_total", Help: "c"}, []string{"x"}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	listed := []string{"npanel_a_total", "npanel_b_seconds", "npanel_c_total", "npanel_gone"}
	unlisted, ungathered := Diff(listed, families, "npanel_")
	if want := []string{"npanel_new"}; !slices.Equal(unlisted, want) {
		t.Errorf("unlisted = %q, want %q", unlisted, want)
	}
	if want := []string{"npanel_c_total", "npanel_gone"}; !slices.Equal(ungathered, want) {
		t.Errorf("ungathered = %q, want %q", ungathered, want)
	}
}
