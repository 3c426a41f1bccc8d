package mail

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
)

// QueueLength is the number of messages in Exim's queue (`exim -bpc`, which
// counts without listing). ok is false on a node that does not run the
// mail module. It is for the metrics collector, which caches it: it costs
// a process and a read of the spool's input directory.
func QueueLength(ctx context.Context, env *actions.Env) (n int, ok bool, err error) {
	if env == nil || env.Profile == nil || !slices.Contains(env.Modules, ModuleName) || unavailable(env) != nil {
		return 0, false, nil
	}
	mp := env.Profile.Mail()
	out, err := exec.CommandContext(ctx, mp.Exim, "-C", mp.EximConfig, "-bpc").Output()
	if err != nil {
		return 0, false, fmt.Errorf("exim -bpc: %w", err)
	}
	n, err = strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, false, fmt.Errorf("exim -bpc: unexpected output %q", strings.TrimSpace(string(out)))
	}
	return n, true, nil
}
