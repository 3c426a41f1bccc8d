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
	"strconv"
	"strings"
	"sync"
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
// refused. Last, it replaces a member as the README says. The members
// share the host's network: each has its own loopback address and ports,
// set per host as an operator may.
func TestEtcdRoleDebian(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := pinnedEtcdVersion(t)
	mirror := etcdMirror(t, filepath.Join(dir, "mirror"), version)
	pki := filepath.Join(dir, "pki")
	invFile := filepath.Join(dir, "inventory.ini")
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
	// apply runs the role with the inventory of these members on those of
	// them named by ran (all when nil), and returns how many things changed.
	apply := func(label string, members []etcdMember, ran []string, extra ...string) int {
		writeEtcdInventory(t, invFile, members)
		start := time.Now()
		args := append([]string{"-i", invFile, "-e", "npanel_etcd_pki_dir=" + pki, "-e", "npanel_etcd_release_url=" + mirror}, extra...)
		out, err := run(t, dir, env, ansiblePlaybook, append(args, play)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", label, err, tail(out, 60))
		}
		if ran == nil {
			for _, m := range members {
				ran = append(ran, m.name)
			}
		}
		changed := 0
		recaps := parseRecap(out)
		for _, name := range ran {
			r, ok := recaps[name]
			if !ok || r.failed != 0 || r.unreachable != 0 {
				t.Fatalf("%s: %s recap %+v\n%s", label, name, r, tail(out, 60))
			}
			changed += r.changed
		}
		t.Logf("npanel_etcd, %s: %v, %d changed", label, time.Since(start).Round(time.Second), changed)
		return changed
	}

	members := []etcdMember{newEtcdMember(t, "e1", "127.0.0.2"), newEtcdMember(t, "e2", "127.0.0.3"), newEtcdMember(t, "e3", "127.0.0.4")}
	if apply("three fresh Debian 12 roots, first run", members, nil) == 0 {
		t.Fatal("the first run changed nothing on fresh roots")
	}
	if changed := apply("second run", members, nil); changed != 0 {
		t.Errorf("second run changed %d things, want 0 (idempotent)", changed)
	}
	stops := map[string]func(){}
	for _, m := range members {
		stops[m.name] = startMember(t, m.root, m.name)
	}

	etcdctl := filepath.Join(dir, "mirror", "etcdctl")
	ctl := func(endpoints []etcdMember, cert string, args ...string) (string, error) {
		var urls []string
		for _, m := range endpoints {
			urls = append(urls, "https://"+m.addr+":"+m.client)
		}
		argv := append([]string{"--endpoints=" + strings.Join(urls, ","), "--cacert=" + filepath.Join(pki, "ca.crt"),
			"--cert=" + filepath.Join(pki, cert+".crt"), "--key=" + filepath.Join(pki, cert+".key"),
			"--dial-timeout=3s", "--command-timeout=5s"}, args...)
		out, err := exec.Command(etcdctl, argv...).CombinedOutput()
		return string(out), err
	}
	// converged waits for these members to be the cluster, all healthy,
	// with the peer and client URLs the role wrote, and returns the
	// members' ids by name.
	converged := func(members []etcdMember) map[string]uint64 {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ids, why := clusterIs(ctl, members)
			if why == "" {
				return ids
			}
			if time.Now().After(deadline) {
				var roots []string
				for _, m := range members {
					roots = append(roots, m.root)
				}
				t.Fatalf("the cluster is not %d healthy members after 90 s: %s\n%s", len(members), why, memberLogs(roots...))
			}
			time.Sleep(time.Second)
		}
	}
	ids := converged(members)

	// A write through the first member reads back through the last,
	// linearizably (a quorum read).
	if out, err := ctl(members[:1], "npanel-server-cp1", "put", "/npanel/test/role", "written-through-e1"); err != nil {
		t.Fatalf("put through e1: %v\n%s", err, out)
	}
	if out, err := ctl(members[2:], "npanel-server-cp1", "get", "/npanel/test/role", "--consistency=l", "--print-value-only"); err != nil || strings.TrimSpace(out) != "written-through-e1" {
		t.Errorf("get through e3: %v %q", err, out)
	}

	writeStranger(t, pki)
	if out, err := ctl(members, "stranger", "get", "/npanel/test/role"); err == nil {
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

	// Replacing a member, as ansible/README.md says: e3 is lost, e4 takes
	// its place.
	stops["e3"]()
	if out, err := ctl(members[:1], "npanel-server-cp1", "member", "remove", strconv.FormatUint(ids["e3"], 16)); err != nil {
		t.Fatalf("member remove e3: %v\n%s", err, out)
	}
	e4 := newEtcdMember(t, "e4", "127.0.0.5")
	replaced := []etcdMember{members[0], members[1], e4}
	if out, err := ctl(members[:1], "npanel-server-cp1", "member", "add", "e4", "--peer-urls=https://"+e4.addr+":"+e4.peer); err != nil {
		t.Fatalf("member add e4: %v\n%s", err, out)
	}
	if apply("the new member e4", replaced, []string{"e4"}, "--limit", "e4", "-e", "npanel_etcd_initial_cluster_state=existing") == 0 {
		t.Fatal("the run on the new member changed nothing")
	}
	startMember(t, e4.root, e4.name)
	converged(replaced)
	if out, err := ctl([]etcdMember{e4}, "npanel-server-cp1", "get", "/npanel/test/role", "--consistency=s", "--print-value-only"); err != nil || strings.TrimSpace(out) != "written-through-e1" {
		t.Errorf("the new member's own copy: %v %q", err, out)
	}
}

