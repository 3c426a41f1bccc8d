package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
)

func agentCmd() *cobra.Command {
	var cfg nodeagent.Config
	var servers, modules string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent",
		Long: `Run the node agent. On first start it enrols with --join-token (from
"npanel ctl node add") and keeps its key and certificate in --data-dir; later
starts need no token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Servers = splitList(servers)
			if len(cfg.Servers) == 0 {
				return usagef("--server is required")
			}
			if cfg.DataDir == "" {
				return usagef("--data-dir is required")
			}
			if cfg.JoinToken == "" {
				cfg.JoinToken = os.Getenv("NPANEL_JOIN_TOKEN")
			}
			mods, err := allowlist.Modules(splitList(modules))
			if err != nil {
				return usagef("--modules: %v", err)
			}
			cfg.Modules = mods
			cfg.Version = version
			cfg.Logger = slog.Default()
			a, err := nodeagent.New(cfg)
			if err != nil {
				return usagef("%v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&servers, "server", "", "gateway address host:port; several, comma-separated, are tried in turn (required)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "one-time join token for the first start (or $NPANEL_JOIN_TOKEN)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the node's key, certificate and task journal (required)")
	f.StringVar(&cfg.GossipListen, "gossip-listen", "0.0.0.0:7946", `memberlist listener; "" disables gossip`)
	f.StringVar(&cfg.Platform, "platform", "", "distro profile: alma9 or debian12 (default: detected from /etc/os-release)")
	f.StringVar(&modules, "modules", "all", "service modules to run, comma-separated ("+strings.Join(allowlist.ModuleNames(), ", ")+"), all or none")
	f.StringVar(&cfg.HTTPListen, "http-listen", "", `address nginx serves sites on (default ":80")`)
	f.StringVar(&cfg.DNSListen, "dns-listen", "", `address PowerDNS answers on (default "0.0.0.0:53")`)
	f.StringVar(&cfg.DNSAPIListen, "dns-api-listen", "", `loopback address of PowerDNS's HTTP API (default "127.0.0.1:8081")`)
	f.StringVar(&cfg.Prefix, "prefix", "", "move every config, state and log path of the profile under this absolute directory (tests, npanel dev); the user database stays the host's")
	return cmd
}
