// Package s3 starts a real S3-compatible server for tests: SeaweedFS
// (Apache-2.0), `weed server -s3` on loopback ports, with one identity
// whose keys the test gets.
//
// SeaweedFS is not packaged in Debian, and `go install module@version`
// refuses its module (its go.mod has replace directives). Binary builds it
// once from a copy of the module's source as `go mod download` fetches it,
// into a cache outside the repository shared by all test binaries
// ($(go env GOCACHE)/npanel-weed/<version>/weed), under a file lock so
// that parallel test binaries build it once. A cold build took 8m51s on
// 2 idle cores (dependencies downloaded) and 29m20s on 2 cores shared with
// other builds; later runs reuse the binary (start to ready: ~3 s).
//
// It imports nothing of nPanel but the daemon helpers (package testenv imports the agent, and the
// agent's own tests use this package).
package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/daemon"
)

// The SeaweedFS version the tests run (DEPENDENCIES.md).
const (
	Module  = "github.com/seaweedfs/seaweedfs"
	Version = "v0.0.0-20261109003541-7506e5f91cd6"
)

// Server is a running SeaweedFS with its S3 gateway.
type Server struct {
	// Endpoint is the S3 URL, http://127.0.0.1:PORT.
	Endpoint  string
	AccessKey string
	SecretKey string
	Dir       string
	PID       int
}

// goTool is the go command: the one go test put first in PATH (it sets
// GOROOT/bin there), else the usual install location.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Binary returns the weed binary, building it on first use. It skips the
// test (fails under CI=true) when it cannot be built.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NPANEL_WEED"); p != "" && fileExists(p) {
		return p
	}
	out, err := exec.Command(goTool(), "env", "GOCACHE").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		skip(t, "no GOCACHE to keep the SeaweedFS binary in: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "npanel-weed", Version)
	bin := filepath.Join(dir, "weed")
	if fileExists(bin) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		skip(t, "SeaweedFS cache: %v", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		skip(t, "SeaweedFS build lock: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		skip(t, "SeaweedFS build lock: %v", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if fileExists(bin) { // built by another test binary meanwhile
		return bin
	}
	start := time.Now()
	t.Logf("building SeaweedFS %s into %s (once; 9 to 30 minutes cold)", Version, bin)
	if err := build(bin); err != nil {
		skip(t, "cannot build SeaweedFS %s: %v", Version, err)
	}
	t.Logf("built SeaweedFS in %v", time.Since(start).Round(time.Second))
	return bin
}

func skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// build compiles ./weed from a writable copy of the module's source: as
// the main module its replace directives apply, which go install
// refuses.
func build(bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, goTool(), "mod", "download", "-json", Module+"@"+Version)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return fmt.Errorf("go mod download: %v: %s", err, stderr.Bytes())
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		return fmt.Errorf("go mod download: %s %v", info.Error, err)
	}
	src, err := os.MkdirTemp("", "npanel-weedsrc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	if err := os.CopyFS(src, os.DirFS(info.Dir)); err != nil {
		return fmt.Errorf("copy the module source: %w", err)
	}
	tmp := bin + ".tmp"
	c = exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", tmp, "./weed")
	c.Dir = src
	c.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		os.Remove(tmp)
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	return os.Rename(tmp, bin)
}

func freePort(t testing.TB) int {
	t.Helper()
	port, err := daemon.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Start starts SeaweedFS (master, volume, filer and S3 gateway in one
// process) on loopback ports under a temporary directory, stopped at
// cleanup. Buckets are created on first use by the identity (Admin).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir, err := os.MkdirTemp("", "npt-weed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &Server{Dir: dir, AccessKey: "NPTACCESS" + strconv.Itoa(os.Getpid()), SecretKey: "npt-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	cfg := fmt.Sprintf(`{"identities":[{"name":"npanel","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, s.AccessKey, s.SecretKey)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := func() string { return strconv.Itoa(freePort(t)) }
	s3Port, filerPort := p(), p()
	args := []string{"server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + dir,
		"-master.port=" + p(), "-master.port.grpc=" + p(),
		"-volume.port=" + p(), "-volume.port.grpc=" + p(), "-volume.max=0",
		"-master.volumeSizeLimitMB=64",
		"-filer", "-filer.port=" + filerPort, "-filer.port.grpc=" + p(),
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + s3Port, "-s3.port.grpc=" + p(),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config=" + filepath.Join(dir, "s3.json"),
	}
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start weed: %v", err)
	}
	s.PID = cmd.Process.Pid
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.PID, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.PID, syscall.SIGKILL)
			<-done
		}
	})
	s.Endpoint = "http://127.0.0.1:" + s3Port
	// Ready: the filer answers and the gateway answers (403 to an
	// unsigned request).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := httpUp("http://127.0.0.1:"+filerPort+"/") && httpUp(s.Endpoint+"/")
		if ok {
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("weed exited:\n%s", tail(b))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("weed not ready after 60s:\n%s", tail(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

func httpUp(url string) bool {
	c := &http.Client{Timeout: time.Second}
	r, err := c.Get(url)
	if err != nil {
		return false
	}
	r.Body.Close()
	return r.StatusCode < 500
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
