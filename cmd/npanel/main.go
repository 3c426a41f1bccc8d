// Command npanel is the one nPanel binary: the control plane server, the
// node agent, a local development cluster and the operator CLI.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks bad input: the CLI exits 2 for it, 1 for everything else.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

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
	root.AddCommand(serverCmd(), agentCmd(), devCmd(), ctlCmd(), versionCmd(), mailQuotaWarningCmd(), manCmd())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	cobra.OnInitialize(func() { setLogger(logLevel, logFormat) })
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
		var ue *usageError
		if errors.As(err, &ue) || isCobraUsageError(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// setLogger makes the default logger from --log-level and --log-format.
func setLogger(level, format string) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	slog.SetDefault(slog.New(h))
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

// isCobraUsageError recognises cobra's own argument errors, which it does
// not type.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires at most", "required flag", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
