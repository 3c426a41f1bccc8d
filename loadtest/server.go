package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverProc is an npanel server the load generator started as a child
// process, so that its CPU and memory are measured apart from the
// generator's own.
type serverProc struct {
	dir      string // temporary: binary, data dir, log; removed by stop
	api      string // host:port
	gateway  string // host:port
	password string
	cmd      *exec.Cmd
	logPath  string
	logFile  *os.File
	exited   chan struct{} // closed when the process has been waited for
	waitErr  error
}

// startServer builds the npanel binary (unless binary names one) and starts
// `npanel server` on free loopback ports with a fresh data dir, then waits
// for /readyz. On error everything it started is stopped and removed.
// The server's output goes to logPath, or to a file in the temporary
// directory when logPath is empty.
func startServer(ctx context.Context, binary, logPath, debugListen string, logf func(string, ...any)) (_ *serverProc, err error) {
	dir, err := os.MkdirTemp("", "npanel-loadtest-")
	if err != nil {
		return nil, err
	}
	s := &serverProc{dir: dir, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()

	if binary == "" {
		binary = filepath.Join(dir, "npanel")
		root, err := moduleRoot(ctx)
		if err != nil {
			return nil, err
		}
		logf("building %s/cmd/npanel", root)
		begin := time.Now()
		build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/npanel")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build npanel: %w\n%s", err, out)
		}
		logf("built in %.1fs", time.Since(begin).Seconds())
	}

	addrs := make([]string, 4)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	s.api, s.gateway = addrs[0], addrs[1]
	s.password = "lt-" + randomHex(12)
	s.logPath = logPath
	if s.logPath == "" {
		s.logPath = filepath.Join(dir, "server.log")
	}
	if s.logFile, err = os.Create(s.logPath); err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	s.cmd = exec.Command(binary, "server", "--data-dir", dataDir,
		"--api-listen", s.api, "--agent-listen", s.gateway, "--gossip-listen", "127.0.0.1:0",
		"--etcd-client-listen", addrs[2], "--etcd-peer-listen", addrs[3])
	if debugListen != "" {
		s.cmd.Args = append(s.cmd.Args, "--debug-listen", debugListen)
	}
	s.cmd.Env = append(os.Environ(), "NPANEL_ADMIN_PASSWORD="+s.password)
	s.cmd.Stdout, s.cmd.Stderr = s.logFile, s.logFile
	s.cmd.SysProcAttr = childProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start npanel server: %w", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	logf("server pid %d: api %s, gateway %s, data %s", s.cmd.Process.Pid, s.api, s.gateway, dataDir)

	begin := time.Now()
	deadline := time.NewTimer(90 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx, "http://"+s.api+"/readyz") {
			logf("server ready in %.2fs", time.Since(begin).Seconds())
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.exited:
			return nil, fmt.Errorf("npanel server exited before it was ready (%v); its log ends:\n%s", s.waitErr, s.logTail(40))
		case <-deadline.C:
			return nil, fmt.Errorf("npanel server not ready after 90s; its log ends:\n%s", s.logTail(40))
		case <-tick.C:
		}
	}
}

func ready(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pid is the server's process id.
func (s *serverProc) pid() int { return s.cmd.Process.Pid }

// alive reports whether the process is still running.
func (s *serverProc) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stop ends the server by its PID (SIGTERM, then SIGKILL after 20 s), waits
// for it and removes its directory. It is safe to call more than once.
func (s *serverProc) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// logTail returns the last n lines of the server's log.
func (s *serverProc) logTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// moduleRoot is the directory of the go.mod the go command sees from here.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the npanel module: run from the repository, or pass --server")
	}
	return filepath.Dir(gomod), nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// procSample is one reading of a process's CPU time and memory.
type procSample struct {
	at       time.Time
	cpu      time.Duration // user + system
	rss      int64         // bytes
	peakRSS  int64         // VmHWM, bytes
	hasStats bool
}

// readProc samples /proc/PID. A missing process gives hasStats false.
func readProc(pid int) procSample {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return s
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from the closing parenthesis. utime and stime are fields 14
	// and 15 of the whole line.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s
	}
	s.cpu = time.Duration(utime+stime) * time.Second / time.Duration(clockTicks())
	st, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return s
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			s.rss = kB(v)
		case "VmHWM":
			s.peakRSS = kB(v)
		}
	}
	s.hasStats = true
	return s
}

func kB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return n * 1024
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime, read from
// the auxiliary vector (AT_CLKTCK) since sysconf needs cgo; 100 otherwise.
func clockTicks() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil || len(b)%16 != 0 {
		return 100
	}
	const atClkTck = 17
	for i := 0; i+16 <= len(b); i += 16 {
		if binary.NativeEndian.Uint64(b[i:]) == atClkTck {
			if v := int64(binary.NativeEndian.Uint64(b[i+8:])); v > 0 {
				return v
			}
		}
	}
	return 100
}
