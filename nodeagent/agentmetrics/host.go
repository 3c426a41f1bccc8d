package agentmetrics

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/hoststat"
)

// hostCollector reads /proc and statfs at every scrape: a few small files
// and one statfs per real filesystem, cheaper than keeping them fresh.
type hostCollector struct {
	r   *hoststat.Reader
	log *slog.Logger

	cpu, cpus, load1, load5, load15, memTotal, memAvail, boot *prometheus.Desc
	fsSize, fsAvail, fsFiles, fsFilesFree                     *prometheus.Desc
	netRx, netTx                                              *prometheus.Desc
}

func newHostCollector(r *hoststat.Reader, log *slog.Logger) *hostCollector {
	fsl := []string{"mountpoint", "device", "fstype"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("npanel_node_"+name, help, labels, nil)
	}
	return &hostCollector{
		r: r, log: log,
		cpu:         d("cpu_seconds_total", "Seconds the host's CPUs spent in each mode, summed over all CPUs.", "mode"),
		cpus:        d("cpus", "Number of CPUs of the host."),
		load1:       d("load1", "1-minute load average."),
		load5:       d("load5", "5-minute load average."),
		load15:      d("load15", "15-minute load average."),
		memTotal:    d("memory_total_bytes", "Usable memory of the host (MemTotal)."),
		memAvail:    d("memory_available_bytes", "Memory available to new work without swapping (MemAvailable)."),
		boot:        d("boot_time_seconds", "When the host booted, in unix seconds."),
		fsSize:      d("filesystem_size_bytes", "Size of a real filesystem.", fsl...),
		fsAvail:     d("filesystem_avail_bytes", "Space on a filesystem unprivileged users may still use.", fsl...),
		fsFiles:     d("filesystem_files", "Inodes of a filesystem.", fsl...),
		fsFilesFree: d("filesystem_files_free", "Free inodes of a filesystem.", fsl...),
		netRx:       d("network_receive_bytes_total", "Bytes received by a network device (loopback left out).", "device"),
		netTx:       d("network_transmit_bytes_total", "Bytes sent by a network device (loopback left out).", "device"),
	}
}

func (h *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{h.cpu, h.cpus, h.load1, h.load5, h.load15, h.memTotal, h.memAvail, h.boot,
		h.fsSize, h.fsAvail, h.fsFiles, h.fsFilesFree, h.netRx, h.netTx} {
		ch <- d
	}
}

// Collect leaves out what cannot be read (logged at debug level): a
// missing family is what the "absent" alert rules look for.
func (h *hostCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	if c, err := h.r.CPU(); err != nil {
		h.log.Debug("host metrics", "err", err)
	} else {
		for _, m := range c.Times.Modes() {
			counter(h.cpu, m.Seconds, m.Mode)
		}
		gauge(h.cpus, float64(c.CPUs))
		gauge(h.boot, float64(c.BootTime.Unix()))
	}
	if l, err := h.r.Load(); err != nil {
		h.log.Debug("host metrics", "err", err)
	} else {
		gauge(h.load1, l.Load1)
		gauge(h.load5, l.Load5)
		gauge(h.load15, l.Load15)
	}
	if m, err := h.r.Memory(); err != nil {
		h.log.Debug("host metrics", "err", err)
	} else {
		gauge(h.memTotal, float64(m.Total))
		gauge(h.memAvail, float64(m.Available))
	}
	if fss, err := h.r.Filesystems(); err != nil {
		h.log.Debug("host metrics", "err", err)
	} else {
		for _, f := range fss {
			gauge(h.fsSize, float64(f.SizeBytes), f.MountPoint, f.Device, f.FSType)
			gauge(h.fsAvail, float64(f.AvailBytes), f.MountPoint, f.Device, f.FSType)
			gauge(h.fsFiles, float64(f.Files), f.MountPoint, f.Device, f.FSType)
			gauge(h.fsFilesFree, float64(f.FilesFree), f.MountPoint, f.Device, f.FSType)
		}
	}
	if devs, err := h.r.Network(); err != nil {
		h.log.Debug("host metrics", "err", err)
	} else {
		for _, d := range devs {
			counter(h.netRx, float64(d.RxBytes), d.Name)
			counter(h.netTx, float64(d.TxBytes), d.Name)
		}
	}
}
