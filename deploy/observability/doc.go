// Package observability tests what an operator installs next to a cluster:
// the Grafana dashboards in deploy/grafana, the Prometheus rules and example
// configuration in deploy/prometheus, and their runbook in docs/runbooks.md.
// Every PromQL expression is parsed with Prometheus's own parser and may name
// only the metric families listed in deploy/prometheus/metrics.txt.
package observability
