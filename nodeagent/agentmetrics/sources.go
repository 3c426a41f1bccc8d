package agentmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
)

var (
	dnsQueriesDesc = prometheus.NewDesc("npanel_dns_queries_total",
		"Queries PowerDNS answered since it started, by transport.", []string{"protocol"}, nil)
	dnsZonesDesc = prometheus.NewDesc("npanel_dns_zones",
		"Zones the node's PowerDNS serves (primary and secondary).", nil, nil)
	dbSizeDesc = prometheus.NewDesc("npanel_database_size_bytes",
		"Size of a database (MariaDB: data and index length; PostgreSQL: pg_database_size).", []string{"engine", "database"}, nil)
	mailQueueDesc = prometheus.NewDesc("npanel_mail_queue_messages",
		"Messages in Exim's queue.", nil, nil)
	diskUsedDesc = prometheus.NewDesc("npanel_account_disk_used_bytes",
		"Disk space an account uses: its quota's count, or a walk of its home where quotas are off.", []string{"account"}, nil)
	diskQuotaDesc = prometheus.NewDesc("npanel_account_disk_quota_bytes",
		"An account's disk quota; 0 when it has none.", []string{"account"}, nil)
	inodesDesc = prometheus.NewDesc("npanel_account_inodes_used",
		"Inodes (files and directories) an account uses.", []string{"account"}, nil)
)

type dnsCollector struct{ c *cached[dns.Stats] }

func (d *dnsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dnsQueriesDesc
	ch <- dnsZonesDesc
}

func (d *dnsCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := d.c.get()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(dnsQueriesDesc, prometheus.CounterValue, float64(st.UDPQueries), "udp")
	ch <- prometheus.MustNewConstMetric(dnsQueriesDesc, prometheus.CounterValue, float64(st.TCPQueries), "tcp")
	ch <- prometheus.MustNewConstMetric(dnsZonesDesc, prometheus.GaugeValue, float64(st.Zones))
}

type dbCollector struct{ c *cached[[]db.DatabaseSize] }

func (d *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dbSizeDesc
}

func (d *dbCollector) Collect(ch chan<- prometheus.Metric) {
	// On a failure of one engine the other's sizes are still there.
	sizes, _ := d.c.get()
	for _, s := range sizes {
		ch <- prometheus.MustNewConstMetric(dbSizeDesc, prometheus.GaugeValue, float64(s.Bytes), s.Engine, s.Name)
	}
}

type mailCollector struct{ c *cached[int] }

func (m *mailCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mailQueueDesc
}

func (m *mailCollector) Collect(ch chan<- prometheus.Metric) {
	n, ok := m.c.get()
	if ok {
		ch <- prometheus.MustNewConstMetric(mailQueueDesc, prometheus.GaugeValue, float64(n))
	}
}

type diskCollector struct{ c *cached[[]AccountDisk] }

func (d *diskCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- diskUsedDesc
	ch <- diskQuotaDesc
	ch <- inodesDesc
}

func (d *diskCollector) Collect(ch chan<- prometheus.Metric) {
	accts, _ := d.c.get()
	for _, a := range accts {
		ch <- prometheus.MustNewConstMetric(diskUsedDesc, prometheus.GaugeValue, float64(a.UsedBytes), a.Account)
		ch <- prometheus.MustNewConstMetric(diskQuotaDesc, prometheus.GaugeValue, float64(a.QuotaBytes), a.Account)
		ch <- prometheus.MustNewConstMetric(inodesDesc, prometheus.GaugeValue, float64(a.Inodes), a.Account)
	}
}
