package packaging

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/deploy/internal/rootfs"
)

const testVersion = "0.1.0~git1.test"

// pkgs are the packages built once for this file's tests, through Build
// as make package calls it, from binaries built as make package builds them.
var pkgs Result

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "npanel-package-test-")
	if err != nil {
		panic(err)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		repo, err := filepath.Abs("../..")
		if err != nil {
			panic(err)
		}
		binary, agentBinary := filepath.Join(dir, "npanel"), filepath.Join(dir, "npanel-agent")
		for _, b := range []struct{ out, pkg string }{{binary, "./cmd/npanel"}, {agentBinary, "./cmd/npanel-agent"}} {
			build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", b.out, b.pkg)
			build.Dir = repo
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
			if fi, err := os.Stat(b.out); err == nil {
				fmt.Printf("%s: %d bytes\n", filepath.Base(b.out), fi.Size())
			}
		}
		start := time.Now()
		pkgs, err = Build(Options{Binary: binary, AgentBinary: agentBinary, Version: testVersion, OutDir: filepath.Join(dir, "dist"), Dir: filepath.Join(repo, "packaging")})
		if err != nil {
			fmt.Fprintln(os.Stderr, "build packages:", err)
			return 1
		}
		for _, p := range []string{pkgs.Deb, pkgs.RPM} {
			if fi, err := os.Stat(p); err == nil {
				fmt.Printf("%s: %d bytes\n", filepath.Base(p), fi.Size())
			}
		}
		fmt.Printf("packages built in %v\n", time.Since(start).Round(time.Second))
		return m.Run()
	}()
	os.Exit(code)
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// entry is one file of a package listing.
type entry struct{ mode, owner, group string }

// want is what both packages must hold, with mode, owner and group.
var want = map[string]entry{
	"/usr/bin/npanel":                               {"-rwxr-xr-x", "root", "root"},
	"/usr/bin/npanel-agent":                         {"-rwxr-xr-x", "root", "root"},
	"/usr/lib/systemd/system/npanel-server.service": {"-rw-r--r--", "root", "root"},
	"/usr/lib/systemd/system/npanel-agent.service":  {"-rw-r--r--", "root", "root"},
	"/etc/npanel":                                   {"drwxr-x---", "root", "npanel"},
	"/etc/npanel/server.yaml":                       {"-rw-r-----", "root", "npanel"},
	"/etc/npanel/agent.yaml":                        {"-rw-------", "root", "root"},
	"/var/lib/npanel":                               {"drwxr-xr-x", "root", "root"},
	"/var/lib/npanel/server":                        {"drwx------", "npanel", "npanel"},
	"/var/lib/npanel/agent":                         {"drwx------", "root", "root"},
	"/var/lib/npanel/backups":                       {"drwx------", "root", "root"},
	"/var/lib/npanel/import":                        {"drwx------", "root", "root"},
	"/usr/share/man/man1/npanel.1.gz":               {"-rw-r--r--", "root", "root"},
	"/usr/share/man/man1/npanel-server.1.gz":        {"-rw-r--r--", "root", "root"},
	"/usr/share/man/man1/npanel-agent.1.gz":         {"-rw-r--r--", "root", "root"},
	"/usr/share/man/man1/npanel-ctl-node-add.1.gz":  {"-rw-r--r--", "root", "root"},
}

func checkListing(t *testing.T, got map[string]entry) {
	t.Helper()
	for path, w := range want {
		g, ok := got[path]
		if !ok {
			t.Errorf("%s missing", path)
			continue
		}
		if g != w {
			t.Errorf("%s: %v, want %v", path, g, w)
		}
	}
}

func TestPackageNames(t *testing.T) {
	if got, want := filepath.Base(pkgs.Deb), "npanel_0.1.0~git1.test_amd64.deb"; got != want {
		t.Errorf("deb %s, want %s", got, want)
	}
	if got, want := filepath.Base(pkgs.RPM), "npanel-0.1.0~git1.test.x86_64.rpm"; got != want {
		t.Errorf("rpm %s, want %s", got, want)
	}
	for _, v := range []string{"", "v1.0", "1.0-2", "1.0_2", "1:1.0", "1.0 beta"} {
		if _, err := Build(Options{Binary: "/bin/true", Version: v, OutDir: t.TempDir(), Dir: "."}); err == nil || !strings.Contains(err.Error(), "version") {
			t.Errorf("version %q: err = %v, want a version error", v, err)
		}
	}
}

