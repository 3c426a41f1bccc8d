package account

import (
	"reflect"
	"testing"

	"github.com/npanel/npanel/nodeagent/platform"
)

// The exact vectors are part of the agent's contract with the host: a change
// here changes what runs as root on every node.
func TestArgv(t *testing.T) {
	alma, deb := platform.Alma9("/srv/p"), platform.Debian12("")
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"alma9 useradd", useraddArgv(alma, "alice"),
			[]string{"/usr/sbin/useradd", "-M", "-d", "/srv/p/home/alice", "-s", "/sbin/nologin", "-U", "-c", "npanel account", "-p", "*", "alice"}},
		{"debian12 useradd", useraddArgv(deb, "alice"),
			[]string{"/usr/sbin/useradd", "-M", "-d", "/home/alice", "-s", "/usr/sbin/nologin", "-U", "-c", "npanel account", "-p", "*", "alice"}},
		{"alma9 lock", lockArgv(alma, "alice"), []string{"/usr/sbin/usermod", "-L", "-e", "1", "alice"}},
		{"debian12 lock", lockArgv(deb, "alice"), []string{"/usr/sbin/usermod", "-L", "-e", "1", "alice"}},
		{"alma9 unlock", unlockArgv(alma, "alice"), []string{"/usr/sbin/usermod", "-U", "-e", "", "alice"}},
		{"debian12 unlock", unlockArgv(deb, "alice"), []string{"/usr/sbin/usermod", "-U", "-e", "", "alice"}},
		{"alma9 userdel", userdelArgv(alma, "alice"), []string{"/usr/sbin/userdel", "alice"}},
		{"debian12 userdel", userdelArgv(deb, "alice"), []string{"/usr/sbin/userdel", "alice"}},
		{"alma9 setquota", setquotaArgv(alma, "alice", 1024, "/srv"),
			[]string{"/usr/sbin/setquota", "-u", "alice", "1048576", "1048576", "0", "0", "/srv"}},
		{"debian12 setquota 16 TiB", setquotaArgv(deb, "alice", MaxDiskQuotaMB, "/"),
			[]string{"/usr/sbin/setquota", "-u", "alice", "17179869184", "17179869184", "0", "0", "/"}},
		{"debian12 setquota off", setquotaArgv(deb, "alice", 0, "/home"),
			[]string{"/usr/sbin/setquota", "-u", "alice", "0", "0", "0", "0", "/home"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, tt.got, tt.want)
		}
	}
}
