package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
)

// withDataDir puts the replica's state in dir.
func withDataDir(dir string) testenv.ServerOption {
	return func(c *controlplane.Config) { c.DataDir = dir }
}

// TestEmbeddedEtcdOnlyOnPrivateSocket is the attack of issue 23: a local
// user (a tenant's PHP on the server's host) connects to the embedded
// etcd. The replica must have no TCP listener but the API, the gateway and
// gossip, and its etcd socket must refuse another uid.
func TestEmbeddedEtcdOnlyOnPrivateSocket(t *testing.T) {
	before := tcpListeners(t)
	// Parents other users can traverse, so that only the server's own
	// modes stand between them and the socket.
	root := t.TempDir()
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "data")
	s := testenv.StartServer(t, withDataDir(dir))

	want := map[int]bool{}
	for _, a := range []string{s.APIAddr(), s.AgentAddr(), s.GossipAddrForTest()} {
		_, p, _ := net.SplitHostPort(a)
		n, _ := strconv.Atoi(p)
		want[n] = true
	}
	for inode, port := range tcpListeners(t) {
		if _, ok := before[inode]; !ok && !want[port] {
			t.Errorf("replica listens on TCP port %d, which is none of API, gateway, gossip (%v)", port, want)
		}
	}

	for path, mode := range map[string]fs.FileMode{
		dir: fs.ModeDir | 0o700,
		filepath.Join(dir, controlplane.EtcdClientSocket): fs.ModeSocket | 0o600,
		filepath.Join(dir, controlplane.EtcdPeerSocket):   fs.ModeSocket | 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}

	// The server's own user (etcdctl for an operator) does get in.
	sock := filepath.Join(dir, controlplane.EtcdClientSocket)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := cli.Get(ctx, "/npanel/cluster/secrets", clientv3.WithCountOnly()); err != nil || resp.Count != 1 {
		t.Fatalf("etcd over its socket as the server's user: %v, %+v", err, resp)
	}

	if os.Geteuid() != 0 {
		t.Log("not root: cannot try the socket as another uid")
		return
	}
	peer := filepath.Join(dir, controlplane.EtcdPeerSocket)
	for i, out := range dialAsNobody(t, sock, peer) {
		if !strings.Contains(out, "uid=65534") {
			t.Fatalf("helper did not run as uid 65534: %s", out)
		}
		if !strings.Contains(out, "permission denied") {
			t.Errorf("uid 65534 on %s: %s; want permission denied", []string{sock, peer}[i], out)
		}
	}
}

// dialAsNobody runs this test binary as uid 65534 to connect to each
// socket and returns what it printed for each. The binary is copied where
// that uid can run it.
func dialAsNobody(t *testing.T, socks ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, d := range []string{filepath.Dir(bin), bin} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(bin, "helper.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(exe, os.O_WRONLY|os.O_CREATE, 0o755)
	if err == nil {
		_, err = io.Copy(dst, src)
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
	}
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, sock := range socks {
		cmd := exec.Command(exe, "-test.run=^TestEtcdSocketDialHelper$", "-test.count=1")
		cmd.Dir = bin
		cmd.Env = []string{"NPANEL_DIAL_SOCKET=" + sock, "HOME=/nonexistent", "TMPDIR=" + bin}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		b, err := cmd.CombinedOutput()
		outs = append(outs, fmt.Sprintf("%s(exit: %v)", b, err))
	}
	return outs
}

// TestEtcdSocketDialHelper is dialAsNobody's child: it connects to the
// socket it is given and says what happened.
func TestEtcdSocketDialHelper(t *testing.T) {
	sock := os.Getenv("NPANEL_DIAL_SOCKET")
	if sock == "" {
		t.Skip("run by TestEmbeddedEtcdOnlyOnPrivateSocket")
	}
	fmt.Printf("uid=%d\n", os.Getuid())
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Printf("dial: %v\n", err)
		return
	}
	c.Close()
	fmt.Println("dial: connected")
}

