// Package hoststat reads the host's own figures (CPU time, load, memory,
// filesystems, network, boot time) from /proc and statfs(2), for the
// agent's /metrics and the node_metrics action. It reads the host the agent
// runs on: nPanel nodes need no second exporter.
package hoststat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// CPUTimes are seconds spent in each mode, summed over all CPUs since boot.
type CPUTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal float64
}

// Modes lists the times by the mode names of the contract's
// npanel_node_cpu_seconds_total{mode}, in a fixed order.
func (c CPUTimes) Modes() [8]struct {
	Mode    string
	Seconds float64
} {
	return [8]struct {
		Mode    string
		Seconds float64
	}{
		{"user", c.User}, {"nice", c.Nice}, {"system", c.System}, {"idle", c.Idle},
		{"iowait", c.IOWait}, {"irq", c.IRQ}, {"softirq", c.SoftIRQ}, {"steal", c.Steal},
	}
}

// total is every mode together. Guest time is already inside user and nice.
func (c CPUTimes) total() float64 {
	return c.User + c.Nice + c.System + c.Idle + c.IOWait + c.IRQ + c.SoftIRQ + c.Steal
}

// CPU is one reading of /proc/stat.
type CPU struct {
	Times    CPUTimes
	CPUs     int
	BootTime time.Time
}

// Load is /proc/loadavg.
type Load struct{ Load1, Load5, Load15 float64 }

// Memory is the part of /proc/meminfo the dashboards use, in bytes.
type Memory struct{ Total, Available uint64 }

// Filesystem is one real filesystem and its statfs figures.
type Filesystem struct {
	MountPoint, Device, FSType string
	SizeBytes, AvailBytes      uint64 // avail: what unprivileged users may still write
	Files, FilesFree           uint64
}

// NetDevice is one interface's byte counters.
type NetDevice struct {
	Name             string
	RxBytes, TxBytes uint64
}

// Reader reads one proc tree (the host's /proc, or a test fixture).
type Reader struct {
	fs procfs.FS
	// statfs is unix.Statfs; tests replace it.
	statfs func(path string, st *unix.Statfs_t) error
}

// New reads the host's /proc.
func New() (*Reader, error) { return NewAt(procfs.DefaultMountPoint) }

// NewAt reads the proc tree at root; tests point it at testdata.
func NewAt(root string) (*Reader, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("hoststat: %w", err)
	}
	return &Reader{fs: fs, statfs: unix.Statfs}, nil
}

// CPU reads /proc/stat.
func (r *Reader) CPU() (CPU, error) {
	st, err := r.fs.Stat()
	if err != nil {
		return CPU{}, fmt.Errorf("hoststat: read stat: %w", err)
	}
	t := st.CPUTotal
	return CPU{
		Times: CPUTimes{User: t.User, Nice: t.Nice, System: t.System, Idle: t.Idle,
			IOWait: t.Iowait, IRQ: t.IRQ, SoftIRQ: t.SoftIRQ, Steal: t.Steal},
		CPUs:     len(st.CPU),
		BootTime: time.Unix(int64(st.BootTime), 0),
	}, nil
}

// Load reads /proc/loadavg.
func (r *Reader) Load() (Load, error) {
	l, err := r.fs.LoadAvg()
	if err != nil {
		return Load{}, fmt.Errorf("hoststat: read loadavg: %w", err)
	}
	return Load{l.Load1, l.Load5, l.Load15}, nil
}

// Memory reads /proc/meminfo.
func (r *Reader) Memory() (Memory, error) {
	m, err := r.fs.Meminfo()
	if err != nil {
		return Memory{}, fmt.Errorf("hoststat: read meminfo: %w", err)
	}
	if m.MemTotalBytes == nil || m.MemAvailableBytes == nil {
		// MemAvailable exists since Linux 3.14; every supported distro has it.
		return Memory{}, errors.New("hoststat: meminfo lacks MemTotal or MemAvailable")
	}
	return Memory{Total: *m.MemTotalBytes, Available: *m.MemAvailableBytes}, nil
}

