package dns

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func freeLoopbackPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSetupSupervised runs pdns_server exactly as Setup's spec says and
// drives it with an action.
func TestSetupSupervised(t *testing.T) {
	pdns.RequireServer(t)
	prefix := t.TempDir()
	p := platform.Debian12(prefix)
	p.DNSListen = "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	p.DNSAPIListen = "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	env := &actions.Env{Node: "n", Logger: slog.New(slog.DiscardHandler), Profile: p, DataDir: t.TempDir()}
	ctx := context.Background()
	specs, err := NewModule().Setup(ctx, env)
	if err != nil || len(specs) != 1 {
		t.Fatalf("Setup = %v, %v", specs, err)
	}
	spec := specs[0]
	if spec.Name != "pdns" || spec.Binary != "/usr/sbin/pdns_server" || spec.ReloadSignal != 0 || spec.Unit != "" {
		t.Fatalf("spec %+v", spec)
	}
	key, _ := os.ReadFile(filepath.Join(env.DataDir, KeyFile))
	if fi, _ := os.Stat(filepath.Join(env.DataDir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode())
	}
	conf, _ := os.ReadFile(filepath.Join(p.DNS().ConfigDir, "pdns.conf"))
	if !strings.Contains(string(conf), "api-key="+strings.TrimSpace(string(key))) || !strings.HasPrefix(p.DNS().ConfigDir, prefix) {
		t.Fatalf("pdns.conf:\n%s", conf)
	}
	// The database's settings are deliberate: readers never blocked by a
	// commit, and no sync at each commit (the control plane restores what
	// a power loss rolls back).
	for _, want := range []string{"\ngsqlite3-pragma-journal-mode=WAL\n", "\ngsqlite3-pragma-synchronous=1\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("pdns.conf lacks %q:\n%s", strings.TrimSpace(want), conf)
		}
	}
	// Setup twice is a no-op and keeps the key.
	if _, err := NewModule().Setup(ctx, env); err != nil {
		t.Fatal(err)
	}
	if key2, _ := os.ReadFile(filepath.Join(env.DataDir, KeyFile)); string(key2) != string(key) {
		t.Fatal("second Setup changed the key")
	}

	cmd := exec.Command(spec.Binary, spec.Args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, _ := os.Create(filepath.Join(prefix, "pdns.log"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); _ = cmd.Wait(); out.Close() })
	if spec.Ready(ctx) != nil {
		time.Sleep(time.Second)
		if err := spec.Ready(ctx); err != nil {
			b, _ := os.ReadFile(filepath.Join(prefix, "pdns.log"))
			t.Logf("%s", b)
		}
	}
	waitFor(t, 10*time.Second, "Ready", func() bool { return spec.Ready(ctx) == nil })
	if v, err := spec.Version(ctx); err != nil || v == "" {
		t.Fatalf("Version = %q, %v", v, err)
	}
	r := apply(t, env, testModule.NewEnsureZone(primarySpec("setup.npanel-test.com")))
	if got := serialAt(t, p.DNSListen, "setup.npanel-test.com"); got != r.Serial {
		t.Fatalf("served serial %d, want %d", got, r.Serial)
	}
}

func TestProductionDropIn(t *testing.T) {
	p := platform.Debian12("")
	got := renderAPIConf(p, "k")
	for _, want := range []string{"api=yes", "api-key=k", "webserver-address=127.0.0.1", "webserver-port=8081"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("drop-in lacks %q:\n%s", want, got)
		}
	}
	if d := platform.Alma9("").DNS(); d.ConfigDir != "/etc/pdns" || d.Unit != "pdns.service" {
		t.Errorf("alma9 paths %+v", d)
	}
	if d := platform.Debian12("/x").DNS(); d.Database != "/x/var/lib/powerdns/pdns.sqlite3" || d.SocketDir != "/x/run/pdns" {
		t.Errorf("prefixed paths %+v", d)
	}
}

func TestValidateActions(t *testing.T) {
	good := primarySpec("v.npanel-test.com")
	tests := []struct {
		name string
		a    actions.Action
		want string
	}{
		{"primary ok", testModule.NewEnsureZone(good), ""},
		{"no kind", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com"}), "want PRIMARY or SECONDARY"},
		{"bad record", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_PRIMARY, Nameservers: []string{"ns.b.com"}, Records: []*agentpb.Record{rec("a.com", "MX", "192.0.2.1", 0, 10)}}), "IP address"},
		{"cname conflict", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_PRIMARY, Nameservers: []string{"ns.b.com"}, Records: []*agentpb.Record{rec("w.a.com", "CNAME", "a.com", 0, 0), rec("w.a.com", "TXT", "x", 0, 0)}}), "coexist"},
		{"bad secondary ip", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_PRIMARY, Nameservers: []string{"ns.b.com"}, Secondaries: []string{"ns.b.com"}}), "not an IP"},
		{"secondary with records", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY, Masters: []string{"192.0.2.1"}, Records: good.Records}), "takes only masters"},
		{"secondary no masters", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY}), "at least one master"},
		{"delete bad name", testModule.NewDeleteZone(&agentpb.DeleteZoneAction{Zone: "a..com"}), "empty label"},
		{"sync dup", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Zones: []*agentpb.SecondaryZone{{Zone: "a.com", Masters: []string{"192.0.2.1"}}, {Zone: "A.com.", Masters: []string{"192.0.2.1"}}}}), "twice"},
		{"sync master port", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Zones: []*agentpb.SecondaryZone{{Zone: "a.com", Masters: []string{"192.0.2.1:0"}}}}), "usable"},
		{"sync no masters", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Zones: []*agentpb.SecondaryZone{{Zone: "a.com"}}}), "at least one master"},
		{"sync bucket out of range", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Bucket: 2, Buckets: 2}), "bucket 2 of 2"},
		{"sync too many buckets", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Buckets: 1 << 20}), "buckets, at most"},
		{"sync bucket removes", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Buckets: 1, Removed: []string{"a.com"}}), "no zones to remove"},
		{"sync zone in another bucket", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Bucket: 1 - dnszone.Bucket("a.com", 2), Buckets: 2,
			Zones: []*agentpb.SecondaryZone{{Zone: "a.com", Masters: []string{"192.0.2.1"}}}}), "not in bucket"},
		{"sync removed twice", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Removed: []string{"a.com", "A.com."}}), "listed twice"},
		{"sync removed and listed", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Removed: []string{"a.com"},
			Zones: []*agentpb.SecondaryZone{{Zone: "a.com", Masters: []string{"192.0.2.1"}}}}), "listed twice"},
		{"sync removed bad name", testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Removed: []string{"bad..com"}}), "zone name"},
		{"secondary with a serial", testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: "a.com", Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY, Masters: []string{"192.0.2.1"}, MinSerial: 5}), "takes only masters"},
		{"rotate no step", testModule.NewRotateZoneKeys(&agentpb.RotateZoneKeysAction{Zone: "a.com"}), "want PUBLISH"},
		{"rotate interval", testModule.NewRotateZoneKeys(&agentpb.RotateZoneKeysAction{Zone: "a.com", Step: agentpb.RotateZoneKeysAction_STEP_PUBLISH, MinIntervalSeconds: 1 << 30}), "exceeds"},
	}
	for _, tt := range tests {
		err := tt.a.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.want)
		}
	}
}
