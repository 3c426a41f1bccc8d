package hoststat

import (
	"context"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fixture(t *testing.T) *Reader {
	t.Helper()
	r, err := NewAt("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	// Every mount is a 4 KiB-block filesystem of 1,000 blocks, 250 free.
	r.statfs = func(path string, st *unix.Statfs_t) error {
		*st = unix.Statfs_t{Bsize: 4096, Frsize: 4096, Blocks: 1000, Bfree: 300, Bavail: 250, Files: 500, Ffree: 400}
		return nil
	}
	return r
}

func TestCPU(t *testing.T) {
	c, err := fixture(t).CPU()
	if err != nil {
		t.Fatal(err)
	}
	// USER_HZ is 100: 10000 ticks are 100 s.
	want := CPUTimes{User: 100, Nice: 2, System: 30, Idle: 800, IOWait: 5, IRQ: 0.6, SoftIRQ: 0.7, Steal: 0.08}
	if c.Times != want || c.CPUs != 2 || !c.BootTime.Equal(time.Unix(1764979200, 0)) {
		t.Fatalf("CPU = %+v", c)
	}
	if m := c.Times.Modes(); m[3].Mode != "idle" || m[3].Seconds != 800 {
		t.Fatalf("Modes()[3] = %+v", m[3])
	}
}

func TestLoadMemoryNetwork(t *testing.T) {
	r := fixture(t)
	l, err := r.Load()
	if err != nil || l != (Load{0.5, 0.25, 0.1}) {
		t.Fatalf("Load = %+v, %v", l, err)
	}
	m, err := r.Memory()
	if err != nil || m != (Memory{Total: 2048000 * 1024, Available: 1024000 * 1024}) {
		t.Fatalf("Memory = %+v, %v", m, err)
	}
	n, err := r.Network()
	want := []NetDevice{{"eth0", 1000000, 3000000}, {"wg0", 500, 600}}
	if err != nil || !reflect.DeepEqual(n, want) {
		t.Fatalf("Network = %+v, %v", n, err)
	}
}

func TestFilesystems(t *testing.T) {
	fss, err := fixture(t).Filesystems()
	if err != nil {
		t.Fatal(err)
	}
	var got [][3]string
	for _, f := range fss {
		got = append(got, [3]string{f.MountPoint, f.Device, f.FSType})
		if f.SizeBytes != 4096*1000 || f.AvailBytes != 4096*250 || f.Files != 500 || f.FilesFree != 400 {
			t.Errorf("%s: figures %+v", f.MountPoint, f)
		}
	}
	// proc, sysfs, devtmpfs, tmpfs, cgroup2, nfs4 and squashfs are out; the
	// bind mount of /home's filesystem and the second btrfs subvolume are
	// the same filesystems as /home and /data.
	want := [][3]string{
		{"/", "/dev/sda1", "ext4"},
		{"/data", "/dev/sdc", "btrfs"},
		{"/home", "/dev/sdb1", "xfs"},
		{"/var/lib/docker/overlay2/abc/merged", "overlay", "overlay"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Filesystems =\n%q\nwant\n%q", got, want)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/srv/my\040site`); got != "/srv/my site" {
		t.Fatalf("unescape = %q", got)
	}
}

func TestBusyBetween(t *testing.T) {
	a := CPUTimes{User: 10, Idle: 80, IOWait: 10}
	b := CPUTimes{User: 40, Idle: 140, IOWait: 20}
	// 100 s passed, 70 of them idle or iowait.
	if got := busyBetween(a, b); got < 0.2999 || got > 0.3001 {
		t.Fatalf("busy = %v, want 0.3", got)
	}
	if got := busyBetween(a, a); got != 0 {
		t.Fatalf("busy with no time passed = %v", got)
	}
}

// TestHost reads this machine's /proc: the parsers must accept the real
// thing, not only the fixtures.
func TestHost(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.CPU()
	if err != nil || c.CPUs < 1 || c.Times.total() <= 0 {
		t.Fatalf("CPU = %+v, %v", c, err)
	}
	if m, err := r.Memory(); err != nil || m.Total == 0 || m.Available > m.Total {
		t.Fatalf("Memory = %+v, %v", m, err)
	}
	fss, err := r.Filesystems()
	if err != nil || len(fss) == 0 {
		t.Fatalf("Filesystems = %+v, %v", fss, err)
	}
	if _, err := r.Network(); err != nil {
		t.Fatal(err)
	}
	busy, err := r.BusyRatio(context.Background(), 50*time.Millisecond)
	if err != nil || busy < 0 || busy > 1 {
		t.Fatalf("BusyRatio = %v, %v", busy, err)
	}
}