// tcpListeners maps the inodes of this process's listening TCP sockets to
// their ports.
func tcpListeners(t *testing.T) map[uint64]int {
	t.Helper()
	mine := map[uint64]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
		if err == nil {
			mine[n] = true
		}
	}
	out := map[uint64]int{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			inode, _ := strconv.ParseUint(fields[9], 10, 64)
			if !mine[inode] {
				continue
			}
			local := fields[1]
			port, _ := strconv.ParseInt(local[strings.LastIndexByte(local, ':')+1:], 16, 32)
			out[inode] = int(port)
		}
		f.Close()
	}
	return out
}

// TestEtcdFilesHoldNoClearKeys is the other half of the attack: a copy of
// the etcd data (or of a backup) must not hand out the CA or the token key.
func TestEtcdFilesHoldNoClearKeys(t *testing.T) {
	s := testenv.StartServer(t)
	sec := *s.SecretsForTest()
	kek, err := os.ReadFile(filepath.Join(s.Config.DataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()

	header := []byte("-----BEGIN PRIVATE KEY-----")
	needles := map[string][]byte{
		"PEM private key header":        header,
		"base64 PEM private key header": []byte(base64.StdEncoding.EncodeToString(header)),
		"EC PEM private key header":     []byte("PRIVATE KEY-----"),
		"token key":                     sec.TokenKey,
		"base64 token key":              []byte(base64.StdEncoding.EncodeToString(sec.TokenKey)),
		"gossip key":                    sec.GossipKey,
		"base64 gossip key":             []byte(base64.StdEncoding.EncodeToString(sec.GossipKey)),
		"key-encryption key":            bytes.TrimSpace(kek),
	}
	var files int
	err = filepath.WalkDir(filepath.Join(s.Config.DataDir, "etcd"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for what, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s holds the %s", path, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 { // the bbolt db and at least one WAL segment
		t.Fatalf("scanned %d files under the etcd data dir", files)
	}
}

// runUntilReadyOrError starts a replica with cfg and returns the error it
// stops with, or nil once it is ready (and then stops it).
func runUntilReadyOrError(t *testing.T, cfg controlplane.Config) error {
	t.Helper()
	srv, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica stopped with %v", err)
		}
		return nil
	case err := <-done:
		if err == nil {
			t.Fatal("replica stopped without error before it was ready")
		}
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("replica neither ready nor failed after 60s")
		return nil
	}
}

// TestKEKFile: a replica whose key file is another key's, or missing, or
// readable by others, refuses to start with an error saying what to do,
// and never shows a key; with its own file back it starts and reads the
// same CA and token key.
func TestKEKFile(t *testing.T) {
	s := testenv.StartServer(t)
	fp := s.CA().RootFingerprint()
	tokenKey := append([]byte(nil), s.SecretsForTest().TokenKey...)
	s.Stop()
	path := filepath.Join(s.Config.DataDir, "kek")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kek file mode %v, want 0600", fi.Mode().Perm())
	}
	cfg := s.Config
	cfg.Logger = testenv.Logger()

	// Another cluster's key.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := pki.CreateKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	otherRaw, _ := os.ReadFile(path)
	err = runUntilReadyOrError(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "sealed with another key-encryption key") ||
		!strings.Contains(err.Error(), "copy the key-encryption key file") || !strings.Contains(err.Error(), other.ID()) {
		t.Errorf("start with another key file: %v", err)
	}
	for _, secret := range [][]byte{bytes.TrimSpace(good), bytes.TrimSpace(otherRaw)} {
		if err != nil && strings.Contains(err.Error(), string(secret)) {
			t.Errorf("error shows a key: %v", err)
		}
	}

	// No key file: the replica must not make itself a new one.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err = runUntilReadyOrError(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "does not exist: copy that file from a replica") {
		t.Errorf("start without the key file: %v", err)
	}
	if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
		t.Errorf("start without the key file created one (%v)", serr)
	}

	// The right key, but readable by other users.
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	err = runUntilReadyOrError(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("start with a world-readable key file: %v", err)
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if got := s.CA().RootFingerprint(); got != fp {
		t.Errorf("CA after restart %s, want %s", got, fp)
	}
	if !bytes.Equal(s.SecretsForTest().TokenKey, tokenKey) {
		t.Error("token key changed across the restart")
	}
}