// etcdMember is one member of the test's cluster: its root, its loopback
// address and its own ports.
type etcdMember struct {
	name, addr, root   string
	client, peer, http string
}

func newEtcdMember(t *testing.T, name, addr string) etcdMember {
	port := func() string { _, p, _ := net.SplitHostPort(freePort(t)); return p }
	return etcdMember{name: name, addr: addr, root: rootfs.Debian(t), client: port(), peer: port(), http: port()}
}

// writeEtcdInventory names these members (reached by chroot) and one
// control plane server, whose client certificate the PKI makes.
func writeEtcdInventory(t *testing.T, path string, members []etcdMember) {
	t.Helper()
	var inv strings.Builder
	inv.WriteString("[etcd]\n")
	for _, m := range members {
		fmt.Fprintf(&inv, "%s ansible_host=%s npanel_etcd_address=%s npanel_etcd_client_port=%s npanel_etcd_peer_port=%s npanel_etcd_client_http_port=%s\n",
			m.name, m.root, m.addr, m.client, m.peer, m.http)
	}
	inv.WriteString("[control_plane]\ncp1\n[etcd:vars]\nansible_connection=community.general.chroot\nansible_python_interpreter=/usr/bin/python3\nansible_become=false\n")
	if err := os.WriteFile(path, []byte(inv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listedMember is a member in `etcdctl member list -w json`.
type listedMember struct {
	ID         uint64   `json:"ID"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

// clusterIs says why the cluster is not exactly these members, all healthy
// and listed with their URLs ("" when it is), and gives their ids.
func clusterIs(ctl func([]etcdMember, string, ...string) (string, error), members []etcdMember) (map[string]uint64, string) {
	out, err := ctl(members, "npanel-server-cp1", "endpoint", "health", "--cluster", "-w", "json")
	if err != nil {
		return nil, fmt.Sprintf("endpoint health: %v %s", err, out)
	}
	var health []struct {
		Endpoint string `json:"endpoint"`
		Health   bool   `json:"health"`
	}
	if err := json.Unmarshal([]byte(out), &health); err != nil {
		return nil, fmt.Sprintf("endpoint health: %v %s", err, out)
	}
	for _, h := range health {
		if !h.Health {
			return nil, "unhealthy: " + h.Endpoint
		}
	}
	out, err = ctl(members, "npanel-server-cp1", "member", "list", "-w", "json")
	if err != nil {
		return nil, fmt.Sprintf("member list: %v %s", err, out)
	}
	var list struct {
		Members []listedMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Sprintf("member list: %v %s", err, out)
	}
	if len(list.Members) != len(members) || len(health) != len(members) {
		return nil, fmt.Sprintf("%d members listed, %d endpoints healthy, want %d: %s", len(list.Members), len(health), len(members), out)
	}
	ids := map[string]uint64{}
	for _, m := range members {
		i := slices.IndexFunc(list.Members, func(l listedMember) bool { return l.Name == m.name })
		if i < 0 || !slices.Equal(list.Members[i].PeerURLs, []string{"https://" + m.addr + ":" + m.peer}) ||
			!slices.Equal(list.Members[i].ClientURLs, []string{"https://" + m.addr + ":" + m.client}) {
			return nil, fmt.Sprintf("member %s not listed with peer https://%s:%s and client https://%s:%s: %s", m.name, m.addr, m.peer, m.addr, m.client, out)
		}
		ids[m.name] = list.Members[i].ID
	}
	return ids, ""
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
// group etcd, the role's configuration file, and returns what stops it;
// it is stopped when the test ends in any case.
func startMember(t *testing.T, root, name string) (stop func()) {
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
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	t.Cleanup(stop)
	return stop
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
