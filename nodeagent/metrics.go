package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/agentmetrics"
	"github.com/npanel/npanel/nodeagent/hoststat"
	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/nodeagent/services"
)

const metricsNamespace = "npanel_agent"

type metrics struct {
	applied      *prometheus.CounterVec
	duplicates   prometheus.Counter
	applySeconds *prometheus.HistogramVec
	inFlight     prometheus.Gauge
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
			Help:      "Time spent in an action's Apply, by action and outcome (succeeded, failed).",
			// 1 ms to about 4 minutes: config writes are milliseconds, a
			// backup or migration step can take minutes.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"action", "status"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "tasks_in_flight",
			Help:      "Tasks received and not yet finished (applying, or waiting for a concurrency slot).",
		}),
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
	for _, c := range []prometheus.Collector{m.applied, m.duplicates, m.applySeconds, m.inFlight, m.connected, m.certExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register agent metrics (each agent needs its own registry): %w", err)
		}
	}
	return m, nil
}

// hostSources are the agent's /metrics sources beyond its own task
// metrics: the host, the daemons, and the modules this agent runs. The
// module sources read a.env at call time, which is complete once Run has
// set the modules up (the listener starts after that).
func (a *Agent) hostSources() agentmetrics.Sources {
	src := agentmetrics.Sources{Services: a.serviceStatus, Logger: a.log.With("component", "metrics")}
	if h, err := hoststat.New(); err != nil {
		a.log.Warn("host metrics unavailable", "err", err)
	} else {
		src.Host = h
	}
	for _, m := range a.cfg.Modules {
		switch m := m.(type) {
		case *dns.Module:
			src.DNS = func(ctx context.Context) (dns.Stats, error) {
				env := a.env(a.log)
				if !slices.Contains(env.Modules, m.Name()) {
					return dns.Stats{}, agentmetrics.ErrAbsent
				}
				return m.Stats(ctx, env)
			}
		case *db.Module:
			src.Databases = func(ctx context.Context) ([]db.DatabaseSize, error) {
				env := a.env(a.log)
				if !slices.Contains(env.Modules, m.Name()) {
					return nil, agentmetrics.ErrAbsent
				}
				return m.Sizes(ctx, env)
			}
		case *mail.Module:
			src.MailDeliveries = agentmetrics.NewMailDeliveries(mail.EximService)
			a.mailDeliveries = src.MailDeliveries
			src.MailQueue = func(ctx context.Context) (int, error) {
				n, ok, err := mail.QueueLength(ctx, a.env(a.log))
				if err == nil && !ok {
					err = agentmetrics.ErrAbsent
				}
				return n, err
			}
		}
	}
	src.AccountDisk = agentmetrics.NewDiskUsage(a.profile).Read
	return src
}

// metricsLogConsumers are the consumers of the tail engine that count for
// /metrics (Exim's deliveries by outcome); none without /metrics or
// without the mail module.
func (a *Agent) metricsLogConsumers() []logtail.Consumer {
	if a.mailDeliveries == nil {
		return nil
	}
	return []logtail.Consumer{a.mailDeliveries}
}

// serviceStatus is what reportServices sends and /metrics shows: the
// managed daemons and the migration endpoint, which runs inside the agent
// rather than under the service manager.
func (a *Agent) serviceStatus() []services.Status {
	var sts []services.Status
	if a.services != nil {
		sts = a.services.Status()
	}
	if st, ok := a.allow.Migrate().Status(); ok {
		sts = append(sts, st)
	}
	return sts
}

// listenMetrics binds cfg.MetricsListen and serves /metrics until ctx
// ends; wait returns once it stopped. A failure is logged, not fatal: the
// node serves its sites without metrics, and the missing target shows in
// Prometheus.
func (a *Agent) listenMetrics(ctx context.Context) (wait func()) {
	handler := promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})
	srv, err := agentmetrics.Listen(agentmetrics.ServerConfig{
		Addr:           a.cfg.MetricsListen,
		Handler:        handler,
		Tokens:         a.tokens,
		Root:           a.id.root,
		GetCertificate: a.getCert,
		Logger:         a.log.With("component", "metrics"),
	})
	if err != nil {
		a.log.Error("metrics endpoint did not start", "err", err)
		return func() {}
	}
	addr := srv.Addr().String()
	a.metricsAddr.Store(&addr)
	a.log.Info("metrics endpoint ready", "addr", addr, "scrape_tokens", a.tokens.Len())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx); err != nil {
			a.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	return func() { <-done }
}

// MetricsAddr is the address /metrics listens on ("" while it does not):
// the one reported in Hello.
func (a *Agent) MetricsAddr() string {
	if p := a.metricsAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// SetScrapeAuth makes digests (SHA-256 of each scrape token) the set
// /metrics admits, and persists it in the data dir. The server's
// ScrapeAuth messages arrive here; tests that run no server call it
// directly.
func (a *Agent) SetScrapeAuth(digests [][]byte) error {
	return a.tokens.Replace(digests)
}
