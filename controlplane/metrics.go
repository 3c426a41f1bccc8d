package controlplane

import (
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/controlplane/controller"
)

// metrics live in their own registry: etcd registers its gRPC metrics on the
// default one, and a second set of gRPC collectors there would clash. /metrics
// serves both registries together.
type metrics struct {
	reg              *prometheus.Registry
	grpc             *grpcprom.ServerMetrics
	streams          prometheus.Gauge
	leader           prometheus.Gauge
	nodes            *prometheus.GaugeVec
	tasksCompleted   *prometheus.CounterVec
	duplicateResults prometheus.Counter
	pruned           *prometheus.CounterVec
	auditSuppressed  *prometheus.CounterVec
	apiConns         prometheus.Gauge
	apiConnsRefused  prometheus.Counter
	// certAttempts counts certificate tasks by action and result;
	// certExpiry is npanel_certificate_expiry_seconds.
	certAttempts *prometheus.CounterVec
	certExpiry   *certExpiry
	// controllers are the controller runtime's, by controller.
	controllers *controller.Metrics
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithNamespace("npanel")),
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace("npanel"))),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "npanel", Name: "agent_streams",
			Help: "Agent streams connected to this replica.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "npanel", Name: "leader",
			Help: "1 while this replica runs the controllers.",
		}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "npanel", Name: "nodes",
			Help: "Nodes by status, as last computed by the leader.",
		}, []string{"status"}),
		tasksCompleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "npanel", Name: "tasks_completed_total",
			Help: "Task results stored, by status.",
		}, []string{"status"}),
		duplicateResults: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "npanel", Name: "task_duplicate_results_total",
			Help: "Results received for tasks already completed (at-least-once redelivery).",
		}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "npanel", Name: "pruned_total",
			Help: "Audit events and finished tasks deleted after their retention, by kind (audit, task).",
		}, []string{"kind"}),
	}
	m.auditSuppressed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "npanel", Name: "audit_suppressed_total",
		Help: "Refused requests not written to the audit log because their rate limit was spent, by kind.",
	}, []string{"kind"})
	m.apiConns = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "npanel", Name: "api_connections",
		Help: "Open connections to the API listener.",
	})
	m.apiConnsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "npanel", Name: "api_connections_refused_total",
		Help: "API connections closed on accept because their client IP had too many open.",
	})
	m.certAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "npanel", Name: "certificate_attempts_total",
		Help: "Certificate tasks answered by nodes, by action (issue, install, revoke, remove) and result (ok, failed).",
	}, []string{"action", "result"})
	m.certExpiry = newCertExpiry()
	m.controllers = controller.NewMetrics(m.reg)
	m.reg.MustRegister(m.grpc, m.streams, m.leader, m.nodes, m.tasksCompleted, m.duplicateResults, m.pruned,
		m.auditSuppressed, m.apiConns, m.apiConnsRefused, m.certAttempts, m.certExpiry)
	return m
}
