// Package ansible tests the playbook and roles in ../../ansible: lint and
// syntax, the per-distro data of npanel_node, and npanel_node applied for
// real to a throwaway Debian 12 root joined to a running control plane.
package ansible

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/npanel/npanel/deploy/internal/rootfs"
)

const (
	ansiblePlaybook = "/usr/bin/ansible-playbook"
	ansibleLint     = "/usr/bin/ansible-lint"
)

// repoRoot is the top of the repository: this package is deploy/ansible.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

func playbookDir(t testing.TB) string { return filepath.Join(repoRoot(t), "ansible") }

// ansibleEnv is a fixed environment: nothing of the caller's ANSIBLE_*
// settings leaks in, and the controller's temp files stay in the test's dir.
func ansibleEnv(t testing.TB) []string {
	home := t.TempDir()
	return []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LANG=C.UTF-8",
		"ANSIBLE_CONFIG=" + filepath.Join(playbookDir(t), "ansible.cfg"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(home, "tmp"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		// Per-task times at the end of the output, for the run-time figures.
		"ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks",
	}
}

func run(t testing.TB, dir string, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestLint(t *testing.T) {
	for _, bin := range []string{ansibleLint, ansiblePlaybook} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: run make deps", bin)
		}
	}
	dir := playbookDir(t)
	env := ansibleEnv(t)
	if out, err := run(t, dir, env, ansiblePlaybook, "--syntax-check", "-i", "inventory.example", "site.yml"); err != nil {
		t.Fatalf("ansible-playbook --syntax-check: %v\n%s", err, out)
	}
	// The profile and the rules skipped are in ansible/.ansible-lint.
	if out, err := run(t, dir, env, ansibleLint, "--offline", "--nocolor", "-c", ".ansible-lint"); err != nil {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
}

// osVars is the shape of roles/npanel_node/vars/<distro>.yml.
type osVars struct {
	OS struct {
		Platform       string              `json:"platform"`
		PackageFormat  string              `json:"package_format"`
		FirewallConfig string              `json:"firewall_config"`
		Packages       map[string][]string `json:"packages"`
		Expect         map[string][]string `json:"expect"`
		Users          map[string]string   `json:"users"`
		Clamd          struct {
			User    string `json:"user"`
			Config  string `json:"config"`
			Socket  string `json:"socket"`
			Service string `json:"service"`
		} `json:"clamd"`
		PHP struct {
			VersionNodot bool              `json:"version_nodot"`
			Package      string            `json:"package"`
			FPMPackage   string            `json:"fpm_package"`
			FPMBinary    string            `json:"fpm_binary"`
			FPMService   string            `json:"fpm_service"`
			PoolDir      string            `json:"pool_dir"`
			ExtNames     map[string]string `json:"ext_names"`
		} `json:"php"`
	} `json:"npanel_os"`
}

// profile holds what the agent's platform profiles (nodeagent/platform:
// profile.go, web.go, dns.go, mail.go, db.go, backup.go) use on each
// distro; the roles must install exactly these. The deploy module does not
// import the agent's packages, so the values are copied here: a change
// there must be made here too, and this test then checks the roles.
type profile struct {
	platform, format, firewall string
	webUser, mailUser          string
	// clamd's user, configuration, socket and systemd unit
	clamd [4]string
	// phpVersion -> php-fpm binary, unit and pool dir
	php map[string][3]string
	// node role (package group) -> files the agent execs or manages
	files map[string][]string
}

var profiles = map[string]profile{
	"Debian": {
		platform: "debian12", format: "deb", firewall: "/etc/nftables.conf",
		webUser: "www-data", mailUser: "Debian-exim",
		clamd: [4]string{"clamav", "/etc/clamav/clamd.conf", "/run/clamav/clamd.ctl", "clamav-daemon.service"},
		php: map[string][3]string{
			"7.4": {"/usr/sbin/php-fpm7.4", "php7.4-fpm.service", "/etc/php/7.4/fpm/pool.d"},
			"8.2": {"/usr/sbin/php-fpm8.2", "php8.2-fpm.service", "/etc/php/8.2/fpm/pool.d"},
			"8.3": {"/usr/sbin/php-fpm8.3", "php8.3-fpm.service", "/etc/php/8.3/fpm/pool.d"},
			"8.5": {"/usr/sbin/php-fpm8.5", "php8.5-fpm.service", "/etc/php/8.5/fpm/pool.d"},
		},
		files: map[string][]string{
			"web": {"/usr/sbin/nginx", "/etc/nginx/mime.types"},
			"dns": {"/usr/sbin/pdns_server", "/usr/bin/pdnsutil", "/usr/bin/sqlite3",
				"/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql", "/etc/powerdns"},
			"mail": {"/usr/sbin/exim4", "/usr/sbin/dovecot", "/usr/bin/doveconf", "/usr/bin/doveadm", "/usr/bin/sievec",
				"/usr/lib/dovecot/dovecot-lda", "/usr/sbin/spamd", "/usr/bin/spamc", "/usr/bin/sa-learn",
				"/var/lib/roundcube/public_html", "/etc/roundcube", "/usr/share/roundcube/SQL/sqlite.initial.sql"},
			"mail_antivirus": {"/usr/sbin/clamd", "/usr/bin/clamdscan"},
			"db_mariadb":     {"/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb-dump", "/usr/bin/mariadb"},
			"db_postgresql": {"/usr/lib/postgresql/15/bin/postgres", "/usr/lib/postgresql/15/bin/initdb",
				"/usr/lib/postgresql/15/bin/pg_ctl", "/usr/lib/postgresql/15/bin/pg_dump", "/usr/lib/postgresql/15/bin/psql"},
			"backup": {"/usr/sbin/sshd", "/usr/bin/restic"},
			"base":   {"/usr/bin/rsync", "/usr/bin/restic"},
		},
	},
	"AlmaLinux": {
		platform: "alma9", format: "rpm", firewall: "/etc/sysconfig/nftables.conf",
		webUser: "nginx", mailUser: "exim",
		clamd: [4]string{"clamscan", "/etc/clamd.d/scan.conf", "/run/clamd.scan/clamd.sock", "clamd@scan.service"},
		php: map[string][3]string{
			"7.4": {"/opt/remi/php74/root/usr/sbin/php-fpm", "php74-php-fpm.service", "/etc/opt/remi/php74/php-fpm.d"},
			"8.2": {"/opt/remi/php82/root/usr/sbin/php-fpm", "php82-php-fpm.service", "/etc/opt/remi/php82/php-fpm.d"},
			"8.3": {"/opt/remi/php83/root/usr/sbin/php-fpm", "php83-php-fpm.service", "/etc/opt/remi/php83/php-fpm.d"},
			"8.5": {"/opt/remi/php85/root/usr/sbin/php-fpm", "php85-php-fpm.service", "/etc/opt/remi/php85/php-fpm.d"},
		},
		files: map[string][]string{
			"web": {"/usr/sbin/nginx", "/etc/nginx/mime.types"},
			"dns": {"/usr/sbin/pdns_server", "/usr/bin/pdnsutil", "/usr/bin/sqlite3",
				"/usr/share/doc/pdns-backend-sqlite/schema.sqlite3.sql", "/etc/pdns"},
			"mail": {"/usr/sbin/exim", "/usr/sbin/dovecot", "/usr/bin/doveconf", "/usr/bin/doveadm", "/usr/bin/sievec",
				"/usr/libexec/dovecot/dovecot-lda", "/usr/sbin/spamd", "/usr/bin/spamc", "/usr/bin/sa-learn",
				"/usr/share/roundcubemail/public_html", "/usr/share/roundcubemail/config",
				"/usr/share/roundcubemail/SQL/sqlite.initial.sql"},
			"mail_antivirus": {"/usr/sbin/clamd", "/usr/bin/clamdscan"},
			"db_mariadb":     {"/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb-dump", "/usr/bin/mariadb"},
			"db_postgresql":  {"/usr/bin/postgres", "/usr/bin/initdb", "/usr/bin/pg_ctl", "/usr/bin/pg_dump", "/usr/bin/psql"},
			"backup":         {"/usr/sbin/sshd", "/usr/bin/restic"},
			"base":           {"/usr/bin/rsync", "/usr/bin/restic"},
		},
	},
}

// groups are the package groups the role installs from (node roles, with
// db split by engine and ClamAV apart).
var groups = []string{"base", "web", "dns", "mail", "mail_antivirus", "db_mariadb", "db_postgresql", "backup"}

// TestOSVars checks the per-distro data of npanel_node against the agent's
// profiles: AlmaLinux cannot be run here, so its data is checked as data.
func TestOSVars(t *testing.T) {
	for distro, want := range profiles {
		t.Run(distro, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(playbookDir(t), "roles/npanel_node/vars", distro+".yml"))
			if err != nil {
				t.Fatal(err)
			}
			var v osVars
			if err := yaml.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s.yml: %v", distro, err)
			}
			o := v.OS
			if o.Platform != want.platform || o.PackageFormat != want.format || o.FirewallConfig != want.firewall {
				t.Errorf("platform/format/firewall = %q/%q/%q, want %q/%q/%q",
					o.Platform, o.PackageFormat, o.FirewallConfig, want.platform, want.format, want.firewall)
			}
			if o.Users["web"] != want.webUser || o.Users["mail"] != want.mailUser {
				t.Errorf("users = %v, want web %s, mail %s", o.Users, want.webUser, want.mailUser)
			}
			if c := o.Clamd; [4]string{c.User, c.Config, c.Socket, c.Service} != want.clamd {
				t.Errorf("clamd = %+v, the agent's %s profile uses %q", c, want.platform, want.clamd)
			}
			for _, g := range groups {
				if len(o.Packages[g]) == 0 {
					t.Errorf("packages.%s is empty", g)
				}
				for _, p := range o.Packages[g] {
					if p == "" || strings.ContainsAny(p, " {}") {
						t.Errorf("packages.%s: bad package name %q", g, p)
					}
				}
				for _, f := range want.files[g] {
					if !slices.Contains(o.Expect[g], f) {
						t.Errorf("expect.%s lacks %s, which the agent's %s profile uses (has %v)", g, f, want.platform, o.Expect[g])
					}
				}
				for _, f := range o.Expect[g] {
					if !filepath.IsAbs(f) {
						t.Errorf("expect.%s: %q is not absolute", g, f)
					}
				}
			}
			for g := range o.Packages {
				if !slices.Contains(groups, g) {
					t.Errorf("packages.%s: unknown group (the role installs %v)", g, groups)
				}
			}
			for ver, paths := range want.php {
				v := ver
				if o.PHP.VersionNodot {
					v = strings.ReplaceAll(ver, ".", "")
				}
				sub := func(s string) string { return strings.ReplaceAll(s, "{v}", v) }
				if got := sub(o.PHP.FPMBinary); got != paths[0] {
					t.Errorf("PHP %s: fpm_binary %q, the agent runs %q", ver, got, paths[0])
				}
				if got := sub(o.PHP.FPMService) + ".service"; got != paths[1] {
					t.Errorf("PHP %s: fpm_service %q, the agent's unit is %q", ver, got, paths[1])
				}
				if got := sub(o.PHP.PoolDir); got != paths[2] {
					t.Errorf("PHP %s: pool_dir %q, the agent writes pools to %q", ver, got, paths[2])
				}
				fpm := strings.ReplaceAll(sub(o.PHP.Package), "{ext}", "fpm")
				if fpm != sub(o.PHP.FPMPackage) {
					t.Errorf("PHP %s: package template gives %q for fpm, fpm_package is %q", ver, fpm, sub(o.PHP.FPMPackage))
				}
			}
		})
	}
}

