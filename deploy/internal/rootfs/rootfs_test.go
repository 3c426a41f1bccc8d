package rootfs

import (
	"strings"
	"testing"
)

func TestDebian(t *testing.T) {
	root := Debian(t)
	out, err := Chroot(root, "/usr/bin/python3", "-c", "import apt, platform; print(open('/etc/debian_version').read().strip())")
	if err != nil {
		t.Fatalf("python3 in the root: %v\n%s", err, out)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(out)), "12.") {
		t.Fatalf("debian_version = %q, want 12.x", out)
	}
}
