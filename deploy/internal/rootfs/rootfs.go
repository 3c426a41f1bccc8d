// Package rootfs gives tests a throwaway Debian 12 root to install packages
// and apply Ansible roles in. mmdebstrap builds the root once per machine
// into a cached tarball (about 45 s); each test extracts its own copy.
package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// Base are the packages every root has: what Ansible needs on its target.
var Base = []string{"python3", "python3-apt", "ca-certificates", "gnupg"}

// Debian extracts a fresh minimal Debian 12 (bookworm) root with Base and
// extra installed into a temporary directory, mounts /proc in it, and
// removes it when the test ends. The mirror is the host's apt sources.
func Debian(t testing.TB, extra ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("a Debian root needs root (mmdebstrap, chroot)")
	}
	for _, bin := range []string{"/usr/bin/mmdebstrap", "/usr/bin/tar"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: run make deps", bin)
		}
	}
	tarball, err := cached(append(append([]string{}, Base...), extra...))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/bin/tar", "-C", root, "--numeric-owner", "-xpf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", tarball, err, out)
	}
	proc := filepath.Join(root, "proc")
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Fatalf("mount proc in the root: %v", err)
	}
	t.Cleanup(func() {
		// Lazy: a daemon a package started in the root may still hold it.
		_ = syscall.Unmount(proc, syscall.MNT_DETACH)
	})
	return root
}

// Chroot runs argv inside root and returns its combined output.
func Chroot(root string, argv ...string) ([]byte, error) {
	cmd := exec.Command("/usr/sbin/chroot", append([]string{root}, argv...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}
	return cmd.CombinedOutput()
}

// cached returns the tarball of a root with these packages, building it
// under a lock the first time so parallel test binaries share one build.
func cached(pkgs []string) (string, error) {
	sort.Strings(pkgs)
	sum := sha256.Sum256([]byte("bookworm minbase " + strings.Join(pkgs, ",")))
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(base, "npanel-rootfs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tarball := filepath.Join(dir, "bookworm-"+hex.EncodeToString(sum[:8])+".tar")
	lock, err := os.OpenFile(tarball+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	tmp := tarball + ".tmp.tar"
	defer os.Remove(tmp)
	cmd := exec.Command("/usr/bin/mmdebstrap", "--quiet", "--variant=minbase",
		"--include="+strings.Join(pkgs, ","), "bookworm", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mmdebstrap: %v\n%s", err, out)
	}
	return tarball, os.Rename(tmp, tarball)
}
