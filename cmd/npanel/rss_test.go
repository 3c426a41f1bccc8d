package main

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// vmRSS reads a process's resident set size in bytes from /proc.
func vmRSS(t testing.TB, pid int) float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return float64(kb) * 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// BenchmarkIdleRSS starts the real binary as a server with embedded etcd and
// as one enrolled agent, lets both idle for 10 s and reports their resident
// memory and the server's cold start (exec to /readyz answering).
func BenchmarkIdleRSS(b *testing.B) {
	for range b.N {
		begin := time.Now()
		s := startServer(b)
		coldStart := time.Since(begin)
		env := []string{"XDG_CONFIG_HOME=" + b.TempDir(), "NPANEL_SERVER=http://" + s.api}
		pw, err := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
		if err != nil {
			b.Fatal(err)
		}
		if out, code := run(b, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
			b.Fatal(out)
		}
		out, code := run(b, env, "", "ctl", "node", "add", "idle-1", "--address", "127.0.0.1", "--roles", "web", "-o", "json")
		if code != 0 {
			b.Fatal(out)
		}
		agent := start(b, nil, "agent", "--server", s.gateway, "--join-token", between(out, `"token":"`, `"`),
			"--data-dir", b.TempDir(), "--gossip-listen", "127.0.0.1:0")
		testenv.WaitFor(b, 20*time.Second, "agent READY", func() bool {
			out, _ := run(b, env, "", "ctl", "node", "list")
			return strings.Contains(out, "READY")
		})
		time.Sleep(10 * time.Second)
		resp, err := http.Get("http://" + s.api + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		b.ReportMetric(vmRSS(b, s.proc.cmd.Process.Pid)/(1<<20), "server_rss_MB")
		b.ReportMetric(vmRSS(b, agent.cmd.Process.Pid)/(1<<20), "agent_rss_MB")
		b.ReportMetric(float64(coldStart)/float64(time.Millisecond), "server_cold_start_ms")
	}
}
