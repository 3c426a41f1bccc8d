// Command npanel-agent is the node agent alone: `npanel agent` without the
// control plane, the CLI and the development cluster linked in. It takes
// the same flags and the same --config file (it is the same command,
// internal/agentcmd), and is what npanel-agent.service runs: the agent runs
// on every node, and a binary without the server's packages (etcd, gqlgen,
// smallstep's CA) idles in a fraction of the memory.
package main

import (
	"fmt"
	"os"

	"github.com/npanel/npanel/internal/cmdline"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "npanel-agent:", err)
		if cmdline.IsUsage(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
