package agentmetrics

import (
	"bytes"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
)

// MailDeliveries counts Exim's deliveries by outcome from its main log, as
// a consumer of the tail engine (which reads the log once for every
// consumer): counting at scrape time would mean re-reading the log.
type MailDeliveries struct {
	service string // Exim's service name: its lines' Source.Service
	total   *prometheus.CounterVec
}

// mailStatuses are the outcomes, in the order of the contract.
var mailStatuses = []string{"delivered", "deferred", "bounced", "rejected"}

// NewMailDeliveries counts the lines of service's main log.
func NewMailDeliveries(service string) *MailDeliveries {
	m := &MailDeliveries{service: service, total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "npanel_mail_deliveries_total",
		Help: "Exim's delivery attempts by outcome: delivered, deferred (to be retried), bounced (failed for good), rejected (refused at SMTP time).",
	}, []string{"status"})}
	for _, s := range mailStatuses {
		m.total.WithLabelValues(s) // every outcome has a series from the start
	}
	return m
}

// Describe implements prometheus.Collector.
func (m *MailDeliveries) Describe(ch chan<- *prometheus.Desc) { m.total.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *MailDeliveries) Collect(ch chan<- prometheus.Metric) { m.total.Collect(ch) }

// Consume implements logtail.Consumer.
func (m *MailDeliveries) Consume(batch []logtail.Entry) {
	for _, e := range batch {
		if e.Source == nil || e.Source.Service != m.service || !isMainLog(e.Source.Path) {
			continue
		}
		if s := mailStatus(e.Line); s != "" {
			m.total.WithLabelValues(s).Inc()
		}
	}
}

// isMainLog: Exim's main log is mainlog, main.log or exim_mainlog by
// distribution; its reject log repeats the rejections.
func isMainLog(path string) bool { return strings.Contains(filepath.Base(path), "main") }

// mailStatus reads one main log line:
//
//	2026-12-06 12:00:00 [pid] 1tAbCd-000Abc-Xy => alice@example.test R=... T=...
//	2026-12-06 12:00:00 H=(helo) [192.0.2.1] F=<a@b> rejected RCPT <c@d>: ...
//
// "=>" and "->" (a further recipient of the same delivery) are delivered,
// "==" deferred, "**" bounced; a line without a message id that says
// "rejected" is a refusal at SMTP time. Anything else is "".
func mailStatus(line []byte) string {
	f := bytes.Fields(line)
	if len(f) < 3 {
		return ""
	}
	f = f[2:] // date and time
	if len(f) > 0 && f[0][0] == '[' {
		f = f[1:] // log_selector +pid
	}
	if len(f) >= 2 && isMessageID(f[0]) {
		switch string(f[1]) {
		case "=>", "->":
			return "delivered"
		case "==":
			return "deferred"
		case "**":
			return "bounced"
		}
		return ""
	}
	if bytes.Contains(line, []byte(" rejected ")) {
		return "rejected"
	}
	return ""
}

// isMessageID matches Exim's ids: 1tAbCd-000Abc-Xy (4.97+) or
// 1tAbCd-0007hX-9Q (older), three dash-separated base-62 parts.
func isMessageID(b []byte) bool {
	parts := bytes.Split(b, []byte{'-'})
	if len(parts) != 3 || len(parts[0]) != 6 {
		return false
	}
	for _, p := range parts {
		if len(p) < 2 {
			return false
		}
		for _, c := range p {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	return true
}
