// Package agentmetrics is the node agent's /metrics: collectors for the
// host (from hoststat), the daemons, DNS, databases, mail and accounts' disk
// use, and the listener that serves them to Prometheus behind scrape
// tokens or a cluster certificate.
//
// Host figures and daemon states are read at each scrape (in-memory or
// /proc). Every other source costs a process, a query or a walk, and is
// read through a cache with its own refresh interval, in the background of
// a scrape that finds it stale: a scrape never waits on a slow source
// after the first one.
package agentmetrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/hoststat"
	"github.com/npanel/npanel/nodeagent/services"
)

// ErrAbsent is returned by a source whose service this node does not run:
// its series and its source_up are left out rather than reported down.
var ErrAbsent = errors.New("not on this node")

// AccountDisk is one account's disk figures.
type AccountDisk struct {
	Account                       string
	UsedBytes, QuotaBytes, Inodes uint64 // QuotaBytes 0: no quota
}

// Sources are what the collectors read. A nil field leaves its families
// out.
type Sources struct {
	Host        *hoststat.Reader
	Services    func() []services.Status
	DNS         func(context.Context) (dns.Stats, error)
	Databases   func(context.Context) ([]db.DatabaseSize, error)
	MailQueue   func(context.Context) (int, error)
	AccountDisk func(context.Context) ([]AccountDisk, error)
	// MailDeliveries counts from Exim's log; the agent hands it to the tail
	// engine as a consumer.
	MailDeliveries *MailDeliveries
	Logger         *slog.Logger
}

// Refresh intervals of the cached sources. Disk use refreshes every minute
// from quotas; the walk fallback behind it has its own, longer, interval.
const (
	dnsEvery   = 30 * time.Second
	dbEvery    = 5 * time.Minute
	mailEvery  = 15 * time.Second
	diskEvery  = time.Minute
	dnsTimeout = 10 * time.Second
	dbTimeout  = 30 * time.Second
	mailTimout = 10 * time.Second
	// A walk round stops at this bound and resumes at the next round.
	diskTimeout = 2 * time.Minute
)

// Register adds the collectors of src to reg. close ends the refreshes
// of the cached sources that are running (a walk of homes can take
// minutes) and makes later ones fail at once: the agent calls it when it
// stops.
func Register(reg prometheus.Registerer, src Sources) (close func(), err error) {
	base, cancel := context.WithCancel(context.Background())
	log := src.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cs []prometheus.Collector
	if src.Host != nil {
		cs = append(cs, newHostCollector(src.Host, log))
	}
	if src.Services != nil {
		cs = append(cs, &servicesCollector{status: src.Services})
	}
	if src.MailDeliveries != nil {
		cs = append(cs, src.MailDeliveries)
	}
	up := &sourceUpCollector{}
	if src.DNS != nil {
		c := newCached(base, "dns", dnsEvery, dnsTimeout, log, src.DNS)
		cs, up.srcs = append(cs, &dnsCollector{c: c}), append(up.srcs, c)
	}
	if src.Databases != nil {
		c := newCached(base, "databases", dbEvery, dbTimeout, log, src.Databases)
		cs, up.srcs = append(cs, &dbCollector{c: c}), append(up.srcs, c)
	}
	if src.MailQueue != nil {
		c := newCached(base, "mail_queue", mailEvery, mailTimout, log, src.MailQueue)
		cs, up.srcs = append(cs, &mailCollector{c: c}), append(up.srcs, c)
	}
	if src.AccountDisk != nil {
		c := newCached(base, "account_disk", diskEvery, diskTimeout, log, src.AccountDisk)
		cs, up.srcs = append(cs, &diskCollector{c: c}), append(up.srcs, c)
	}
	if len(up.srcs) > 0 {
		cs = append(cs, up)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			cancel()
			return nil, fmt.Errorf("register agent metrics: %w", err)
		}
	}
	return cancel, nil
}

var sourceUpDesc = prometheus.NewDesc("npanel_agent_metrics_source_up",
	"1 when the last read of a cached metrics source (dns, databases, mail_queue, account_disk) succeeded, 0 when it failed.",
	[]string{"source"}, nil)

// sourceUpCollector reports the cached sources' last refresh, so that a
// missing family can be told from a failing source.
type sourceUpCollector struct {
	srcs []interface {
		state() (name string, up, known bool)
	}
}

func (c *sourceUpCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sourceUpDesc }

func (c *sourceUpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.srcs {
		if name, up, known := s.state(); known {
			ch <- prometheus.MustNewConstMetric(sourceUpDesc, prometheus.GaugeValue, b2f(up), name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
