package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
)

func devCmd() *cobra.Command {
	var dataDir, apiListen, agentListen, modules string
	var agents int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster: a server with embedded etcd and agents on loopback",
		Long: `Run a local development cluster in one process: a server with embedded etcd
and --agents node agents (dev-1, dev-2, ...) on 127.0.0.1. State lives in
--data-dir and survives restarts: agents enrol once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if agents < 0 || agents > 16 {
				return cmdline.Usagef("--agents must be between 0 and 16")
			}
			abs, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			mods, err := allowlist.Modules(cmdline.SplitList(modules))
			if err != nil {
				return cmdline.Usagef("--modules: %v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDev(ctx, abs, apiListen, agentListen, agents, mods)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", ".dev", "state directory")
	f.IntVar(&agents, "agents", 2, "number of local agents")
	f.StringVar(&apiListen, "api-listen", "127.0.0.1:8080", "API listener")
	f.StringVar(&agentListen, "agent-listen", "127.0.0.1:7443", "agent gateway listener")
	f.StringVar(&modules, "modules", "all", "service modules the agents run ("+strings.Join(allowlist.ModuleNames(), ", ")+"), all or none")
	return cmd
}

func runDev(ctx context.Context, dir, apiListen, agentListen string, agents int, mods []actions.Module) error {
	log := slog.Default()
	// Created traversable before the server makes its private subdirectory:
	// the agents' prefixes below it must be reachable by nginx's workers.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	serverDir := filepath.Join(dir, "server")
	srv, err := controlplane.New(controlplane.Config{
		DataDir:   serverDir,
		APIListen: apiListen,
		// On loopback, for the developer's browser and CLI; a
		// production server serves HTTPS.
		APIInsecureHTTP: true,
		AgentListen:     agentListen,
		GossipListen:    "127.0.0.1:0",
		AdminPassword:   os.Getenv("NPANEL_ADMIN_PASSWORD"),
		Version:         version,
		Logger:          log.With("component", "server"),
	})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	select {
	case <-srv.Ready():
	case <-gctx.Done():
		return g.Wait()
	}

	password := os.Getenv("NPANEL_ADMIN_PASSWORD")
	if password == "" {
		b, err := os.ReadFile(filepath.Join(serverDir, "initial-admin-password"))
		if err != nil {
			return fmt.Errorf("read admin password (set NPANEL_ADMIN_PASSWORD if you changed it): %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	base := srv.APIURL()
	c, _, err := client.New(base, "").Login(gctx, "admin", password)
	if err != nil {
		return fmt.Errorf("log in as admin: %w", err)
	}
	for i := 1; i <= agents; i++ {
		a, err := devAgent(gctx, c, dir, i, srv.AgentAddr(), mods, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return a.Run(gctx) })
	}
	dns := slices.ContainsFunc(mods, func(m actions.Module) bool { return m.Name() == "dns" })
	if waitAgentsReady(gctx, c, agents, dns, log) == nil {
		fmt.Printf(`
nPanel dev cluster is up.

  Console:   %s/graphql
  User:      admin
  Password:  %s
  Agents:    %d (dev-1 ... dev-%d), gateway %s
  Sites:     dev-N serves HTTP on 127.0.0.1:%d+N (curl -H 'Host: DOMAIN' ...)
             and HTTPS on 127.0.0.1:%d+N (curl -k --resolve DOMAIN:PORT:127.0.0.1 ...)
  Mail:      dev-N on 127.0.0.1: SMTP %d+N, submission %d+N, SMTPS %d+N,
             IMAP %d+N, IMAPS %d+N, POP3 %d+N, POP3S %d+N
             (swaks --server 127.0.0.1:%d --tls --auth-user ADDRESS ...)
  Metrics:   dev-N's /metrics on 127.0.0.1:%d+N, plain HTTP or TLS, with a scrape
             token (curl -H 'Authorization: Bearer TOKEN' http://127.0.0.1:%d/metrics)

  bin/npanel ctl --server %s login
  bin/npanel ctl --server %s node list

Ctrl-C stops everything; state stays in %s.
`, base, password, agents, agents, srv.AgentAddr(), devHTTPBase, devHTTPSBase,
			devSMTPBase, devSubmissionBase, devSMTPSBase, devIMAPBase, devIMAPSBase, devPOP3Base, devPOP3SBase,
			devSubmissionBase+1, devMetricsBase, devMetricsBase+1, base, base, dir)
	} // else the cluster is stopping: g.Wait says why
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// waitAgentsReady waits until the dev agents report READY, with their DNS
// servers running when they run the dns module, so that the banner is only printed once the cluster
// takes work.
func waitAgentsReady(ctx context.Context, c *client.Client, agents int, dns bool, log *slog.Logger) error {
	if agents == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "Waiting for %d agents to enrol and report READY...\n", agents)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		nodes, err := c.Nodes(ctx)
		ready, waiting := 0, []string{}
		for _, n := range nodes {
			if !strings.HasPrefix(n.Name, "dev-") {
				continue
			}
			// READY, and its DNS server reported running: an account
			// created before that would have its zone served elsewhere.
			if n.Status == "READY" && (!dns || dnsRunning(ctx, c, n.Name)) {
				ready++
			} else {
				waiting = append(waiting, n.Name+" "+n.Status)
			}
		}
		if err == nil && ready >= agents {
			return nil
		}
		if time.Since(lastLog) > 15*time.Second {
			log.Info("still waiting for the dev agents", "ready", ready, "waiting", strings.Join(waiting, ", "), "err", err)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// dnsRunning reports whether node's agent reported its PowerDNS running.
func dnsRunning(ctx context.Context, c *client.Client, node string) bool {
	svcs, _, err := c.Services(ctx, node)
	if err != nil {
		return false
	}
	for _, sv := range svcs {
		if sv.Name == "pdns" && sv.State == "RUNNING" {
			return true
		}
	}
	return false
}

// Dev agent N serves sites on 127.0.0.1:8080+N (HTTPS on 8440+N), DNS on 127.0.0.1:5300+N and
// its PowerDNS API on 127.0.0.1:8180+N.
const (
	devHTTPBase   = 8080
	devHTTPSBase  = 8440
	devDNSBase    = 5300
	devDNSAPIBase = 8180

	// Mail: dev-N's Exim and Dovecot listen on these bases + N.
	devSMTPBase       = 2520
	devSubmissionBase = 5870
	devSMTPSBase      = 4650
	devIMAPBase       = 1430
	devIMAPSBase      = 9930
	devPOP3Base       = 1100
	devPOP3SBase      = 9950

	// Backup node (--modules backup): dev-N's SFTP sshd. Its chroot
	// needs a dev directory that only root can write (not under /tmp).
	devSFTPBase = 2320
	// Migration endpoint: dev-N's on 127.0.0.1:2420+N (fixed, not picked
	// at random: a migration in flight keeps the address it was given
	// across a restart of npanel dev).
	devMigrationBase = 2420
	// Metrics: dev-N's /metrics on 127.0.0.1:9469+N (fixed, so a local
	// Prometheus configuration keeps working across restarts).
	devMetricsBase = 9469
)

// devAgent returns agent number i, declaring the node and issuing a join
// token only the first time (a restart finds its identity in its data dir).
func devAgent(ctx context.Context, c *client.Client, devDir string, i int, gateway string, mods []actions.Module, log *slog.Logger) (*nodeagent.Agent, error) {
	name := fmt.Sprintf("dev-%d", i)
	dir := filepath.Join(devDir, "agents", name)
	// The prefix is not inside the (0700) data dir: nginx's workers and the
	// accounts' PHP must be able to reach the homes under it.
	prefix := filepath.Join(devDir, "nodes", name)
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, err
	}
	for d := prefix; d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			log.Warn("others cannot traverse this directory, so nginx cannot serve the dev sites below it; chmod o+x it", "dir", d)
			break
		}
	}
	token := ""
	if _, err := os.Stat(filepath.Join(dir, "node.crt")); err != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		tok, err := c.CreateJoinToken(cctx, name, "127.0.0.1", []string{"WEB", "DNS", "MAIL", "DB"}, map[string]string{"env": "dev"})
		if err != nil {
			return nil, fmt.Errorf("join token for %s: %w", name, err)
		}
		token = tok.Token
	}
	return nodeagent.New(nodeagent.Config{
		Servers:      []string{gateway},
		JoinToken:    token,
		DataDir:      dir,
		GossipListen: "127.0.0.1:0",
		// Each dev agent keeps homes, backups, service configs and logs in
		// its own directory, and runs its own nginx, PHP-FPM, PowerDNS and
		// MariaDB there; user accounts are real users of this machine.
		Prefix:       prefix,
		Modules:      mods,
		HTTPListen:   fmt.Sprintf("127.0.0.1:%d", devHTTPBase+i),
		HTTPSListen:  fmt.Sprintf("127.0.0.1:%d", devHTTPSBase+i),
		DNSListen:    fmt.Sprintf("127.0.0.1:%d", devDNSBase+i),
		DNSAPIListen: fmt.Sprintf("127.0.0.1:%d", devDNSAPIBase+i),

		SMTPListen:       fmt.Sprintf("127.0.0.1:%d", devSMTPBase+i),
		SubmissionListen: fmt.Sprintf("127.0.0.1:%d", devSubmissionBase+i),
		SMTPSListen:      fmt.Sprintf("127.0.0.1:%d", devSMTPSBase+i),
		IMAPListen:       fmt.Sprintf("127.0.0.1:%d", devIMAPBase+i),
		IMAPSListen:      fmt.Sprintf("127.0.0.1:%d", devIMAPSBase+i),
		POP3Listen:       fmt.Sprintf("127.0.0.1:%d", devPOP3Base+i),
		POP3SListen:      fmt.Sprintf("127.0.0.1:%d", devPOP3SBase+i),
		SFTPListen:       fmt.Sprintf("127.0.0.1:%d", devSFTPBase+i),
		MigrationListen:  fmt.Sprintf("127.0.0.1:%d", devMigrationBase+i),
		MetricsListen:    fmt.Sprintf("127.0.0.1:%d", devMetricsBase+i),
		Version:          version,
		Logger:           log.With("component", "agent", "node", name),
	})
}
