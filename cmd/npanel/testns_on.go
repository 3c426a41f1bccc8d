//go:build npanel_testnames

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// ownEtcCommand runs the rest of the command line (normally "agent ...")
// with a private /etc, so that several agents on one test machine each
// have their own user database: an account user of one name can exist on
// two nodes with different homes, and one node's userdel cannot remove
// another's user. Only a test build has it (internal/testenv starts it).
//
//	npanel test-own-etc --upper DIR --work DIR -- agent FLAGS...
//
// The process enters a new mount namespace and mounts an overlay on /etc:
// the host's /etc below, DIR above. Every write to /etc (useradd's new
// passwd, its lock and backup files) lands in DIR, so the host's /etc
// never changes. Binding single files over /etc/passwd would not do:
// shadow's tools replace the file by renaming passwd+ onto it (EBUSY on a
// mount point) and write their lock and backup files next to it, in the
// host's /etc. Files the caller put in DIR (copies of passwd, shadow,
// group, gshadow) hide the host's from the start, so users the host gains
// later do not show through. Then it execs itself: the namespace outlives
// exec, and every daemon the agent starts inherits it.
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
	upper := fs.String("upper", "", "directory whose files replace the host's in /etc (required)")
	work := fs.String("work", "", "empty overlay work directory on the same filesystem as --upper (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return errors.New("no command after --")
	}
	for name, dir := range map[string]string{"--upper": *upper, "--work": *work} {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("%s must be an absolute directory", name)
		}
		// Commas and colons separate overlay options and lower layers.
		if strings.ContainsAny(dir, ",:\\") {
			return fmt.Errorf("%s %q: overlay options cannot carry ',', ':' or '\\'", name, dir)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("%s %q is not a directory", name, dir)
		}
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
	opts := "lowerdir=/etc,upperdir=" + *upper + ",workdir=" + *work
	if err := syscall.Mount("overlay", "/etc", "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on /etc: %w", err)
	}
	argv := append([]string{os.Args[0]}, rest...)
	return fmt.Errorf("exec %s: %w", self, syscall.Exec(self, argv, os.Environ()))
}