func TestDeb(t *testing.T) {
	got := map[string]entry{}
	for _, line := range strings.Split(run(t, "/usr/bin/dpkg-deb", "-c", pkgs.Deb), "\n") {
		// drwxr-x--- root/npanel 0 2026-12-06 06:22 ./etc/npanel/
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		owner, group, _ := strings.Cut(f[1], "/")
		got[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = entry{f[0], owner, group}
	}
	checkListing(t, got)

	info := run(t, "/usr/bin/dpkg-deb", "-f", pkgs.Deb, "Package", "Version", "Architecture", "Depends")
	for _, w := range []string{"Package: npanel", "Version: " + testVersion, "Architecture: amd64", "Depends: passwd, libc-bin"} {
		if !strings.Contains(info, w) {
			t.Errorf("control lacks %q:\n%s", w, info)
		}
	}

	ctrl := t.TempDir()
	run(t, "/usr/bin/dpkg-deb", "-e", pkgs.Deb, ctrl)
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(conffiles)); !slices.Equal(got, []string{"/etc/npanel/agent.yaml", "/etc/npanel/server.yaml"}) {
		t.Errorf("conffiles = %q", got)
	}
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
		p := filepath.Join(ctrl, s)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s: %v, %v", s, fi, err)
			continue
		}
		run(t, "/bin/sh", "-n", p)
	}
}

func TestRPM(t *testing.T) {
	got := map[string]entry{}
	for _, line := range strings.Split(run(t, "/usr/bin/rpm", "-qlvp", pkgs.RPM), "\n") {
		// drwxr-x---    2 root     npanel   0 Dec  6 06:22 /etc/npanel
		f := strings.Fields(line)
		if len(f) < 9 {
			continue
		}
		got[f[8]] = entry{f[0], f[2], f[3]}
	}
	checkListing(t, got)

	if out := run(t, "/usr/bin/rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", pkgs.RPM); out != "npanel "+testVersion+" x86_64" {
		t.Errorf("rpm header: %q", out)
	}
	flags := run(t, "/usr/bin/rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", pkgs.RPM)
	for _, c := range []string{"/etc/npanel/server.yaml cn", "/etc/npanel/agent.yaml cn"} {
		if !strings.Contains(flags, c+"\n") {
			t.Errorf("%q not a %%config(noreplace) file:\n%s", c, flags)
		}
	}
	scripts := run(t, "/usr/bin/rpm", "-qp", "--scripts", pkgs.RPM)
	for _, s := range []string{"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "useradd --system", "systemctl disable --now"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("scripts lack %q:\n%s", s, scripts)
		}
	}
	// Reads the whole payload: the zstd archive is intact.
	if out := run(t, "/usr/bin/rpm", "--checksig", "--nosignature", pkgs.RPM); !strings.Contains(out, "digests OK") {
		t.Errorf("rpm --checksig: %s", out)
	}
	if req := run(t, "/usr/bin/rpm", "-qp", "--requires", pkgs.RPM); !strings.Contains(req, "shadow-utils") {
		t.Errorf("requires: %s", req)
	}
}

// make package's default version is one both dpkg and rpm accept.
func TestMakePackageVersion(t *testing.T) {
	out := run(t, "/usr/bin/make", "-C", "../..", "-n", "--no-print-directory", "package")
	_, rest, ok := strings.Cut(out, "--version '")
	version, _, _ := strings.Cut(rest, "'")
	if !ok || !versionRE.MatchString(version) || !strings.HasPrefix(version, "0.1.0~git") {
		t.Fatalf("make -n package: version %q:\n%s", version, out)
	}
	if !strings.Contains(out, "-trimpath -ldflags '-s -w -X main.version="+version+"'") || !strings.Contains(out, "CGO_ENABLED=0") {
		t.Errorf("make -n package builds the binary otherwise than this test does:\n%s", out)
	}
}

// unitKeys parses a systemd unit into section.key -> values.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

