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
	// Backups: finished backups by result (succeeded, partial, failed),
	// their duration, each account's last success and the accounts whose
	// last success is older than a day and a bit (missed).
	backupsTotal      *prometheus.CounterVec
	backupDuration    prometheus.Histogram
	backupLastSuccess *prometheus.GaugeVec
	backupsMissed     prometheus.Gauge
	// controllers are the controller runtime's, by controller.
	controllers *controller.Metrics
	// Observability: each node's liveness (leader only), the scrape
	// tokens, this replica's leadership changes and Alertmanager's alerts.
	nodeUp         *prometheus.GaugeVec
	scrapeTokens   prometheus.Gauge
	leaderChanges  prometheus.Counter
	alertsReceived *prometheus.CounterVec
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
	m.backupsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "npanel", Name: "backups_total",
		Help: "Finished backups, by result (succeeded, partial, failed).",
	}, []string{"result"})
	m.backupDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "npanel", Name: "backup_duration_seconds",
		Help:    "Time from a backup's start to its result.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s .. 9 h
	})
	m.backupLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "npanel", Name: "backup_last_success_timestamp_seconds",
		Help: "When each account's last successful (or partial) backup finished.",
	}, []string{"account"})
	m.backupsMissed = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "npanel", Name: "backups_missed",
		Help: "Accounts with scheduled backups whose last success is older than 26 hours.",
	})
	m.nodeUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "npanel", Name: "node_up",
		Help: "1 while the node is READY (lease held, reachable by gossip, tasks delivered), else 0; exported by the leader only.",
	}, []string{"node"})
	m.scrapeTokens = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "npanel", Name: "scrape_tokens",
		Help: "Scrape tokens Prometheus and Alertmanager may use.",
	})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "npanel", Name: "leader_changes_total",
		Help: "Times this replica became or stopped being the leader.",
	})
	m.alertsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "npanel", Name: "alerts_received_total",
		Help: "Alerts posted by Alertmanager to /v1/alerts, by status (firing, resolved).",
	}, []string{"status"})
	m.controllers = controller.NewMetrics(m.reg)
	m.reg.MustRegister(m.nodeUp, m.scrapeTokens, m.leaderChanges, m.alertsReceived)
	m.reg.MustRegister(m.grpc, m.streams, m.leader, m.nodes, m.tasksCompleted, m.duplicateResults, m.pruned,
		m.auditSuppressed, m.apiConns, m.apiConnsRefused, m.certAttempts, m.certExpiry,
		m.backupsTotal, m.backupDuration, m.backupLastSuccess, m.backupsMissed)
	return m
}
