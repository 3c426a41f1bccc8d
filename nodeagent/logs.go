package nodeagent

import (
	"fmt"
	"net/url"

	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/logship"
	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/nodeagent/services"
)

// checkLoki refuses a Loki URL that can never work, at start rather than
// at the first push.
func checkLoki(cfg Config) error {
	if cfg.LokiURL == "" {
		return nil
	}
	u, err := url.Parse(cfg.LokiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		// Credentials belong in --loki-username/--loki-password-file, not
		// in a URL that ends up in argv and logs.
		return fmt.Errorf("--loki-url must be an http(s) URL without credentials, e.g. http://loki:3100/loki/api/v1/push")
	}
	if cfg.LokiBufferBytes < 0 {
		return fmt.Errorf("--loki-buffer-bytes %d is negative", cfg.LokiBufferBytes)
	}
	return nil
}

// startLogs starts the tail engine (always: the traffic counters read the
// access logs through it) with its consumers, and returns what stops them.
// Failures are logged, never fatal: a node serves its sites without logs.
func (a *Agent) startLogs() (stop func()) {
	log := a.log.With("component", "logs")
	var ship *logship.Shipper
	if a.cfg.LokiURL != "" {
		var err error
		ship, err = logship.New(logship.Config{
			URL:         a.cfg.LokiURL,
			TenantID:    a.cfg.LokiTenant,
			Username:    a.cfg.LokiUsername,
			Password:    a.cfg.LokiPassword,
			BearerToken: a.cfg.LokiBearerToken,
			Node:        a.node,
			DataDir:     a.cfg.DataDir,
			BufferBytes: a.cfg.LokiBufferBytes,
			Logger:      a.log,
			Registry:    a.reg,
		})
		if err != nil {
			log.Error("log shipping to Loki did not start", "err", err)
			ship = nil
		}
	}
	eng, err := logtail.New(logtail.Config{
		DataDir:      a.cfg.DataDir,
		DomainLogDir: a.profile.Web().DomainLogDir,
		Services: func() []services.Status {
			if a.services == nil {
				return nil
			}
			return a.services.Status()
		},
		Consumers: a.logConsumers(ship),
		Logger:    a.log,
		Registry:  a.reg,
	})
	if err != nil {
		log.Error("log tail engine did not start", "err", err)
		if ship != nil {
			ship.Close()
		}
		return func() {}
	}
	if ship != nil {
		ship.Start()
	}
	eng.Start()
	if a.cfg.AgentLog != nil {
		a.cfg.AgentLog.Attach(eng)
	}
	return func() {
		if a.cfg.AgentLog != nil {
			a.cfg.AgentLog.Detach(eng)
		}
		if err := eng.Close(); err != nil {
			log.Warn("save log positions", "err", err)
		}
		if w := a.webModule(); w != nil {
			if err := w.Traffic().Flush(); err != nil {
				log.Warn("save traffic counters", "err", err)
			}
		}
		if ship != nil {
			ship.Close()
		}
	}
}

// webModule is the web module this agent runs, nil without one.
func (a *Agent) webModule() *web.Module {
	for _, m := range a.cfg.Modules {
		if w, ok := m.(*web.Module); ok {
			return w
		}
	}
	return nil
}

// logConsumers are the readers of every new log line, called in turn.
func (a *Agent) logConsumers(ship *logship.Shipper) []logtail.Consumer {
	// The counters first: they count every line whether or not Loki is set.
	var cs []logtail.Consumer
	if w := a.webModule(); w != nil {
		cs = append(cs, w.Traffic())
	}
	cs = append(cs, a.metricsLogConsumers()...)
	if ship != nil {
		cs = append(cs, ship)
	}
	return cs
}
