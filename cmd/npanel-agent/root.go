package main

import (
	"github.com/spf13/cobra"

	"github.com/npanel/npanel/internal/agentcmd"
	"github.com/npanel/npanel/internal/cmdline"
)

// newRoot is the agent command as a root: npanel's persistent log flags
// become its own, so /etc/npanel/agent.yaml means the same to both binaries.
func newRoot() *cobra.Command {
	cmd := agentcmd.New("npanel-agent", version)
	cmd.Version = version
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	var logLevel, logFormat string
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return cmdline.Usagef("%v", err) })
	cobra.OnInitialize(func() { cmdline.SetLogger(logLevel, logFormat) })
	return cmd
}