// Network reads /proc/net/dev, sorted by name, without the loopback device
// (its traffic is the node talking to itself).
func (r *Reader) Network() ([]NetDevice, error) {
	nd, err := r.fs.NetDev()
	if err != nil {
		return nil, fmt.Errorf("hoststat: read net/dev: %w", err)
	}
	out := make([]NetDevice, 0, len(nd))
	for name, l := range nd {
		if name == "lo" {
			continue
		}
		out = append(out, NetDevice{Name: name, RxBytes: l.RxBytes, TxBytes: l.TxBytes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// realFS are the filesystem types that hold data on a device. An allow-list
// rather than a deny-list: the kernel keeps adding pseudo filesystems
// (bpf, tracefs, nsfs, ...), and a new one must not appear as a disk that
// is forever full. overlay is in because containers' roots are overlays;
// tmpfs, network filesystems (statfs can hang on a dead server) and
// squashfs (read-only images, always 100% used) are out.
var realFS = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "zfs": true,
	"overlay": true, "vfat": true, "exfat": true, "f2fs": true, "reiserfs": true,
	"jfs": true, "nilfs2": true, "bcachefs": true, "fuseblk": true, "ntfs3": true,
}

// Filesystems lists the real filesystems mounted on the host, once per
// device (a bind mount or a btrfs subvolume mounted twice is one
// filesystem): the shortest mount point of each device is kept. Sorted by
// mount point. A mount that statfs fails on is left out.
func (r *Reader) Filesystems() ([]Filesystem, error) {
	mounts, err := r.fs.GetMounts()
	if err != nil {
		return nil, fmt.Errorf("hoststat: read mountinfo: %w", err)
	}
	best := map[string]*procfs.MountInfo{}
	for _, m := range mounts {
		if !realFS[m.FSType] {
			continue
		}
		m.MountPoint = unescape(m.MountPoint)
		key := m.MajorMinorVer
		if m.FSType == "btrfs" {
			// Each btrfs subvolume has its own anonymous device number but
			// they share one filesystem: the block device names it.
			key = "btrfs\x00" + m.Source
		}
		if b, ok := best[key]; !ok || len(m.MountPoint) < len(b.MountPoint) {
			best[key] = m
		}
	}
	out := make([]Filesystem, 0, len(best))
	for _, m := range best {
		var st unix.Statfs_t
		if err := r.statfs(m.MountPoint, &st); err != nil {
			continue // unmounted since, or not ours to see
		}
		bs := uint64(st.Bsize)
		if st.Frsize > 0 {
			bs = uint64(st.Frsize)
		}
		out = append(out, Filesystem{
			MountPoint: m.MountPoint, Device: unescape(m.Source), FSType: m.FSType,
			SizeBytes: st.Blocks * bs, AvailBytes: st.Bavail * bs,
			Files: st.Files, FilesFree: st.Ffree,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MountPoint < out[j].MountPoint })
	return out, nil
}

// unescape undoes the kernel's octal escapes in mountinfo (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return filepath.Clean(b.String())
}

// BusyRatio is the share of CPU time spent outside idle and iowait, over
// all CPUs, between two readings taken interval apart (0..1).
func (r *Reader) BusyRatio(ctx context.Context, interval time.Duration) (float64, error) {
	a, err := r.CPU()
	if err != nil {
		return 0, err
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
	}
	b, err := r.CPU()
	if err != nil {
		return 0, err
	}
	return busyBetween(a.Times, b.Times), nil
}

// busyBetween is the busy share between two readings; 0 when no time passed.
func busyBetween(a, b CPUTimes) float64 {
	total := b.total() - a.total()
	if total <= 0 {
		return 0
	}
	idle := (b.Idle + b.IOWait) - (a.Idle + a.IOWait)
	return math.Min(1, math.Max(0, 1-idle/total))
}
