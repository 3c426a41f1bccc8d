package account

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// runner runs one command. It is an interface so that tests can count (and
// fake) what an action runs; production uses execRunner.
type runner interface {
	run(ctx context.Context, argv []string) error
}

// commandTimeout bounds one user-database command. They take milliseconds;
// the bound is for a tool stuck on a lock held by a hung process.
const commandTimeout = 30 * time.Second

// maxOutput bounds the tool output quoted in an error.
const maxOutput = 1024

// execRunner runs argv[0] (a fixed absolute path from the profile) with
// argv[1:] as its arguments: no shell, no $PATH lookup, stdin from
// /dev/null. The environment is replaced, not inherited: the agent's own
// environment is not the tools' business, and LC_ALL=C keeps their messages
// in the one language the errors are read in.
type execRunner struct{}

var commandEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

func (execRunner) run(ctx context.Context, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = commandEnv
	cmd.Stdin = nil
	// A tool that forks a helper which keeps the output pipe open must not
	// hold the action past the timeout.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return &CommandError{Argv: argv, Err: err, Output: trimOutput(out)}
}

func trimOutput(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > maxOutput {
		s = strings.ToValidUTF8(s[:maxOutput], "") + "…"
	}
	return s
}

// CommandError is a command that failed: what ran, how it ended and what it
// said. The account commands carry no secrets (the only password argument is
// the literal "*"), so the whole vector is safe to report.
type CommandError struct {
	Argv   []string
	Err    error
	Output string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%q: %v", e.Argv, e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }
