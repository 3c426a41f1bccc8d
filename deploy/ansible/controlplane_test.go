package ansible

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/npanel/npanel/deploy/internal/rootfs"
)

// TestControlPlaneDebian applies npanel_control_plane to a fresh Debian 12
// root with the certificates npanel_etcd makes, checks what it wrote, and
// applies it again expecting no change. The server is not started there
// (no systemd in a chroot, and no etcd to reach): every key of server.yaml
// is checked against the installed binary's flags instead, since an
// unknown key stops the server.
func TestControlPlaneDebian(t *testing.T) {
	t.Parallel()
	deb := npanelDeb(t)
	dir := t.TempDir()
	pki := makePKI(t, dir, "e1 npanel_etcd_address=127.0.0.1\ne2 npanel_etcd_address=127.0.0.2\ne3 npanel_etcd_address=127.0.0.3\n", "cp1\n")

	root := rootfs.Debian(t)
	prepareRoot(t, root)

	const kek = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	const password = "ansible-admin-password-0"
	secrets, _ := json.Marshal(map[string]string{"npanel_kek": kek, "npanel_admin_password": password, "npanel_etcd_pki_dir": pki})
	vars := filepath.Join(dir, "secrets.yml")
	if err := os.WriteFile(vars, secrets, 0o600); err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(inv, []byte(`[etcd]
e1 npanel_etcd_address=127.0.0.1
e2 npanel_etcd_address=127.0.0.2
e3 npanel_etcd_address=127.0.0.3
[control_plane]
cp1 ansible_connection=community.general.chroot ansible_host=`+root+` ansible_python_interpreter=/usr/bin/python3 ansible_become=false npanel_server_address=127.0.0.1 npanel_package_file=`+deb+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	play := filepath.Join(dir, "control-plane.yml")
	if err := os.WriteFile(play, []byte(`---
- name: Control plane servers
  hosts: control_plane
  roles:
    - role: npanel_control_plane
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(ansibleEnv(t), "ANSIBLE_ROLES_PATH="+filepath.Join(playbookDir(t), "roles"))
	apply := func(n int) recap {
		out, err := run(t, dir, env, ansiblePlaybook, "-i", inv, "-e", "@"+vars, play)
		if strings.Contains(out, kek) || strings.Contains(out, password) {
			t.Errorf("run %d: a secret shows in ansible's output", n)
		}
		if err != nil {
			t.Fatalf("run %d: %v\n%s", n, err, tail(out, 60))
		}
		r, ok := parseRecap(out)["cp1"]
		if !ok || r.failed != 0 || r.unreachable != 0 {
			t.Fatalf("run %d: recap %+v\n%s", n, r, tail(out, 60))
		}
		return r
	}
	if r := apply(1); r.changed == 0 {
		t.Errorf("first run changed nothing on a fresh root")
	}

	out, err := rootfs.Chroot(root, "/usr/bin/getent", "group", "npanel")
	if err != nil {
		t.Fatalf("group npanel: %v %s", err, out)
	}
	npanelGID := strings.Split(strings.TrimSpace(string(out)), ":")[2]
	out, err = rootfs.Chroot(root, "/usr/bin/getent", "passwd", "npanel")
	if err != nil {
		t.Fatalf("user npanel: %v %s", err, out)
	}
	npanelUID := strings.Split(strings.TrimSpace(string(out)), ":")[2]

	// path -> mode, owner uid, group gid
	files := map[string][3]string{
		"etc/npanel/server.yaml":                       {"0640", "0", npanelGID},
		"etc/npanel/server.env":                        {"0600", "0", "0"},
		"etc/npanel/kek":                               {"0600", npanelUID, npanelGID},
		"etc/npanel/etcd/ca.crt":                       {"0644", "0", npanelGID},
		"etc/npanel/etcd/client.crt":                   {"0644", "0", npanelGID},
		"etc/npanel/etcd/client.key":                   {"0640", "0", npanelGID},
		"etc/npanel/etcd":                              {"0750", "0", npanelGID},
		"var/lib/npanel/server":                        {"0700", npanelUID, npanelGID},
		"usr/bin/npanel":                               {"0755", "0", "0"},
		"usr/lib/systemd/system/npanel-server.service": {"0644", "0", "0"},
	}
	for p, want := range files {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		got := [3]string{"0" + strconv.FormatUint(uint64(fi.Mode().Perm()), 8), strconv.FormatUint(uint64(st.Uid), 10), strconv.FormatUint(uint64(st.Gid), 10)}
		if got != want {
			t.Errorf("/%s: mode, uid, gid %v, want %v", p, got, want)
		}
	}

	if b, err := os.ReadFile(filepath.Join(root, "etc/npanel/kek")); err != nil || strings.TrimSpace(string(b)) != kek {
		t.Errorf("kek file: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/npanel/server.env")); err != nil || !strings.Contains(string(b), "\nNPANEL_ADMIN_PASSWORD="+password+"\n") {
		t.Errorf("server.env lacks the admin password: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/npanel/server.env")); !strings.Contains(string(b), "\nGOMEMLIMIT="+halfHostMemory(t)+"\n") {
		t.Errorf("server.env: want GOMEMLIMIT=%s (half of the host's memory)", halfHostMemory(t))
	}
	// The client certificate installed is the server's own, with its key.
	if _, err := tls.LoadX509KeyPair(filepath.Join(root, "etc/npanel/etcd/client.crt"), filepath.Join(root, "etc/npanel/etcd/client.key")); err != nil {
		t.Errorf("etcd client certificate: %v", err)
	}
	want, _ := os.ReadFile(filepath.Join(pki, "npanel-server-cp1.crt"))
	if got, _ := os.ReadFile(filepath.Join(root, "etc/npanel/etcd/client.crt")); !bytes.Equal(got, want) {
		t.Errorf("client.crt is not npanel-server-cp1.crt")
	}

	raw, err := os.ReadFile(filepath.Join(root, "etc/npanel/server.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("server.yaml: %v\n%s", err, raw)
	}
	wantCfg := map[string]any{
		"data-dir":       "/var/lib/npanel/server",
		"api-listen":     "0.0.0.0:8080",
		"agent-listen":   "0.0.0.0:7443",
		"advertise":      "cp1:7443",
		"gossip-listen":  "127.0.0.1:7946",
		"etcd-endpoints": []any{"https://127.0.0.1:2379", "https://127.0.0.2:2379", "https://127.0.0.3:2379"},
		"etcd-cacert":    "/etc/npanel/etcd/ca.crt",
		"etcd-cert":      "/etc/npanel/etcd/client.crt",
		"etcd-key":       "/etc/npanel/etcd/client.key",
		"kek-file":       "/etc/npanel/kek",
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Errorf("server.yaml = %v\nwant %v", cfg, wantCfg)
	}
	help, err := rootfs.Chroot(root, "/usr/bin/npanel", "server", "--help")
	if err != nil {
		t.Fatalf("npanel server --help: %v\n%s", err, help)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1) {
		flags[m[1]] = true
	}
	for k := range cfg {
		if !flags[k] {
			t.Errorf("server.yaml key %q is no flag of the installed npanel server", k)
		}
	}

	if r := apply(2); r.changed != 0 {
		t.Errorf("second run changed %d things, want 0 (idempotent)", r.changed)
	}
}

// halfHostMemory is the role's default GOMEMLIMIT on this host, as Ansible
// computes it: half of MemTotal in whole MiB, rounded down.
func halfHostMemory(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return strconv.FormatUint(kb/1024/2, 10) + "MiB"
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return ""
}
