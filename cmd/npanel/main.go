// Command npanel is nPanel's binary for everything: the control plane
// server, the node agent, a local development cluster and the operator CLI.
// Nodes run cmd/npanel-agent, the same agent command without the rest.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/internal/agentcmd"
	"github.com/npanel/npanel/internal/cmdline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "npanel",
		Short:         "nPanel: a cluster hosting control plane",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var logLevel, logFormat string
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "text or json")
	root.AddCommand(serverCmd(), agentcmd.New("agent", version), devCmd(), ctlCmd(), versionCmd(), mailQuotaWarningCmd(), manCmd())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cmdline.Usagef("%v", err) })
	cobra.OnInitialize(func() { cmdline.SetLogger(logLevel, logFormat) })
	if err := root.Execute(); err != nil {
		if te := trustError(err); te != nil {
			err = te
		}
		err = plainToHTTPS(err)
		fmt.Fprintln(os.Stderr, "npanel:", err)
		var xe *exitError
		if errors.As(err, &xe) {
			os.Exit(xe.code)
		}
		if cmdline.IsUsage(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "npanel %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
