package chaos

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one real process of the cluster, restartable with the same
// argv. Each start logs to its own file (NAME.N.log), so that what one
// process lifetime did can be told from the next.
type proc struct {
	name   string
	argv   []string
	env    []string
	logDir string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already running", p.name)
	}
	p.starts++
	f, err := os.Create(filepath.Join(p.logDir, fmt.Sprintf("%s.%d.log", p.name, p.starts)))
	if err != nil {
		return err
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// A test binary that dies takes the cluster with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// stop sends sig and waits for the process, SIGKILL after grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (p *proc) kill9() { p.stop(syscall.SIGKILL, time.Minute) }

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// killTree kills the process and everything it started, as systemd does
// with a unit's cgroup (KillMode=control-group) when its main process dies:
// the daemons an agent supervises run in their own process groups, and
// nginx's workers would otherwise keep the node's ports.
func (p *proc) killTree() {
	pid := p.pid()
	if pid == 0 {
		return
	}
	kids := descendants(pid)
	p.kill9()
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
}

// descendants lists the processes below pid, by their parent links.
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			parent[n] = pp
		}
	}
	var out []int
	for n := range parent {
		for q := parent[n]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// logs returns the log files of every lifetime, oldest first.
func (p *proc) logs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i := 1; i <= p.starts; i++ {
		out = append(out, filepath.Join(p.logDir, fmt.Sprintf("%s.%d.log", p.name, i)))
	}
	return out
}

// tail is the end of the current or last log, for failure messages.
func (p *proc) tail() string {
	ls := p.logs()
	if len(ls) == 0 {
		return ""
	}
	b, _ := os.ReadFile(ls[len(ls)-1])
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// killStrays kills (SIGKILL, by PID) every process whose command line names
// dir: the daemons a killed agent supervised (nginx, PHP-FPM, PowerDNS,
// MariaDB run in their own process groups and outlive it). Production's
// systemd unit does the same when the agent dies (KillMode=control-group).
func killStrays(t testing.TB, dir string) {
	t.Helper()
	self := os.Getpid()
	for range 50 {
		pids := straysOf(dir, self)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("processes under %s survive SIGKILL: %v", dir, straysOf(dir, self))
}

func straysOf(dir string, self int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		// A zombie is gone already; its parent reaps it.
		if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			continue
		}
		if strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rss is the resident memory of pid, 0 if it is gone.
func rss(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