// TestNodeRoleDebian applies npanel_node (web and dns) to a fresh Debian 12
// root through the chroot connection, joined to a real control plane, then
// applies it again and expects no change.
func TestNodeRoleDebian(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(ansiblePlaybook); err != nil {
		t.Fatalf("%s is missing: run make deps", ansiblePlaybook)
	}
	deb := npanelDeb(t)
	tmp := t.TempDir()

	// The server runs the binary the package ships.
	pkgRoot := filepath.Join(tmp, "pkg")
	if out, err := exec.Command("/usr/bin/dpkg-deb", "-x", deb, pkgRoot).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	cp := startServer(t, filepath.Join(pkgRoot, "usr/bin/npanel"), filepath.Join(tmp, "server"))
	apiToken := cp.apiToken(t)

	root := rootfs.Debian(t)
	prepareRoot(t, root)

	const nodeName = "ansible-node1"
	vars := filepath.Join(tmp, "secrets.yml")
	secret, _ := json.Marshal(map[string]string{"npanel_api_token": apiToken})
	if err := os.WriteFile(vars, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(tmp, "inventory.ini")
	hostVars := map[string]string{
		"ansible_connection":         "community.general.chroot",
		"ansible_host":               root,
		"ansible_python_interpreter": "/usr/bin/python3",
		"ansible_become":             "false",
		"npanel_node_name":           nodeName,
		"npanel_node_address":        "127.0.0.1",
		"npanel_node_roles":          `["web", "dns"]`,
		"npanel_node_labels":         `{"rack": "r1"}`,
		"npanel_php_versions":        `["8.2"]`,
		"npanel_api_url":             cp.api,
		"npanel_agent_servers":       fmt.Sprintf(`["%s"]`, cp.gateway),
		"npanel_package_file":        deb,
	}
	var line strings.Builder
	line.WriteString("[nodes]\nnode1")
	for _, k := range slices.Sorted(maps.Keys(hostVars)) {
		fmt.Fprintf(&line, " %s='%s'", k, hostVars[k])
	}
	line.WriteString("\n")
	if err := os.WriteFile(inv, []byte(line.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	play := func(n int) (recap, time.Duration) {
		start := time.Now()
		out, err := run(t, playbookDir(t), ansibleEnv(t), ansiblePlaybook, "-i", inv, "-e", "@"+vars, "site.yml")
		took := time.Since(start)
		if strings.Contains(out, apiToken) {
			t.Errorf("run %d: the API token shows in ansible's output", n)
		}
		if err != nil {
			t.Fatalf("run %d: ansible-playbook: %v\n%s", n, err, tail(out, 60))
		}
		if _, profile, ok := strings.Cut(out, "PLAY RECAP"); ok {
			t.Logf("run %d took %v; slowest tasks:%s", n, took.Round(time.Second), head(profile, 14))
		}
		r, ok := parseRecap(out)["node1"]
		if !ok {
			t.Fatalf("run %d: no PLAY RECAP line for node1:\n%s", n, tail(out, 30))
		}
		if r.failed != 0 || r.unreachable != 0 {
			t.Fatalf("run %d: %+v\n%s", n, r, tail(out, 60))
		}
		return r, took
	}

	first, firstTook := play(1)
	if first.changed == 0 {
		t.Errorf("first run changed nothing on a fresh root")
	}

	for _, pkg := range []string{"nginx", "php8.2-fpm", "php8.2-mysql", "pdns-server", "pdns-backend-sqlite3", "sqlite3",
		"chrony", "nftables", "restic", "rsync", "npanel"} {
		out, err := rootfs.Chroot(root, "/usr/bin/dpkg-query", "-W", "-f=${Status}", pkg)
		if err != nil || string(out) != "install ok installed" {
			t.Errorf("package %s in the root: %q %v", pkg, out, err)
		}
	}

	agentYAML := filepath.Join(root, "etc/npanel/agent.yaml")
	checkMode(t, agentYAML, 0o600)
	raw, err := os.ReadFile(agentYAML)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("agent.yaml: %v\n%s", err, raw)
	}
	wantCfg := map[string]any{
		"server":          []any{cp.gateway},
		"data-dir":        "/var/lib/npanel/agent",
		"join-token-file": "/etc/npanel/join-token",
		"platform":        "debian12",
		"modules":         []any{"web", "dns"},
		"gossip-listen":   "0.0.0.0:7946",
	}
	for k, v := range wantCfg {
		if !reflect.DeepEqual(cfg[k], v) {
			t.Errorf("agent.yaml %s = %v, want %v", k, cfg[k], v)
		}
	}
	if len(cfg) != len(wantCfg) {
		t.Errorf("agent.yaml has keys %v, want exactly %v", slices.Sorted(maps.Keys(cfg)), slices.Sorted(maps.Keys(wantCfg)))
	}

	tokenFile := filepath.Join(root, "etc/npanel/join-token")
	checkMode(t, tokenFile, 0o600)
	if tok, err := os.ReadFile(tokenFile); err != nil || len(bytes.TrimSpace(tok)) < 20 {
		t.Errorf("join token file: %d bytes, %v", len(tok), err)
	}

	node := cp.node(t, nodeName)
	if node == nil {
		t.Fatalf("node %s is not declared on the control plane", nodeName)
	}
	if node.Address != "127.0.0.1" || !slices.Equal(node.Roles, []string{"WEB", "DNS"}) || node.Status != "PENDING" ||
		len(node.Labels) != 1 || node.Labels[0].Key != "rack" || node.Labels[0].Value != "r1" {
		t.Errorf("node on the control plane: %+v", node)
	}

	rules, err := os.ReadFile(filepath.Join(root, "etc/nftables.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"policy drop", "tcp dport 22 accept", "tcp dport { 80, 443 } accept",
		"meta l4proto { tcp, udp } th dport 53 accept", "th dport 7946 accept", "tcp dport 2223 accept",
		// Accounts' programs reach other servers' SMTP only through Exim.
		"meta skuid != { 0 } fib daddr type != local tcp dport { 25, 465, 587 } reject with tcp reset"} {
		if !strings.Contains(string(rules), want) {
			t.Errorf("nftables ruleset lacks %q:\n%s", want, rules)
		}
	}
	for _, notWant := range []string{"dport { 25, 465, 587, 143", "2222", "3306"} {
		if strings.Contains(string(rules), notWant) {
			t.Errorf("nftables ruleset of a web+dns node has %q:\n%s", notWant, rules)
		}
	}
	if out, err := rootfs.Chroot(root, "/usr/sbin/nft", "--check", "--file", "/etc/nftables.conf"); err != nil {
		t.Errorf("nft --check: %v\n%s", err, out)
	}

	// The token the role wrote enrols the agent as configured.
	enrol(t, root, cp, nodeName)
	if _, err := os.Stat(filepath.Join(root, "var/lib/npanel/agent/identity.json")); err != nil {
		t.Fatalf("the agent enrolled but left no identity: %v", err)
	}

	// An enrolled node is not joined again: nothing changes.
	second, secondTook := play(2)
	if second.changed != 0 {
		t.Errorf("second run changed %d things, want 0 (idempotent)", second.changed)
	}
	t.Logf("ansible npanel_node [web, dns] on a fresh Debian 12 root: first run %v (%d changed), second run %v (%d changed)",
		firstTook.Round(time.Second), first.changed, secondTook.Round(time.Second), second.changed)
}

// enrol runs the installed agent (npanel-agent, as npanel-agent.service
// does) in the root with the agent.yaml the role wrote until the control
// plane has it READY, then stops it. Its modules
// and gossip stay off (flags win over the file): their daemons would
// listen in the host's network namespace.
func enrol(t *testing.T, root string, cp *controlPlane, name string) {
	t.Helper()
	cmd := exec.Command("/usr/sbin/chroot", root, "/usr/bin/npanel-agent", "--config", "/etc/npanel/agent.yaml",
		"--modules", "none", "--gossip-listen", "")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	logf, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	agentLog := func() string { b, _ := os.ReadFile(logf.Name()); return tail(string(b), 30) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	defer stop()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the agent exited: %v\n%s", err, agentLog())
		default:
		}
		if n := cp.node(t, name); n != nil && n.Status == "READY" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not READY 3 minutes after its agent started:\n%s", name, agentLog())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// npanelDeb returns the npanel .deb `make package` builds, once for all the
// tests of this package, or the one $NPANEL_DEB names (CI builds the
// packages once for every test).
func npanelDeb(t *testing.T) string {
	t.Helper()
	deb.Do(func() { deb.path, deb.err = buildDeb(repoRoot(t)) })
	if deb.err != nil {
		t.Fatal(deb.err)
	}
	return deb.path
}

var deb struct {
	sync.Once
	path string
	err  error
}

func buildDeb(repo string) (string, error) {
	if p := os.Getenv("NPANEL_DEB"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NPANEL_DEB: %w", err)
		}
		return p, nil
	}
	cmd := exec.Command("/usr/bin/make", "-C", repo, "package")
	cmd.Env = append(os.Environ(), "MAKEFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make package: %v\n%s", err, tail(string(out), 40))
	}
	debs, err := filepath.Glob(filepath.Join(repo, "dist", "npanel_*_amd64.deb"))
	if err != nil || len(debs) == 0 {
		return "", fmt.Errorf("make package left no dist/npanel_*_amd64.deb (%v)", err)
	}
	// The newest, should older versions linger in dist/.
	slices.SortFunc(debs, func(a, b string) int { return modTime(b).Compare(modTime(a)) })
	return debs[0], nil
}

func modTime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// prepareRoot makes the throwaway root behave as a host whose init starts
// nothing: package scripts must not start nginx or PowerDNS in the host's
// network namespace, which the chroot shares. dpkg skips fsync (the root is
// thrown away), and downloaded packages are kept across test runs.
func prepareRoot(t *testing.T, root string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/npanel-test-unsafe-io"), []byte("force-unsafe-io\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(base, "npanel-rootfs", "apt-archives")
	if err := os.MkdirAll(filepath.Join(cache, "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	archives := filepath.Join(root, "var/cache/apt/archives")
	if err := os.MkdirAll(archives, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(cache, archives, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount the apt cache: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(archives, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", archives, err)
		}
	})
}

type recap struct{ ok, changed, unreachable, failed int }

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// parseRecap reads the PLAY RECAP lines of ansible-playbook's output.
func parseRecap(out string) map[string]recap {
	_, after, found := strings.Cut(out, "PLAY RECAP")
	res := map[string]recap{}
	if !found {
		return res
	}
	for _, m := range recapLine.FindAllStringSubmatch(after, -1) {
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		res[m[1]] = recap{ok: n(2), changed: n(3), unreachable: n(4), failed: n(5)}
	}
	return res
}

func TestParseRecap(t *testing.T) {
	out := "TASK [x]\nok: [node1]\n\nPLAY RECAP *****\n" +
		"node1                      : ok=25   changed=6    unreachable=0    failed=0    skipped=16   rescued=0    ignored=0   \n" +
		"node2                      : ok=3   changed=0    unreachable=1    failed=2    skipped=0   rescued=0    ignored=0\n"
	got := parseRecap(out)
	want := map[string]recap{"node1": {25, 6, 0, 0}, "node2": {3, 0, 1, 2}}
	if len(got) != len(want) || got["node1"] != want["node1"] || got["node2"] != want["node2"] {
		t.Fatalf("parseRecap = %+v, want %+v", got, want)
	}
	if r := parseRecap("node1 : ok=1 changed=1 unreachable=0 failed=0"); len(r) != 0 {
		t.Fatalf("a line outside the PLAY RECAP counted: %+v", r)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != want || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("%s: mode %04o uid %d gid %d, want %04o root:root", path, fi.Mode().Perm(), st.Uid, st.Gid, want)
	}
}

func head(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[:lines]
	}
	return strings.Join(l, "\n")
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// controlPlane is an `npanel server` child process on loopback ports.
type controlPlane struct {
	api, gateway string
	password     string
	admin        string // a login token of admin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startServer(t *testing.T, bin, dir string) *controlPlane {
	t.Helper()
	api, gw, gossip := freePort(t), freePort(t), freePort(t)
	cp := &controlPlane{api: "http://" + api, gateway: gw, password: "ansible-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "--data-dir", filepath.Join(dir, "data"), "--api-insecure-http",
		"--api-listen", api, "--agent-listen", gw, "--gossip-listen", gossip)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "NPANEL_ADMIN_PASSWORD=" + cp.password}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("server log:\n%s", tail(string(b), 40))
			}
		}
	})
	// Bounded wait for the first start (CA, admin user) on a loaded machine.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("npanel server exited:\n%s", tail(string(b), 40))
		default:
		}
		var d struct {
			Login struct{ Token string } `json:"login"`
		}
		err := cp.graphql("", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }`,
			map[string]any{"u": "admin", "p": cp.password}, &d)
		if err == nil && d.Login.Token != "" {
			cp.admin = d.Login.Token
			return cp
		}
		if time.Now().After(deadline) {
			t.Fatalf("npanel server not ready after 3 minutes: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (cp *controlPlane) graphql(token, query string, vars map[string]any, out any) error {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, err := http.NewRequest(http.MethodPost, cp.api+"/graphql", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("graphql: %s", r.Errors[0].Message)
	}
	return json.Unmarshal(r.Data, out)
}

// apiToken creates the admin API token Ansible uses, as an
// operator does once and keeps in the vault.
func (cp *controlPlane) apiToken(t *testing.T) string {
	t.Helper()
	var c struct {
		CreateAPIToken struct{ Token string } `json:"createAPIToken"`
	}
	if err := cp.graphql(cp.admin, `mutation { createAPIToken(name: "ansible") { token } }`, nil, &c); err != nil {
		t.Fatal(err)
	}
	if c.CreateAPIToken.Token == "" {
		t.Fatal("createAPIToken returned no token")
	}
	return c.CreateAPIToken.Token
}

type node struct {
	Name    string
	Address string
	Roles   []string
	Status  string
	Labels  []struct{ Key, Value string }
}

func (cp *controlPlane) node(t *testing.T, name string) *node {
	t.Helper()
	var d struct{ Nodes []node }
	if err := cp.graphql(cp.admin, `{ nodes { name address roles status labels { key value } } }`, nil, &d); err != nil {
		t.Fatal(err)
	}
	for i := range d.Nodes {
		if d.Nodes[i].Name == name {
			return &d.Nodes[i]
		}
	}
	return nil
}
