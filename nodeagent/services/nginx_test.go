package services_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/services"
)

const nginxBin = "/usr/sbin/nginx"

// nginxConf is a minimal nginx under a test prefix: pid, logs and temp
// paths inside it, one server answering body on addr. (Errors before the
// config is read go to stderr, -e below, where the Supervisor keeps them.)
func nginxConf(addr, body string) string {
	return fmt.Sprintf(`worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path tmp/client_body;
	proxy_temp_path tmp/proxy;
	fastcgi_temp_path tmp/fastcgi;
	uwsgi_temp_path tmp/uwsgi;
	scgi_temp_path tmp/scgi;
	server {
		listen %s;
		location / { return 200 "%s\n"; }
	}
}
`, addr, body)
}

// writeFile writes atomically, as the web module does: nginx must never
// read a half-written config.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func nginxSpec(prefix, addr string) services.Spec {
	return services.Spec{
		Name:         "nginx",
		Binary:       nginxBin,
		Args:         []string{"-p", prefix + "/", "-c", "conf/nginx.conf", "-e", "stderr", "-g", "daemon off;"},
		ReloadSignal: syscall.SIGHUP,
		StopSignal:   syscall.SIGQUIT, // graceful: finish the requests in flight
		StopTimeout:  5 * time.Second,
		Ready: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return c.Close()
		},
		ReadyTimeout: 10 * time.Second,
		Version: func(ctx context.Context) (string, error) {
			out, err := output(ctx, nginxBin, "-v")
			if err != nil {
				return "", err
			}
			m := regexp.MustCompile(`nginx/(\S+)`).FindStringSubmatch(out)
			if m == nil {
				return "", fmt.Errorf("nginx -v said %q", out)
			}
			return m[1], nil
		},
		Listen: []string{addr},
	}
}

func newPrefix(t *testing.T, conf string) string {
	t.Helper()
	prefix := t.TempDir()
	for _, d := range []string{"conf", "logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(prefix, "conf", "nginx.conf"), conf)
	return prefix
}

func get(addr string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// children lists the PIDs whose parent is pid (nginx's workers).
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

func gone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

func killOnCleanup(t *testing.T, pids ...int) {
	t.Cleanup(func() {
		for _, pid := range pids {
			if pid > 0 && !gone(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

func TestNginxSupervised(t *testing.T) {
	testenv.RequireDaemon(t, nginxBin)
	ctx := testenv.Context(t)
	addr := testenv.FreeAddr(t)
	prefix := newPrefix(t, nginxConf(addr, "v1"))

	s := services.NewSupervisor(testenv.Logger())
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Ensure(ctx, nginxSpec(prefix, addr)); err != nil {
		t.Fatalf("Ensure nginx: %v", err)
	}
	st := s.Status()[0]
	master := st.PID
	workers := children(master)
	killOnCleanup(t, append(workers, master)...)
	if st.State != services.Running || master == 0 {
		t.Fatalf("status %+v, want running", st)
	}
	if body, err := get(addr); err != nil || body != "v1" {
		t.Fatalf("GET = %q, %v; want v1", body, err)
	}
	pidFile, err := os.ReadFile(filepath.Join(prefix, "logs", "nginx.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) != strconv.Itoa(master) {
		t.Errorf("nginx.pid = %q (%v), status PID %d", pidFile, err, master)
	}
	testenv.WaitFor(t, 5*time.Second, "nginx's version in the status", func() bool {
		return strings.HasPrefix(s.Status()[0].Version, "1.")
	})

	// A config change takes effect on Reload, in the same master.
	writeFile(t, filepath.Join(prefix, "conf", "nginx.conf"), nginxConf(addr, "v2"))
	start := time.Now()
	if err := s.Reload(ctx, "nginx"); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "the new config to answer", func() bool {
		body, err := get(addr)
		return err == nil && body == "v2"
	})
	t.Logf("new config answers %s after Reload was called", time.Since(start).Round(time.Millisecond))
	if st := s.Status()[0]; st.PID != master || st.State != services.Running {
		t.Errorf("after Reload: %+v, want the same master %d running", st, master)
	}

	// A broken config: the HUP is delivered, nginx logs the error and
	// keeps serving the old configuration.
	writeFile(t, filepath.Join(prefix, "conf", "nginx.conf"), "this is not nginx\n")
	if err := s.Reload(ctx, "nginx"); err != nil {
		t.Fatalf("Reload of a broken config: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "nginx to reject the broken config", func() bool {
		log, _ := os.ReadFile(filepath.Join(prefix, "logs", "error.log"))
		return strings.Contains(string(log), "[emerg]")
	})
	if body, err := get(addr); err != nil || body != "v2" {
		t.Errorf("after a broken reload GET = %q, %v; want v2 still", body, err)
	}

	// Restart re-reads the config from scratch: put a good one back.
	writeFile(t, filepath.Join(prefix, "conf", "nginx.conf"), nginxConf(addr, "v3"))
	if err := s.Restart(ctx, "nginx"); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	st = s.Status()[0]
	killOnCleanup(t, append(children(st.PID), st.PID)...)
	if st.PID == master {
		t.Errorf("Restart kept master PID %d", master)
	}
	if body, err := get(addr); err != nil || body != "v3" {
		t.Errorf("after Restart GET = %q, %v; want v3", body, err)
	}
	for _, pid := range append(workers, master) {
		testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("old nginx process %d to be gone", pid), func() bool { return gone(pid) })
	}

	// Close leaves nothing: master and workers.
	all := append(children(st.PID), st.PID)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range all {
		testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("nginx process %d to be gone", pid), func() bool { return gone(pid) })
	}
	if _, err := get(addr); err == nil {
		t.Error("nginx still answers after Close")
	}
}

func TestNginxBrokenConfigReportsNginxError(t *testing.T) {
	testenv.RequireDaemon(t, nginxBin)
	ctx := testenv.Context(t)
	addr := testenv.FreeAddr(t)
	prefix := newPrefix(t, strings.Replace(nginxConf(addr, "x"), "listen", "lisen", 1))

	s := services.NewSupervisor(testenv.Logger())
	t.Cleanup(func() { _ = s.Close() })
	err := s.Ensure(ctx, nginxSpec(prefix, addr))
	if err == nil || !strings.Contains(err.Error(), `unknown directive "lisen"`) {
		t.Fatalf("Ensure = %v, want nginx's [emerg] message", err)
	}
	if st := s.Status()[0]; st.State != services.Failed || !strings.Contains(st.Error, `unknown directive "lisen"`) {
		t.Errorf("status %+v, want failed with nginx's message", st)
	}
}

// output runs a command and returns its combined output.
func output(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}
