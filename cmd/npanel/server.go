package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/scheduler"
)

func serverCmd() *cobra.Command {
	var cfg controlplane.Config
	var endpoints, strategy, trusted, metricsTokenFile string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control plane replica",
		Long: `Run a control plane replica: the GraphQL API, the agent gateway and, on the
elected leader, the controllers. Without --etcd-endpoints it runs an embedded
etcd in DATA-DIR/etcd that listens only on unix sockets in DATA-DIR
(etcd.sock, etcd-peer.sock; DATA-DIR is made 0700). An external etcd is
reached over https with a client certificate (--etcd-cacert, --etcd-cert,
--etcd-key); plain http endpoints are refused unless --etcd-insecure is given.
The first start creates the cluster CA and the admin user (password from
$NPANEL_ADMIN_PASSWORD, else written to DATA-DIR/initial-admin-password), and
the key-encryption key (--kek-file) that seals the CA's private keys and the
token key in etcd: back it up apart from etcd's backups, and copy it to
every other replica before starting it.

The API serves HTTPS: with --api-cert/--api-key, with a certificate ordered
from ACME for --api-domain, or by default with one from the cluster CA, whose
root fingerprint the first start prints (with the "npanel ctl login
--ca-fingerprint" line that pins it) and every start logs. SIGHUP re-reads
--api-cert/--api-key. --api-insecure-http serves plain HTTP instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DataDir == "" {
				return cmdline.Usagef("--data-dir is required")
			}
			cfg.EtcdEndpoints = cmdline.SplitList(endpoints)
			st, err := scheduler.ParseStrategy(strategy)
			if err != nil {
				return cmdline.Usagef("--scheduler: %v", err)
			}
			cfg.SchedulerStrategy = st
			if cfg.TrustedProxies, err = auth.ParseTrustedProxies(trusted); err != nil {
				return cmdline.Usagef("--trusted-proxies: %v", err)
			}
			// The scrape token comes from the environment or a file, never
			// argv (which every local user can read in ps).
			cfg.MetricsToken = os.Getenv("NPANEL_METRICS_TOKEN")
			if metricsTokenFile != "" {
				b, err := os.ReadFile(metricsTokenFile)
				if err != nil {
					return cmdline.Usagef("--metrics-token-file: %v", err)
				}
				cfg.MetricsToken = strings.TrimSpace(string(b))
			}
			if cfg.MetricsToken != "" && len(cfg.MetricsToken) < 32 {
				return cmdline.Usagef("the metrics token must be at least 32 characters")
			}
			cfg.AdminPassword = os.Getenv("NPANEL_ADMIN_PASSWORD")
			cfg.AllowTestUsernames = cmdline.AllowTestUsernames
			acmeDirectory(&cfg.ACME)
			cfg.Version = version
			cfg.Logger = slog.Default()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := controlplane.New(cfg)
			if err != nil {
				return cmdline.Usagef("%v", err)
			}
			// SIGHUP re-reads --api-cert/--api-key (they are also
			// checked for changes every few seconds).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						_ = srv.ReloadAPICertificate()
					}
				}
			}()
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded etcd and local state (required)")
	f.StringVar(&cfg.APIListen, "api-listen", "127.0.0.1:8080", "GraphQL API, console, health and metrics listener (HTTPS)")
	f.StringVar(&cfg.APICertFile, "api-cert", "", "PEM certificate (with its chain) the API serves, re-read when it changes or on SIGHUP (default: one from the cluster CA)")
	f.StringVar(&cfg.APIKeyFile, "api-key", "", "PEM private key of --api-cert")
	f.StringVar(&cfg.APIDomain, "api-domain", "", "order the API's certificate for this name from the ACME server (--acme-*), validated by TLS-ALPN-01 on --api-listen (which must be its port 443 as the ACME server sees it)")
	f.BoolVar(&cfg.APIInsecureHTTP, "api-insecure-http", false, "serve the API in plain HTTP (a loopback dev cluster, or behind a TLS-terminating proxy)")
	f.StringVar(&cfg.AgentListen, "agent-listen", "127.0.0.1:7443", "agent gateway listener (gRPC, mTLS)")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port agents use to reach the gateway (default: --agent-listen)")
	f.StringVar(&cfg.GossipListen, "gossip-listen", "", "memberlist listener (default: the --agent-listen host, port 7946)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated URLs of an external etcd cluster (default: embedded etcd)")
	f.StringVar(&cfg.EtcdCACert, "etcd-cacert", "", "PEM file of the CA that signed the external etcd's certificates (default: system roots)")
	f.StringVar(&cfg.EtcdCert, "etcd-cert", "", "PEM client certificate for the external etcd")
	f.StringVar(&cfg.EtcdKey, "etcd-key", "", "PEM private key of --etcd-cert")
	f.IntVar(&cfg.EtcdMaxTxnOps, "etcd-max-txn-ops", 0, "the external etcd's --max-txn-ops, when raised from its default 128: bounds what one change may rebuild (updatePlan)")
	f.BoolVar(&cfg.EtcdInsecure, "etcd-insecure", false, "accept external etcd endpoints without TLS or client certificate (anyone who reaches them reads the cluster)")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key sealing the CA and token keys in etcd; the same file on every replica (default: DATA-DIR/kek)")
	f.StringVar(&cfg.DebugListen, "debug-listen", "", "serve /debug/pprof on this address (off by default; keep it on loopback)")
	f.StringVar(&strategy, "scheduler", "spread", "placement strategy: spread (least allocated) or binpack")
	f.DurationVar(&cfg.CertLifetime, "cert-lifetime", 24*time.Hour, "lifetime of node and gateway certificates")
	f.DurationVar(&cfg.AuditRetention, "audit-retention", controlplane.DefaultAuditRetention, "how long audit events are kept (negative: forever)")
	f.StringVar(&trusted, "trusted-proxies", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For gives the client address")
	f.BoolVar(&cfg.PublicIntrospection, "public-introspection", false, "let anonymous callers introspect the GraphQL schema (default: signed-in callers only)")
	f.StringVar(&metricsTokenFile, "metrics-token-file", "", "file holding a bearer token that may scrape /metrics (also $NPANEL_METRICS_TOKEN); admins' tokens always may")
	f.IntVar(&cfg.MaxAPIConnections, "max-api-connections", 4096, "most connections the API listener holds open")
	f.IntVar(&cfg.MaxConnectionsPerIP, "max-connections-per-ip", 256, "most API connections open from one client IP (trusted proxies exempt)")
	f.IntVar(&cfg.MaxWebsocketsPerIP, "max-websockets-per-ip", 64, "most websockets open from one client IP")
	f.DurationVar(&cfg.TaskRetention, "task-retention", controlplane.DefaultTaskRetention, "how long finished tasks are kept (negative: forever)")
	f.DurationVar(&cfg.DatabaseStatusInterval, "database-status-interval", 5*time.Minute, "how often every account's database sizes are refreshed from its node")
	f.DurationVar(&cfg.Migration.Grace, "migration-grace", 7*24*time.Hour, "how long a migrated account's copy stays on its old node for a rollback before it is removed")
	f.DurationVar(&cfg.TaskStallAfter, "task-stall-after", 30*time.Second, "how long a queued task may stay unsent to a connected node before the node turns SUSPECT")
	addACMEFlags(f, &cfg.ACME)
	cmd.AddCommand(serverRestoreCmd())
	return cmdline.WithConfigFile(cmd)
}
