package account

import (
	"strings"
	"testing"
)

const mountinfoFixture = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
40 22 254:16 / /home rw,relatime shared:20 - xfs /dev/vdb rw,attr2,inode64,usrquota
41 22 254:32 / /srv/with\040space rw,relatime - ext4 /dev/vdc rw,usrjquota=aquota.user,jqfmt=vfsv1
42 22 254:48 / /srv/acct rw - xfs /dev/vdd rw,uqnoenforce
43 40 254:64 / /home/big rw - ext4 /dev/vde rw,grpquota
bad line
`

func TestParseMountinfo(t *testing.T) {
	ms := parseMountinfo([]byte(mountinfoFixture))
	if len(ms) != 6 {
		t.Fatalf("parsed %d mounts: %+v", len(ms), ms)
	}
	if m := ms[3]; m.MountPoint != "/srv/with space" || m.FSType != "ext4" || m.Source != "/dev/vdc" || !m.userQuotaEnforced() {
		t.Fatalf("escaped mount = %+v", m)
	}
	if ms[0].userQuotaEnforced() || !ms[2].userQuotaEnforced() || ms[4].userQuotaEnforced() || ms[5].userQuotaEnforced() {
		t.Fatal("userQuotaEnforced wrong")
	}
}

func TestMountFor(t *testing.T) {
	ms := parseMountinfo([]byte(mountinfoFixture))
	tests := map[string]string{
		"/":                      "/",
		"/tmp/x/home":            "/",
		"/home":                  "/home",
		"/home/alice":            "/home",
		"/homeless":              "/",
		"/home/big/x":            "/home/big",
		"/home/bigger":           "/home",
		"/srv/with space/home":   "/srv/with space",
		"/srv/with spaceand/one": "/",
	}
	for path, want := range tests {
		m, ok := mountFor(ms, path)
		if !ok || m.MountPoint != want {
			t.Errorf("mountFor(%q) = %q, %v; want %q", path, m.MountPoint, ok, want)
		}
	}
	if _, ok := mountFor(nil, "/home"); ok {
		t.Error("mountFor without mounts found one")
	}
}

func TestPlanQuota(t *testing.T) {
	ms := parseMountinfo([]byte(mountinfoFixture))
	tests := []struct {
		name      string
		mounts    []mount
		homeBase  string
		installed bool
		wantMount string
		wantNote  []string // all must appear; none: quotas can be applied
	}{
		{"supported", ms, "/home", true, "/home", nil},
		{"journaled ext4", ms, "/srv/with space/home", true, "/srv/with space", nil},
		{"no quotas on fs", ms, "/tmp/t/home", true, "", []string{"/dev/vda (ext4, mounted at /) holding /tmp/t/home has no user quotas enabled"}},
		{"accounting only", ms, "/srv/acct", true, "", []string{"no user quotas enabled"}},
		{"group quotas only", ms, "/home/big/h", true, "", []string{"no user quotas enabled"}},
		{"setquota missing", ms, "/home", false, "", []string{"/usr/sbin/setquota is not installed"}},
		{"both", ms, "/tmp/t/home", false, "", []string{"no user quotas enabled", "; /usr/sbin/setquota is not installed"}},
		{"no mountinfo", nil, "/home", true, "", []string{"no mount found holding /home"}},
	}
	for _, tt := range tests {
		plan := planQuota(tt.mounts, tt.homeBase, "/usr/sbin/setquota", tt.installed)
		if len(tt.wantNote) == 0 {
			if plan.Note != "" || plan.Mount.MountPoint != tt.wantMount {
				t.Errorf("%s: plan = %+v, want quotas on %s", tt.name, plan, tt.wantMount)
			}
			continue
		}
		for _, w := range tt.wantNote {
			if !strings.Contains(plan.Note, w) {
				t.Errorf("%s: note %q lacks %q", tt.name, plan.Note, w)
			}
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:   "/a b",
		`/a\011b`:   "/a\tb",
		`/a\134b`:   `/a\b`,
		`/a\04`:     `/a\04`,
		`/a\999`:    `/a\999`,
		`/plain`:    "/plain",
		`\040\040x`: "  x",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// The quota command number is QCMD(Q_GETQUOTA, USRQUOTA) of <linux/quota.h>.
func TestQuotactlCommand(t *testing.T) {
	if qGetUserQuota != 0x80000700 {
		t.Fatalf("qGetUserQuota = %#x", qGetUserQuota)
	}
}
