package main

import (
	"github.com/npanel/npanel/internal/cmdline"

	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// yesFlag adds --yes to a destructive command.
func yesFlag(cmd *cobra.Command) *bool {
	return cmd.Flags().BoolP("yes", "y", false, "do not ask for confirmation")
}

// confirm asks before a destructive change when standard input is a
// terminal and --yes was not given; scripts (no terminal) are not asked.
// A "no" is a usage error (exit 2) and changes nothing.
func confirm(cmd *cobra.Command, yes bool, what string) error {
	if yes {
		return nil
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s? [y/N] ", what)
	line, _ := bufio.NewReader(f).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return cmdline.Usagef("not confirmed: nothing was changed")
}

// isTerminal reports whether f is a terminal a person answers at.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