func TestUnits(t *testing.T) {
	data := t.TempDir()
	run(t, "/usr/bin/dpkg-deb", "-x", pkgs.Deb, data)
	units := filepath.Join(data, "usr/lib/systemd/system")
	common := map[string]string{
		"Service.Restart":        "on-failure",
		"Service.StandardOutput": "journal",
		"Service.PrivateTmp":     "yes",
		"Install.WantedBy":       "multi-user.target",
	}
	for _, tt := range []struct {
		unit   string
		want   map[string]string
		absent []string
	}{
		{"npanel-server.service", map[string]string{
			"Service.ExecStart":               "/usr/bin/npanel server --config /etc/npanel/server.yaml",
			"Service.EnvironmentFile":         "-/etc/npanel/server.env",
			"Service.User":                    "npanel",
			"Service.ProtectSystem":           "strict",
			"Service.ReadWritePaths":          "/var/lib/npanel/server",
			"Service.NoNewPrivileges":         "yes",
			"Service.ProtectHome":             "yes",
			"Service.PrivateDevices":          "yes",
			"Service.ProtectKernelTunables":   "yes",
			"Service.ProtectKernelModules":    "yes",
			"Service.ProtectKernelLogs":       "yes",
			"Service.ProtectControlGroups":    "yes",
			"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
			"Service.LockPersonality":         "yes",
			"Service.MemoryDenyWriteExecute":  "yes",
			"Service.SystemCallArchitectures": "native",
			"Service.CapabilityBoundingSet":   "",
		}, nil},
		{"npanel-agent.service", map[string]string{
			"Service.ExecStart":          "/usr/bin/npanel-agent --config /etc/npanel/agent.yaml",
			"Service.EnvironmentFile":    "-/etc/npanel/agent.env",
			"Service.User":               "root",
			"Service.KillMode":           "control-group",
			"Service.RestrictNamespaces": "yes",
		}, []string{"Service.ProtectSystem", "Service.NoNewPrivileges", "Service.ProtectHome"}},
	} {
		keys := unitKeys(t, filepath.Join(units, tt.unit))
		for k, v := range common {
			tt.want[k] = v
		}
		for k, v := range tt.want {
			if got := keys[k]; !slices.Contains(got, v) {
				t.Errorf("%s: %s = %q, want %q", tt.unit, k, got, v)
			}
		}
		for _, k := range tt.absent {
			if got, ok := keys[k]; ok {
				t.Errorf("%s: %s = %q: the agent's documented reasons say it must not be set", tt.unit, k, got)
			}
		}
		if keys["Service.RestartSec"] == nil || keys["Service.LimitNOFILE"] == nil {
			t.Errorf("%s: no RestartSec or LimitNOFILE", tt.unit)
		}
	}
}

