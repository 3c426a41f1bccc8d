package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// procStatus reads fields of a process's /proc status in bytes (VmRSS,
// RssAnon, RssFile: resident memory, and how much of it is anonymous or
// file-backed, the binary's own pages mostly).
func procStatus(t testing.TB, pid int, fields ...string) map[string]float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, name := range fields {
			if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
				kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
				if err != nil {
					t.Fatal(err)
				}
				out[name] = float64(kb) * 1024
			}
		}
	}
	for _, name := range fields {
		if _, ok := out[name]; !ok {
			t.Fatalf("no %s in /proc/%d/status", name, pid)
		}
	}
	return out
}

// vmRSS reads a process's resident set size in bytes from /proc.
func vmRSS(t testing.TB, pid int) float64 { return procStatus(t, pid, "VmRSS")["VmRSS"] }

// buildRelease builds the command in dir (relative to cmd/npanel) as make
// package does, static and stripped: the agents' figures are those of the
// binaries the packages install.
func buildRelease(t testing.TB, dir, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, dir)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", dir, err, out)
	}
	return bin
}

func fileSize(t testing.TB, path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return float64(fi.Size())
}

// BenchmarkIdleRSS starts the real binaries as a server with embedded etcd
// and two enrolled agents with no service modules, one `npanel agent` and
// one npanel-agent (issue 29: the agent alone, without the server's
// packages), both built as the packages ship them, lets them idle for
// 10 s and reports their resident memory (and the file-backed part of it:
// the binary's pages), the release binaries' sizes and the server's cold
// start (exec to /readyz answering).
func BenchmarkIdleRSS(b *testing.B) {
	npanelBin, agentBin := buildRelease(b, ".", "npanel"), buildRelease(b, "../npanel-agent", "npanel-agent")
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
		token := func(node string) string {
			out, code := run(b, env, "", "ctl", "node", "add", node, "--address", "127.0.0.1", "--roles", "web", "-o", "json")
			if code != 0 {
				b.Fatal(out)
			}
			return between(out, `"token":"`, `"`)
		}
		agentArgs := func(node string) []string {
			return []string{"--server", s.gateway, "--join-token", token(node), "--data-dir", b.TempDir(),
				"--modules", "none", "--gossip-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
				"--migration-listen", testenv.FreeAddr(b)}
		}
		agent := startFrom(b, npanelBin, nil, append([]string{"agent"}, agentArgs("idle-1")...)...)
		slim := startFrom(b, agentBin, nil, agentArgs("idle-2")...)
		testenv.WaitFor(b, 20*time.Second, "both agents READY", func() bool {
			out, _ := run(b, env, "", "ctl", "node", "list")
			return strings.Count(out, "READY") == 2
		})
		time.Sleep(10 * time.Second)
		resp, err := http.Get("http://" + s.api + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		const mb = 1 << 20
		b.ReportMetric(vmRSS(b, s.proc.cmd.Process.Pid)/mb, "server_rss_MB")
		a := procStatus(b, agent.cmd.Process.Pid, "VmRSS", "RssFile")
		b.ReportMetric(a["VmRSS"]/mb, "agent_rss_MB")
		b.ReportMetric(a["RssFile"]/mb, "agent_rss_file_MB")
		sl := procStatus(b, slim.cmd.Process.Pid, "VmRSS", "RssFile")
		b.ReportMetric(sl["VmRSS"]/mb, "npanel_agent_rss_MB")
		b.ReportMetric(sl["RssFile"]/mb, "npanel_agent_rss_file_MB")
		b.ReportMetric(fileSize(b, npanelBin)/mb, "npanel_bin_MB")
		b.ReportMetric(fileSize(b, agentBin)/mb, "npanel_agent_bin_MB")
		b.ReportMetric(float64(coldStart)/float64(time.Millisecond), "server_cold_start_ms")
	}
}
