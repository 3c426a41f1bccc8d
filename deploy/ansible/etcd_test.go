package ansible

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/deploy/internal/rootfs"
)

// TestEtcdRoleDebian applies npanel_etcd to three fresh Debian 12 roots,
// one per member, twice, with its release install served from a local
// mirror holding etcd, etcdctl and etcdutl at the versions go.mod pins.
// It then starts each member as etcd.service would (user etcd, the
// role's --config-file) and checks with etcdctl, over an npanel server's
// client certificate, that they form one healthy cluster, that a write
// through one member reads back linearizably through another, that the
// client port serves gRPC alone, and that a stranger's certificate is
// refused. The members share the host's network: each has its own
// loopback address and ports, set per host as an operator may.
func TestEtcdRoleDebian(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := pinnedEtcdVersion(t)
	mirror := etcdMirror(t, filepath.Join(dir, "mirror"), version)

	type member struct {
		name, addr, root   string
		client, peer, http string
	}
	port := func() string { _, p, _ := net.SplitHostPort(freePort(t)); return p }
	var members []member
	var inv strings.Builder
	inv.WriteString("[etcd]\n")
	for i, name := range []string{"e1", "e2", "e3"} {
		m := member{name: name, addr: fmt.Sprintf("127.0.0.%d", i+2), root: rootfs.Debian(t),
			client: port(), peer: port(), http: port()}
		members = append(members, m)
		fmt.Fprintf(&inv, "%s ansible_host=%s npanel_etcd_address=%s npanel_etcd_client_port=%s npanel_etcd_peer_port=%s npanel_etcd_client_http_port=%s\n",
			m.name, m.root, m.addr, m.client, m.peer, m.http)
	}
	inv.WriteString("[control_plane]\ncp1\n[etcd:vars]\nansible_connection=community.general.chroot\nansible_python_interpreter=/usr/bin/python3\nansible_become=false\n")
	invFile := filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(invFile, []byte(inv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(dir, "pki")
	play := filepath.Join(dir, "etcd.yml")
	if err := os.WriteFile(play, []byte(`---
- name: Etcd members
  hosts: etcd
  roles:
    - role: npanel_etcd
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(ansibleEnv(t), "ANSIBLE_ROLES_PATH="+filepath.Join(playbookDir(t), "roles"))
	apply := func(n int) int {
		start := time.Now()
		out, err := run(t, dir, env, ansiblePlaybook, "-i", invFile,
			"-e", "npanel_etcd_pki_dir="+pki, "-e", "npanel_etcd_release_url="+mirror, play)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", n, err, tail(out, 60))
		}
		changed := 0
		recaps := parseRecap(out)
		for _, m := range members {
			r, ok := recaps[m.name]
			if !ok || r.failed != 0 || r.unreachable != 0 {
				t.Fatalf("run %d: %s recap %+v\n%s", n, m.name, r, tail(out, 60))
			}
			changed += r.changed
		}
		t.Logf("npanel_etcd on three fresh Debian 12 roots, run %d: %v, %d changed", n, time.Since(start).Round(time.Second), changed)
		return changed
	}
	if apply(1) == 0 {
		t.Fatal("the first run changed nothing on fresh roots")
	}
	if changed := apply(2); changed != 0 {
		t.Errorf("second run changed %d things, want 0 (idempotent)", changed)
	}

	for _, m := range members {
		startMember(t, m.root, m.name)
	}

	var all []string
	for _, m := range members {
		all = append(all, "https://"+m.addr+":"+m.client)
	}
	etcdctl := filepath.Join(dir, "mirror", "etcdctl")
	ctl := func(endpoints []string, cert string, args ...string) (string, error) {
		argv := append([]string{"--endpoints=" + strings.Join(endpoints, ","), "--cacert=" + filepath.Join(pki, "ca.crt"),
			"--cert=" + filepath.Join(pki, cert+".crt"), "--key=" + filepath.Join(pki, cert+".key"),
			"--dial-timeout=3s", "--command-timeout=5s"}, args...)
		out, err := exec.Command(etcdctl, argv...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := ctl(all, "npanel-server-cp1", "endpoint", "health", "--cluster", "-w", "json")
		var health []struct {
			Health bool `json:"health"`
		}
		healthy := 0
		if err == nil && json.Unmarshal([]byte(out), &health) == nil {
			for _, h := range health {
				if h.Health {
					healthy++
				}
			}
		}
		if healthy == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the three members are not healthy after 90 s: %v\n%s\n%s", err, out, memberLogs(members[0].root, members[1].root, members[2].root))
		}
		time.Sleep(time.Second)
	}

	out, err := ctl(all, "npanel-server-cp1", "member", "list", "-w", "json")
	if err != nil {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	var list struct {
		Members []struct {
			Name       string   `json:"name"`
			PeerURLs   []string `json:"peerURLs"`
			ClientURLs []string `json:"clientURLs"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	listed := map[string][2][]string{}
	for _, l := range list.Members {
		listed[l.Name] = [2][]string{l.PeerURLs, l.ClientURLs}
	}
	for _, m := range members {
		urls := listed[m.name]
		if !slices.Equal(urls[0], []string{"https://" + m.addr + ":" + m.peer}) || !slices.Equal(urls[1], []string{"https://" + m.addr + ":" + m.client}) {
			t.Errorf("member %s: want peer https://%s:%s, client https://%s:%s; listed %+v", m.name, m.addr, m.peer, m.addr, m.client, list.Members)
		}
	}
	if len(list.Members) != 3 {
		t.Errorf("%d members, want 3: %+v", len(list.Members), list.Members)
	}

	// A write through the first member reads back through the last,
	// linearizably (a quorum read).
	if out, err := ctl(all[:1], "npanel-server-cp1", "put", "/npanel/test/role", "written-through-e1"); err != nil {
		t.Fatalf("put through e1: %v\n%s", err, out)
	}
	if out, err := ctl(all[2:], "npanel-server-cp1", "get", "/npanel/test/role", "--consistency=l", "--print-value-only"); err != nil || strings.TrimSpace(out) != "written-through-e1" {
		t.Errorf("get through e3: %v %q", err, out)
	}

	writeStranger(t, pki)
	if out, err := ctl(all, "stranger", "get", "/npanel/test/role"); err == nil {
		t.Errorf("a client certificate from another CA read the cluster: %s", out)
	}

	// HTTP is off the client port and on the loopback URL the role names.
	client := httpsClient(t, pki)
	m := members[0]
	if resp, err := client.Get("https://" + m.addr + ":" + m.client + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("the client port serves /health over HTTP: the role's listen-client-http-urls did not take")
		}
	}
	resp, err := client.Get("https://127.0.0.1:" + m.http + "/health")
	if err != nil {
		t.Fatalf("/health on the HTTP URL: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		t.Errorf("/health on the HTTP URL: %d %s", resp.StatusCode, body)
	}
}

// pinnedEtcdVersion is the etcd release the role installs by default,
// which must be the one go.mod pins (the role's defaults say so).
func pinnedEtcdVersion(t *testing.T) string {
	t.Helper()
	defaults, err := os.ReadFile(filepath.Join(playbookDir(t), "roles", "npanel_etcd", "defaults", "main.yml"))
	if err != nil {
		t.Fatal(err)
	}
	role := regexp.MustCompile(`(?m)^npanel_etcd_version: "([0-9.]+)"$`).FindSubmatch(defaults)
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`(?m)^\s+go\.etcd\.io/etcd/server/v3 v([0-9.]+)$`).FindSubmatch(gomod)
	if role == nil || pinned == nil || string(role[1]) != string(pinned[1]) {
		t.Fatalf("npanel_etcd_version %q and go.mod's etcd server %q differ", role, pinned)
	}
	return string(role[1])
}

// etcdMirror builds etcd (as the chaos suite does), etcdctl and etcdutl,
// packs them as the official release tarball is packed, serves it with its
// SHA256SUMS on loopback and returns the release URL.
func etcdMirror(t *testing.T, dir, version string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	repo := repoRoot(t)
	builds := []struct{ name, pkg, moduleDir string }{
		{"etcd", "./chaos/internal/etcdbin", repo},
		{"etcdutl", "go.etcd.io/etcd/etcdutl/v3", repo},
		{"etcdctl", "go.etcd.io/etcd/etcdctl/v3", filepath.Join(repo, "deploy")},
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = b.moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	name := "etcd-v" + version + "-linux-amd64"
	tarball := filepath.Join(dir, name+".tar.gz")
	f, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for _, b := range builds {
		bin, err := os.ReadFile(filepath.Join(dir, b.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name + "/" + b.name, Mode: 0o755, Size: int64(len(bin))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(bin); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	sums := hex.EncodeToString(sum[:]) + "  " + name + ".tar.gz\n"
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// startMember runs the member in its root as etcd.service does: user and
// group etcd, the role's configuration file. It is stopped when the test
// ends.
func startMember(t *testing.T, root, name string) {
	t.Helper()
	ids := make([]string, 2)
	for i, db := range []string{"passwd", "group"} {
		out, err := rootfs.Chroot(root, "/usr/bin/getent", db, "etcd")
		if err != nil {
			t.Fatalf("%s: getent %s etcd: %v %s", name, db, err, out)
		}
		ids[i] = strings.Split(strings.TrimSpace(string(out)), ":")[2]
	}
	logf, err := os.Create(filepath.Join(root, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("/usr/sbin/chroot", "--userspec="+ids[0]+":"+ids[1], root,
		"/usr/local/bin/etcd", "--config-file", "/etc/etcd/etcd.conf.yml")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
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
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// memberLogs is the end of each member's log, for a failure message.
func memberLogs(roots ...string) string {
	var b strings.Builder
	for _, root := range roots {
		log, _ := os.ReadFile(filepath.Join(root, "etcd.log"))
		fmt.Fprintf(&b, "--- %s\n%s\n", root, tail(string(log), 15))
	}
	return b.String()
}

// httpsClient presents the first npanel server's client certificate and
// trusts the cluster's CA only.
func httpsClient(t *testing.T, pki string) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "npanel-server-cp1.crt"), filepath.Join(pki, "npanel-server-cp1.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("ca.crt: %v", err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}
}
