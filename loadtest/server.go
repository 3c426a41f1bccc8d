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

// child is a process the load generator started and waits for. Its output
// goes to a log file; childProcAttr ties its life to the generator's.
type child struct {
	dir     string // temporary: its binary, data and log; removed by stop
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{} // closed when the process has been waited for
	waitErr error
	started time.Time // just after the process started
}

// newChild makes a child's temporary directory and, unless binary names
// one, builds pkg there as name; it returns the child and the binary to run.
func newChild(ctx context.Context, name, binary, pkg string, logf func(string, ...any)) (child, string, error) {
	dir, err := os.MkdirTemp("", "npanel-loadtest-"+name+"-")
	if err != nil {
		return child{}, "", err
	}
	if binary == "" {
		binary = filepath.Join(dir, name)
		if err := goBuild(ctx, binary, pkg, logf); err != nil {
			os.RemoveAll(dir)
			return child{}, "", err
		}
	}
	return child{dir: dir}, binary, nil
}

// start runs argv with extra environment, its output written to logPath.
func (c *child) start(argv, env []string, logPath string) error {
	var err error
	c.logPath = logPath
	if c.logFile, err = os.Create(logPath); err != nil {
		return err
	}
	c.exited = make(chan struct{})
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.logFile, c.logFile
	c.cmd.SysProcAttr = childProcAttr()
	if err := c.cmd.Start(); err != nil {
		c.cmd = nil
		return fmt.Errorf("start %s: %w", filepath.Base(argv[0]), err)
	}
	c.started = time.Now()
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return nil
}

// waitReady polls url until it answers 200, the process exits or limit
// passes.
func (c *child) waitReady(ctx context.Context, what, url string, limit time.Duration, logf func(string, ...any)) error {
	begin := time.Now()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx, url) {
			logf("%s ready in %.2fs", what, time.Since(begin).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.exited:
			return fmt.Errorf("%s exited before it was ready (%v); its log ends:\n%s", what, c.waitErr, c.logTail(40))
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %v; its log ends:\n%s", what, limit, c.logTail(40))
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

// pid is the process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports whether the process is still running.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// terminate ends the process by its PID (SIGTERM, then SIGKILL after 20 s)
// and waits for it. It is safe to call more than once.
func (c *child) terminate() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
}

// logTail returns the last n lines of the process's log.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends the process, waits for it and removes its directory. It is
// safe to call more than once.
func (c *child) stop() {
	c.terminate()
	if c.dir != "" {
		os.RemoveAll(c.dir)
		c.dir = ""
	}
}

// serverProc is an npanel server the load generator started as a child
// process, so that its CPU and memory are measured apart from the
// generator's own.
type serverProc struct {
	child
	api      string // host:port
	gateway  string // host:port
	password string
	dataDir  string
}

// startServer builds the npanel binary (unless binary names one) and starts
// `npanel server` on free loopback ports with a fresh data dir, then waits
// for /readyz. The server embeds its etcd unless etcd is an external one,
// which it then reaches with the client certificate etcd made for it. On error everything it started is stopped and removed.
// The server's output goes to logPath, or to a file in the temporary
// directory when logPath is empty.
func startServer(ctx context.Context, binary string, etcd *etcdProc, logPath, debugListen string, logf func(string, ...any)) (_ *serverProc, err error) {
	c, binary, err := newChild(ctx, "npanel", binary, "./cmd/npanel", logf)
	if err != nil {
		return nil, err
	}
	s := &serverProc{child: c}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()

	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	s.api, s.gateway = addrs[0], addrs[1]
	s.password = "lt-" + randomHex(12)
	if logPath == "" {
		logPath = filepath.Join(s.dir, "server.log")
	}
	s.dataDir = filepath.Join(s.dir, "data")
	argv := []string{binary, "server", "--data-dir", s.dataDir,
		"--api-listen", s.api, "--api-insecure-http", "--agent-listen", s.gateway, "--gossip-listen", "127.0.0.1:0"}
	if etcd != nil {
		argv = append(argv, "--etcd-endpoints", "https://"+etcd.client, "--etcd-cacert", etcd.tls.CA,
			"--etcd-cert", etcd.tls.ClientCert, "--etcd-key", etcd.tls.ClientKey, "--etcd-max-txn-ops", strconv.Itoa(maxTxnOps))
	}
	if debugListen != "" {
		argv = append(argv, "--debug-listen", debugListen)
	}
	if err := s.start(argv, []string{"NPANEL_ADMIN_PASSWORD=" + s.password}, logPath); err != nil {
		return nil, err
	}
	logf("server pid %d: api %s, gateway %s, data %s", s.pid(), s.api, s.gateway, s.dataDir)
	if err := s.waitReady(ctx, "server", "http://"+s.api+"/readyz", 90*time.Second, logf); err != nil {
		return nil, err
	}
	return s, nil
}

// goBuild builds pkg (a path in the npanel module, or a main package of one
// of its dependencies at the version go.mod pins) into out.
func goBuild(ctx context.Context, out, pkg string, logf func(string, ...any)) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	logf("building %s", pkg)
	begin := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	logf("built in %.1fs", time.Since(begin).Seconds())
	return nil
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

// freeAddrs returns n distinct free loopback addresses. The listeners
// stay open until all are picked: closed one at a time, the kernel may
// hand the same port out twice.
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// procSample is one reading of a process's CPU time and memory.
type procSample struct {
	at      time.Time
	cpu     time.Duration // user + system
	rss     int64         // bytes
	peakRSS int64         // VmHWM, bytes
	// rssAnon is the resident heap, stacks and other anonymous memory;
	// rssFile the resident pages of mapped files (etcd's bbolt database,
	// the binary), which the kernel can drop and read again.
	rssAnon, rssFile int64
	// written is what the process sent to storage (write_bytes of
	// /proc/PID/io), bytes; -1 where the kernel does not tell.
	written  int64
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
		case "RssAnon":
			s.rssAnon = kB(v)
		case "RssFile":
			s.rssFile = kB(v)
		}
	}
	s.written = writeBytes(pid)
	s.hasStats = true
	return s
}

// writeBytes reads write_bytes from /proc/PID/io: -1 when it cannot.
func writeBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
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