// TestKEKMigratesClearMaterial: a cluster created before sealing holds its
// CA and secrets in the clear; the first replica of the new release seals
// them under a key file it creates, keeping the same CA and token key.
func TestKEKMigratesClearMaterial(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	cli := testenv.EtcdClient(t, etcd)
	m, err := ca.GenerateMaterial("npanel")
	if err != nil {
		t.Fatal(err)
	}
	sec := store.Secrets{ClusterID: "0123456789abcdef", TokenKey: bytes.Repeat([]byte{0x5a}, 32), GossipKey: bytes.Repeat([]byte{0xa5}, 32)}
	mj, _ := json.Marshal(m)
	sj, _ := json.Marshal(sec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The keys and layout the earlier releases wrote.
	if _, err := cli.Put(ctx, "/npanel/cluster/ca", string(mj)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/npanel/cluster/secrets", string(sj)); err != nil {
		t.Fatal(err)
	}
	clusterCA, err := ca.New(m, ca.Options{Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}

	s := testenv.StartServer(t, testenv.WithEtcd(etcd))
	if got := s.CA().RootFingerprint(); got != clusterCA.RootFingerprint() {
		t.Errorf("CA after migration %s, want the cluster's %s", got, clusterCA.RootFingerprint())
	}
	if !bytes.Equal(s.SecretsForTest().TokenKey, sec.TokenKey) {
		t.Error("token key changed by the migration")
	}
	for _, key := range []string{"/npanel/cluster/ca", "/npanel/cluster/secrets"} {
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v", key, err)
		}
		v := resp.Kvs[0].Value
		if !bytes.HasPrefix(v, []byte(`{"sealed":`)) || bytes.Contains(v, []byte("rootKey")) || bytes.Contains(v, []byte("tokenKey")) {
			t.Errorf("%s after migration is not sealed: %.60s...", key, v)
		}
	}
	// A sealed record copied to the other key does not open there.
	resp, err := cli.Get(ctx, "/npanel/cluster/secrets")
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := cli.Put(ctx, "/npanel/cluster/ca", string(resp.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	cfg := s.Config
	cfg.Logger = testenv.Logger()
	cfg.PasswordCost = bcrypt.MinCost
	if err := runUntilReadyOrError(t, cfg); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Errorf("start with the secrets record swapped into the CA's key: %v", err)
	}
}

// TestExternalEtcdNeedsTLS: an etcd endpoint without TLS is refused unless
// the operator accepts it, and TLS without a client certificate too.
func TestExternalEtcdNeedsTLS(t *testing.T) {
	base := controlplane.Config{DataDir: t.TempDir()}
	for _, tc := range []struct {
		name string
		mod  func(*controlplane.Config)
		want string // "" for accepted
	}{
		{"http", func(c *controlplane.Config) { c.EtcdEndpoints = []string{"http://127.0.0.1:2379"} }, "has no TLS"},
		{"bare host:port", func(c *controlplane.Config) { c.EtcdEndpoints = []string{"127.0.0.1:2379"} }, "want a URL"},
		{"unix", func(c *controlplane.Config) { c.EtcdEndpoints = []string{"unix:///run/etcd.sock"} }, "has no TLS"},
		{"http insecure", func(c *controlplane.Config) {
			c.EtcdEndpoints, c.EtcdInsecure = []string{"http://127.0.0.1:2379"}, true
		}, ""},
		{"https without client certificate", func(c *controlplane.Config) { c.EtcdEndpoints = []string{"https://127.0.0.1:2379"} }, "--etcd-cert"},
		{"https with client certificate", func(c *controlplane.Config) {
			c.EtcdEndpoints, c.EtcdCert, c.EtcdKey = []string{"https://127.0.0.1:2379"}, "c.pem", "k.pem"
		}, ""},
		{"cert without key", func(c *controlplane.Config) {
			c.EtcdEndpoints, c.EtcdCert = []string{"https://127.0.0.1:2379"}, "c.pem"
		}, "go together"},
		{"mixed", func(c *controlplane.Config) {
			c.EtcdEndpoints, c.EtcdInsecure = []string{"https://a:2379", "http://b:2379"}, true
		}, "mix"},
		{"TLS flags with embedded etcd", func(c *controlplane.Config) { c.EtcdCACert = "ca.pem" }, "--etcd-endpoints"},
	} {
		cfg := base
		tc.mod(&cfg)
		_, err := controlplane.New(cfg)
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}

	// A plain-http etcd is never dialled without --etcd-insecure.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	cfg := base
	cfg.EtcdEndpoints = []string{"http://" + ln.Addr().String()}
	if err := runUntilReadyOrError(t, cfg); err == nil || !strings.Contains(err.Error(), "--etcd-insecure") {
		t.Errorf("run against http etcd: %v", err)
	}
	select {
	case <-accepted:
		t.Error("the replica connected to the plain-http etcd")
	default:
	}
}

// TestKEKMigratesEmbeddedAndScrubs: the embedded etcd of a one-replica
// install created before sealing is sealed on start, and its database file
// no longer holds the clear records afterwards.
func TestKEKMigratesEmbeddedAndScrubs(t *testing.T) {
	s := testenv.StartServer(t)
	dir := s.Config.DataDir
	s.Stop()

	// Put the earlier releases' clear records in place of the sealed ones,
	// through the member itself while the server is down.
	sec := store.Secrets{ClusterID: "0123456789abcdef", TokenKey: bytes.Repeat([]byte{0x3c}, 32), GossipKey: bytes.Repeat([]byte{0xc3}, 32)}
	m, err := ca.GenerateMaterial("npanel")
	if err != nil {
		t.Fatal(err)
	}
	withEmbeddedEtcd(t, dir, func(cli *clientv3.Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		mj, _ := json.Marshal(m)
		sj, _ := json.Marshal(sec)
		if _, err := cli.Put(ctx, "/npanel/cluster/ca", string(mj)); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "/npanel/cluster/secrets", string(sj)); err != nil {
			t.Fatal(err)
		}
	})

	s.Restart()
	if !bytes.Equal(s.SecretsForTest().TokenKey, sec.TokenKey) {
		t.Fatal("the restarted replica does not use the cluster's token key")
	}
	s.Stop()
	db, err := os.ReadFile(filepath.Join(dir, "etcd", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	for what, n := range map[string][]byte{
		"base64 token key":              []byte(base64.StdEncoding.EncodeToString(sec.TokenKey)),
		"base64 PEM private key header": []byte(base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY-----"))),
	} {
		if bytes.Contains(db, n) {
			t.Errorf("etcd's database holds the %s after the migration", what)
		}
	}
}

// withEmbeddedEtcd runs the member in the data dir dir as the server would
// and calls f with a client of it.
func withEmbeddedEtcd(t *testing.T, dir string, f func(*clientv3.Client)) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "npanel"
	cfg.Dir = filepath.Join(dir, "etcd")
	client := filepath.Join(dir, controlplane.EtcdClientSocket)
	peer := filepath.Join(dir, controlplane.EtcdPeerSocket)
	cu := url.URL{Scheme: "unix", Path: client}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{{Scheme: "unix", Host: peer}}
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "unix", Path: peer}}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.EnableDistributedTracing = false
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); <-e.Server.StopNotify() }()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd not ready")
	}
	f(v3client.New(e.Server))
}
