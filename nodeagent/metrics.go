package nodeagent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

const metricsNamespace = "npanel_agent"

type metrics struct {
	applied      *prometheus.CounterVec
	duplicates   prometheus.Counter
	applySeconds *prometheus.HistogramVec
	connected    prometheus.Gauge
	certExpiry   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "tasks_applied_total",
			Help:      "Tasks finished by this agent, by action and outcome (succeeded, failed). Re-sent tasks answered from the journal are not counted.",
		}, []string{"action", "status"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "tasks_duplicate_total",
			Help:      "Tasks received again while in flight or already journaled; none of them was applied again.",
		}),
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace,
			Name:      "task_apply_seconds",
			Help:      "Time spent in an action's Apply.",
			// 1 ms to about 4 minutes: config writes are milliseconds, a
			// backup or migration step can take minutes.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"action"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "connected",
			Help:      "1 while the agent holds a welcomed task stream to a gateway.",
		}),
		certExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "cert_expiry_timestamp_seconds",
			Help:      "Expiry of the agent's current certificate, in unix seconds.",
		}),
	}
	for _, c := range []prometheus.Collector{m.applied, m.duplicates, m.applySeconds, m.connected, m.certExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register agent metrics (each agent needs its own registry): %w", err)
		}
	}
	return m, nil
}
