// Command loadtest is nPanel's load generator. It starts a control plane
// (the real npanel binary, as a child process so that its CPU and memory are
// measured apart from the generator's) or targets an existing one, connects
// N simulated agents over real mTLS gRPC streams, creates accounts through
// GraphQL at a given rate and reports how fast they reach ACTIVE, the API's
// latency, the server's CPU and memory and etcd's size, as a table and as
// JSON.
//
//	go run ./loadtest --agents 1000 --accounts 100000 --rate 600
//
// The agents are simulations (see simulatedAgent): they speak the real
// protocol but execute nothing. Everything stays on loopback unless
// --server/--gateway point elsewhere, and the run is bounded by --timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"
)

// The started server's etcd (--etcd).
const (
	etcdEmbedded = "embedded"
	etcdExternal = "external"
)

// Config configures one run.
type Config struct {
	Agents      int           // simulated agents
	Accounts    int           // accounts to create
	Rate        float64       // createAccount calls per second; <= 0: unlimited
	Concurrency int           // createAccount calls in flight at most
	Latency     time.Duration // simulated action latency

	// Server (GraphQL base URL) and Gateway (host:port) target an existing
	// cluster; both empty starts one. AdminPassword is then required.
	Server        string
	Gateway       string
	AdminUser     string
	AdminPassword string
	// ServerPID, for an existing server on this machine, lets its CPU and
	// memory be measured.
	ServerPID int
	// ServerBinary is a prebuilt npanel binary; empty builds ./cmd/npanel.
	ServerBinary string
	// ServerLog keeps the started server's output in this file; empty:
	// a temporary file removed with the server's data.
	ServerLog string
	// ServerDebugListen makes the started server serve /debug/pprof there.
	ServerDebugListen string
	// Etcd is where the started server keeps its state: etcdEmbedded (an
	// etcd inside the server's process, the default) or etcdExternal (an
	// etcd process the run starts, from EtcdBinary or, if that is empty,
	// built from the etcd module go.mod pins).
	Etcd       string
	EtcdBinary string
	// DiskProbe is where the disk probe (diskProbe) writes: "auto" (or
	// empty), the started server's etcd directory and no probe with
	// --server; "off"; or a directory.
	DiskProbe string

	Timeout       time.Duration // bound on the whole run
	ListSamples   int           // accounts(first:50) queries timed at the end
	EnrolParallel int           // agents enrolled and connected at once

	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (c *Config) validate() error {
	switch {
	case c.Agents < 1:
		return errors.New("--agents must be at least 1")
	case c.Accounts < 0:
		return errors.New("--accounts must not be negative")
	case c.Concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case c.Latency < 0:
		return errors.New("--latency must not be negative")
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	case c.ListSamples < 0:
		return errors.New("--list-samples must not be negative")
	case (c.Server == "") != (c.Gateway == ""):
		return errors.New("--server and --gateway go together")
	case c.Server != "" && c.AdminPassword == "":
		return errors.New("--admin-password (or NPANEL_ADMIN_PASSWORD) is required with --server")
	case c.Etcd != "" && c.Etcd != etcdEmbedded && c.Etcd != etcdExternal:
		return fmt.Errorf("--etcd must be %s or %s, not %q", etcdEmbedded, etcdExternal, c.Etcd)
	case c.Server != "" && (c.Etcd == etcdExternal || c.EtcdBinary != ""):
		return errors.New("--etcd external and --etcd-binary start the etcd of the server this run starts: not with --server")
	case c.EtcdBinary != "" && c.Etcd != etcdExternal:
		return errors.New("--etcd-binary needs --etcd external")
	}
	if c.Etcd == "" {
		c.Etcd = etcdEmbedded
	}
	if c.EnrolParallel < 1 {
		c.EnrolParallel = 32
	}
	if c.AdminUser == "" {
		c.AdminUser = "admin"
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

func main() {
	cfg := Config{Log: os.Stdout}
	var out, cpuProfile string
	// A flag set of its own: dependencies register flags (glog's) on the
	// global one, which --help would list as the load test's.
	fs := flag.NewFlagSet("loadtest", flag.ExitOnError)
	fs.IntVar(&cfg.Agents, "agents", 100, "simulated agents to connect")
	fs.IntVar(&cfg.Accounts, "accounts", 10000, "accounts to create")
	fs.Float64Var(&cfg.Rate, "rate", 500, "createAccount calls per second (0: as fast as --concurrency allows)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "createAccount calls in flight at most")
	fs.DurationVar(&cfg.Latency, "latency", 5*time.Millisecond, "simulated latency of every agent action")
	fs.StringVar(&cfg.Server, "server", "", "GraphQL base URL of an existing server (e.g. http://127.0.0.1:8080); default: start one")
	fs.StringVar(&cfg.Gateway, "gateway", "", "agent gateway host:port of the existing server")
	fs.StringVar(&cfg.AdminUser, "admin-user", "admin", "admin user name on the existing server")
	fs.StringVar(&cfg.AdminPassword, "admin-password", os.Getenv("NPANEL_ADMIN_PASSWORD"), "admin password on the existing server (default $NPANEL_ADMIN_PASSWORD)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "PID of the existing server, to measure its CPU and memory")
	fs.StringVar(&cfg.ServerBinary, "server-binary", "", "prebuilt npanel binary to start (default: go build ./cmd/npanel)")
	fs.StringVar(&cfg.ServerDebugListen, "server-debug-listen", "", "serve the started server's /debug/pprof on this loopback address, to profile it under load")
	fs.StringVar(&cfg.Etcd, "etcd", etcdEmbedded, "the started server's etcd: embedded (in its process) or external (an etcd process of its own, the production topology)")
	fs.StringVar(&cfg.EtcdBinary, "etcd-binary", "", "prebuilt etcd binary for --etcd external (default: go build the etcd go.mod pins)")
	fs.StringVar(&cfg.DiskProbe, "disk-probe", "auto", "time a 4 KiB write+fdatasync every 10 ms during the load in this directory (auto: the started server's etcd directory; off)")
	fs.StringVar(&cfg.ServerLog, "server-log", "", "keep the started server's output in this file (default: discarded with its data)")
	fs.StringVar(&out, "out", "", "JSON report path (default loadtest/results/<timestamp>.json)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "bound on the whole run")
	fs.IntVar(&cfg.ListSamples, "list-samples", 200, "accounts(first:50) queries to time at the end")
	fs.IntVar(&cfg.EnrolParallel, "enrol-parallel", 32, "agents enrolled and connected at once")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file (the server's: --server-debug-listen)")
	_ = fs.Parse(os.Args[1:]) // ExitOnError: exits 2 with the usage
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadtest: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	if out == "" {
		out = defaultOut()
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: cpu profile:", err)
			os.Exit(1)
		}
		defer f.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, cfg)
	stop()
	pprof.StopCPUProfile()
	// A run that failed before any agent was up measured nothing worth a
	// report; the error says why.
	if rep != nil && rep.Agents.Ready > 0 {
		rep.print(os.Stdout)
		if werr := rep.writeJSON(out); werr != nil {
			fmt.Fprintln(os.Stderr, "loadtest: write report:", werr)
		} else {
			fmt.Printf("\nreport: %s\n", out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// defaultOut is loadtest/results/<timestamp>.json under the module root
// (that directory is ignored by git), or under the working directory when
// the module cannot be found.
func defaultOut() string {
	dir := "."
	if root, err := moduleRoot(context.Background()); err == nil {
		dir = root
	}
	return filepath.Join(dir, "loadtest", "results", time.Now().Format("20060102-150405")+".json")
}
