package main

import (
	"github.com/npanel/npanel/internal/cmdline"

	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/spf13/cobra"
)

// openPTY returns a pseudo-terminal pair: what the user types goes into
// the controller; the command reads the other end as its terminal.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	c, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, c.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, c.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	term, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { term.Close() })
	return c, term
}

func TestConfirm(t *testing.T) {
	cmd := &cobra.Command{}
	var errOut bytes.Buffer
	cmd.SetErr(&errOut)

	// No terminal: a script is not asked.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd.SetIn(r)
	if err := confirm(cmd, false, "delete account alice"); err != nil || errOut.Len() != 0 {
		t.Fatalf("without a terminal: %v, asked %q", err, errOut.String())
	}

	for _, tc := range []struct {
		answer string
		yes    bool
		ok     bool
	}{
		{"y\n", false, true},
		{"yes\n", false, true},
		{"n\n", false, false},
		{"\n", false, false},
		{"", true, true}, // --yes: not asked
	} {
		ctl, term := openPTY(t)
		cmd.SetIn(term)
		errOut.Reset()
		if tc.answer != "" {
			if _, err := ctl.WriteString(tc.answer); err != nil {
				t.Fatal(err)
			}
		}
		err := confirm(cmd, tc.yes, "delete account alice")
		var ue *cmdline.UsageError
		if tc.ok && err != nil || !tc.ok && !errors.As(err, &ue) {
			t.Errorf("answer %q yes=%v: %v", tc.answer, tc.yes, err)
		}
		if asked := bytes.Contains(errOut.Bytes(), []byte("delete account alice? [y/N]")); asked == tc.yes {
			t.Errorf("answer %q yes=%v: asked=%v", tc.answer, tc.yes, asked)
		}
	}
}
