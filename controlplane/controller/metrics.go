package controller

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the runtime's metrics, labelled by controller.
type Metrics struct {
	depth    *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

// NewMetrics registers the runtime's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "npanel", Subsystem: "controller", Name: "queue_depth",
			Help: "Keys ready in the controller's work queue.",
		}, []string{"controller"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "npanel", Subsystem: "controller", Name: "sync_duration_seconds",
			Help:    "Time a controller spent in one sync (one key, or one batch).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"controller"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "npanel", Subsystem: "controller", Name: "retries_total",
			Help: "Keys queued again after a failed sync.",
		}, []string{"controller"}),
	}
	reg.MustRegister(m.depth, m.duration, m.retries)
	return m
}