// The .deb in a throwaway Debian 12 root: user, directories, the binary,
// its configuration files as shipped, the units as systemd reads them, an
// edited conffile kept over a reinstall, and the data kept on removal.
func TestDebInstall(t *testing.T) {
	// systemd in the root for systemd-analyze verify (its targets, and
	// procps for the /bin/kill of ExecReload): not running, only read.
	root := rootfs.Debian(t, "systemd", "procps")
	in := func(argv ...string) string {
		t.Helper()
		out, err := rootfs.Chroot(root, argv...)
		if err != nil {
			t.Fatalf("in the root: %s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return string(out)
	}
	deb := "/tmp/" + filepath.Base(pkgs.Deb)
	data, err := os.ReadFile(pkgs.Deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, deb), data, 0o644); err != nil {
		t.Fatal(err)
	}
	in("/usr/bin/dpkg", "-i", deb)

	passwd := in("/usr/bin/getent", "passwd", "npanel")
	if f := strings.Split(strings.TrimSpace(passwd), ":"); len(f) != 7 || f[6] != "/usr/sbin/nologin" || f[5] != "/var/lib/npanel/server" {
		t.Errorf("npanel user: %q", passwd)
	}
	uid := func(name string) uint32 {
		out := in("/usr/bin/id", "-u", name)
		var n uint32
		fmt.Sscan(out, &n)
		return n
	}
	npanel := uid("npanel")
	if npanel == 0 {
		t.Fatal("npanel has uid 0")
	}
	var npanelGID uint32
	fmt.Sscan(in("/usr/bin/id", "-g", "npanel"), &npanelGID)
	for path, w := range want {
		fi, err := os.Lstat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID, wantGID := uint32(0), uint32(0)
		if w.owner == "npanel" {
			wantUID = npanel
		}
		if w.group == "npanel" {
			wantGID = npanelGID
		}
		if fi.Mode().String() != w.mode || st.Uid != wantUID || st.Gid != wantGID {
			t.Errorf("%s: %s %d:%d, want %s %s:%s", path, fi.Mode(), st.Uid, st.Gid, w.mode, w.owner, w.group)
		}
	}

	if out := in("/usr/bin/npanel", "--version"); !strings.Contains(out, testVersion) {
		t.Errorf("npanel --version: %q", out)
	}
	if out := in("/usr/bin/npanel-agent", "--version"); !strings.Contains(out, testVersion) {
		t.Errorf("npanel-agent --version: %q", out)
	}
	if out := in("/usr/bin/npanel", "server", "--help"); !strings.Contains(out, "--config") || !strings.Contains(out, "--etcd-endpoints") {
		t.Errorf("npanel server --help:\n%s", out)
	}
	// The shipped configuration files parse, and the server's is readable
	// by its user: with a bad flag on the command line the commands get as
	// far as checking it, past --config.
	out, err := rootfs.Chroot(root, "/usr/sbin/runuser", "-u", "npanel", "--", "/usr/bin/npanel", "server", "--config", "/etc/npanel/server.yaml", "--scheduler", "nonsense")
	if err == nil || !strings.Contains(string(out), "--scheduler") {
		t.Errorf("server with the shipped server.yaml: %v: %s", err, out)
	}
	// npanel-agent.service's command, and `npanel agent`, which reads the
	// same file the same way.
	for _, argv := range [][]string{{"/usr/bin/npanel-agent"}, {"/usr/bin/npanel", "agent"}} {
		out, err = rootfs.Chroot(root, append(argv, "--config", "/etc/npanel/agent.yaml")...)
		if err == nil || !strings.Contains(string(out), "--server is required") {
			t.Errorf("%v with the shipped agent.yaml: %v: %s", argv, err, out)
		}
	}

	// systemd accepts the units as installed.
	if out, err := rootfs.Chroot(root, "/usr/bin/systemd-analyze", "verify", "--man=no",
		"/usr/lib/systemd/system/npanel-server.service", "/usr/lib/systemd/system/npanel-agent.service"); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure score systemd gives each unit, for the record.
	for _, u := range []string{"npanel-server.service", "npanel-agent.service"} {
		out, _ := rootfs.Chroot(root, "/usr/bin/systemd-analyze", "security", "--offline=yes", "/usr/lib/systemd/system/"+u)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("systemd-analyze security %s: %s", u, lines[len(lines)-1])
	}

	// An operator's edit survives reinstalling (and upgrading) the package.
	conf := filepath.Join(root, "etc/npanel/server.yaml")
	edited, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	edited = append(edited, "advertise: cp1.example.net:7443\n"...)
	if err := os.WriteFile(conf, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	// And a conffile the operator deleted stays deleted, without failing
	// the maintainer scripts.
	agentConf := filepath.Join(root, "etc/npanel/agent.yaml")
	if err := os.Remove(agentConf); err != nil {
		t.Fatal(err)
	}
	in("/usr/bin/dpkg", "-i", deb)
	if got, _ := os.ReadFile(conf); string(got) != string(edited) {
		t.Errorf("server.yaml after reinstall lost the edit:\n%s", got)
	}
	if _, err := os.Stat(agentConf); !os.IsNotExist(err) {
		t.Errorf("deleted agent.yaml after reinstall: %v", err)
	}

	// Removal keeps the cluster's data and the configuration.
	state := filepath.Join(root, "var/lib/npanel/server/kek")
	if err := os.WriteFile(state, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	in("/usr/bin/dpkg", "-r", "npanel")
	for _, p := range []string{state, conf} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after dpkg -r: %v", err)
		}
	}
	for _, b := range []string{"usr/bin/npanel", "usr/bin/npanel-agent"} {
		if _, err := os.Stat(filepath.Join(root, b)); !os.IsNotExist(err) {
			t.Errorf("%s after dpkg -r: %v", b, err)
		}
	}
}
