package agentmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/services"
)

var (
	serviceUpDesc = prometheus.NewDesc("npanel_service_up",
		"1 while a daemon the agent manages is running, 0 otherwise (stopped, failed, starting).", []string{"service"}, nil)
	serviceRestartsDesc = prometheus.NewDesc("npanel_service_restarts_total",
		"Restarts of a daemon after it exited unexpectedly: the agent's supervisor's count, or the unit's NRestarts on systemd nodes (reset when the unit is started by hand).", []string{"service"}, nil)
	serviceInfoDesc = prometheus.NewDesc("npanel_service_info",
		"Always 1; the daemon's version as a label (empty until known).", []string{"service", "version"}, nil)
)

// servicesCollector reports the service manager's in-memory state.
type servicesCollector struct{ status func() []services.Status }

func (c *servicesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serviceUpDesc
	ch <- serviceRestartsDesc
	ch <- serviceInfoDesc
}

func (c *servicesCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, st := range c.status() {
		// Two managers' reports merged could name a daemon twice; a
		// duplicate series would fail the whole scrape.
		if seen[st.Name] {
			continue
		}
		seen[st.Name] = true
		ch <- prometheus.MustNewConstMetric(serviceUpDesc, prometheus.GaugeValue, b2f(st.State == services.Running), st.Name)
		ch <- prometheus.MustNewConstMetric(serviceRestartsDesc, prometheus.CounterValue, float64(st.Restarts), st.Name)
		ch <- prometheus.MustNewConstMetric(serviceInfoDesc, prometheus.GaugeValue, 1, st.Name, st.Version)
	}
}
