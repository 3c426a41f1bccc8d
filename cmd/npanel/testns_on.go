//go:build npanel_testnames

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// ownEtcCommand runs the rest of the command line (normally "agent ...")
// with an /etc of its own, so that several agents on one test machine
// each have their own user database: an account user of one name can
// exist on two nodes with different homes, and one node's userdel cannot
// remove another's user. Only a test build has it (internal/testenv
// starts it).
//
//	npanel test-own-etc --etc DIR -- agent FLAGS...
//
// The process enters a new mount namespace, binds DIR (a copy of the
// host's /etc the caller made) over /etc and execs itself: the namespace
// outlives exec, and every daemon the agent starts inherits it. Every
// write to /etc (useradd's new passwd, its lock and backup files) lands in
// DIR, and the host's lock files never show: a whole directory, because
// binding single files over /etc/passwd would not do (shadow's tools
// replace the file by renaming passwd+ onto it, EBUSY on a mount point,
// and write their lock and backup files next to it, in the host's /etc),
// and not an overlay on the host's /etc, through which the host's
// transient passwd.lock shows and makes the agent's userdel fail.
const ownEtcCommand = "test-own-etc"

// It runs from init, before cobra: the namespace must be entered on a
// locked thread, and the command then replaces the process; the root
// command list of a production build stays untouched.
func init() {
	if len(os.Args) < 2 || os.Args[1] != ownEtcCommand {
		return
	}
	err := ownEtc(os.Args[2:])
	fmt.Fprintf(os.Stderr, "npanel %s: %v\n", ownEtcCommand, err)
	os.Exit(1)
}

// ownEtc returns only on failure.
func ownEtc(args []string) error {
	fs := flag.NewFlagSet(ownEtcCommand, flag.ContinueOnError)
	etc := fs.String("etc", "", "directory bound over /etc: a copy of the host's (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return errors.New("no command after --")
	}
	if !filepath.IsAbs(*etc) {
		return errors.New("--etc must be an absolute directory")
	}
	// A copy without passwd would leave the agent without www-data and
	// the other system users; say so rather than fail later.
	if _, err := os.Stat(filepath.Join(*etc, "passwd")); err != nil {
		return fmt.Errorf("--etc %q is not a copy of /etc: %w", *etc, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The mount namespace belongs to the thread that unshares it; exec
	// must happen on the same thread. Never unlocked: exec replaces it.
	runtime.LockOSThread()
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	// Without this, mounts would propagate back to the host's namespace
	// where / is shared.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := syscall.Mount(*etc, "/etc", "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s over /etc: %w", *etc, err)
	}
	argv := append([]string{os.Args[0]}, rest...)
	return fmt.Errorf("exec %s: %w", self, syscall.Exec(self, argv, os.Environ()))
}
