package account

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestExecRunner(t *testing.T) {
	ctx := context.Background()
	if err := (execRunner{}).run(ctx, []string{"/bin/true"}); err != nil {
		t.Fatalf("true: %v", err)
	}
	// The output of a failing tool is in the error, trimmed; arguments are
	// passed as they are, with no shell to expand them.
	err := (execRunner{}).run(ctx, []string{"/bin/ls", "/nonexistent-$HOME-*"})
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "/nonexistent-$HOME-*") || strings.HasSuffix(err.Error(), "\n") {
		t.Fatalf("ls error = %v", err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit status lost: %v", err)
	}
	if !strings.Contains(ce.Output, "No such file") {
		t.Fatalf("output %q", ce.Output)
	}
}

// The tools get a fixed environment, not the agent's.
func TestExecRunnerEnvironment(t *testing.T) {
	t.Setenv("NPANEL_SECRET_FOR_TEST", "s3cret")
	// printenv exits 1 for a variable that is not set.
	if err := (execRunner{}).run(context.Background(), []string{"/usr/bin/printenv", "NPANEL_SECRET_FOR_TEST"}); err == nil {
		t.Fatal("the agent's environment reached the command")
	}
	if err := (execRunner{}).run(context.Background(), []string{"/usr/bin/printenv", "LC_ALL"}); err != nil {
		t.Fatalf("LC_ALL not set: %v", err)
	}
}

func TestExecRunnerContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := (execRunner{}).run(ctx, []string{"/bin/sleep", "10"})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("context ignored")
	}
}

func TestTrimOutput(t *testing.T) {
	if got := trimOutput([]byte("  msg\n\n")); got != "msg" {
		t.Fatalf("trim = %q", got)
	}
	if got := trimOutput([]byte(strings.Repeat("x", 5000))); len(got) > maxOutput+len("…") {
		t.Fatalf("long output kept %d bytes", len(got))
	}
}
