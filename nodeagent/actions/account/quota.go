package account

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/npanel/npanel/nodeagent/platform"
)

// mountinfoPath is read to find the filesystem holding the homes (the
// tests parse a fixture with parseMountinfo instead).
const mountinfoPath = "/proc/self/mountinfo"

// mount is one line of /proc/self/mountinfo, the parts quota handling needs.
type mount struct {
	MountPoint string
	FSType     string
	Source     string
	Options    []string // per-mount and superblock options together
}

// parseMountinfo parses proc(5) mountinfo:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Lines it cannot read are skipped.
func parseMountinfo(data []byte) []mount {
	var out []mount
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		f := strings.Fields(string(line))
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		opts := strings.Split(f[5], ",")
		opts = append(opts, strings.Split(f[sep+3], ",")...)
		out = append(out, mount{
			MountPoint: unescapeMountinfo(f[4]),
			FSType:     f[sep+1],
			Source:     unescapeMountinfo(f[sep+2]),
			Options:    opts,
		})
	}
	return out
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, and
// tab, newline and backslash likewise).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountFor returns the mount that holds path (absolute, symlinks resolved):
// the one with the longest mount point that is path or a parent of it. Later
// lines win a tie, as a later mount over the same point hides the earlier.
func mountFor(mounts []mount, path string) (mount, bool) {
	var best mount
	found := false
	for _, m := range mounts {
		if !within(m.MountPoint, path) {
			continue
		}
		if !found || len(m.MountPoint) >= len(best.MountPoint) {
			best, found = m, true
		}
	}
	return best, found
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// userQuotaEnforced reports whether the mount enforces user quotas. XFS's
// uqnoenforce only accounts, so it does not count.
func (m mount) userQuotaEnforced() bool {
	for _, o := range m.Options {
		switch {
		case o == "usrquota", o == "quota", o == "uquota", strings.HasPrefix(o, "usrjquota="):
			return true
		}
	}
	return false
}

// quotaPlan is what ensureQuota decided: where to set limits, or why not.
type quotaPlan struct {
	Mount mount
	Note  string // non-empty: quotas cannot be applied, and why
}

// planQuota decides whether quotas can be applied to homes under homeBase.
// It is pure so that every reason can be table-tested on a machine without
// quota support.
func planQuota(mounts []mount, homeBase string, setquotaPath string, setquotaInstalled bool) quotaPlan {
	var why []string
	m, ok := mountFor(mounts, homeBase)
	switch {
	case !ok:
		why = append(why, fmt.Sprintf("no mount found holding %s", homeBase))
	case !m.userQuotaEnforced():
		why = append(why, fmt.Sprintf("filesystem %s (%s, mounted at %s) holding %s has no user quotas enabled", m.Source, m.FSType, m.MountPoint, homeBase))
	}
	if !setquotaInstalled {
		why = append(why, fmt.Sprintf("%s is not installed", setquotaPath))
	}
	return quotaPlan{Mount: m, Note: strings.Join(why, "; ")}
}

// ensureQuota converges the user's block quota and reports whether a limit
// is in force. Missing support is not an error: the account works without a
// limit, and note says why there is none.
func ensureQuota(ctx context.Context, p *platform.Profile, run runner, u passwdEntry, quotaMB uint64) (applied bool, note string, err error) {
	real, err := filepath.EvalSymlinks(p.HomeBase)
	if err != nil {
		return false, "", fmt.Errorf("quota: %w", err)
	}
	var mounts []mount
	if data, err := os.ReadFile(mountinfoPath); err == nil {
		mounts = parseMountinfo(data)
	}
	plan := planQuota(mounts, real, p.Setquota, isExecutable(p.Setquota))
	if plan.Note != "" {
		if quotaMB == 0 {
			return false, "no quota requested", nil
		}
		return false, plan.Note, nil
	}
	blocks := quotaMB * 1024
	// Reading the limits first keeps an unchanged ensure free of commands.
	// If they cannot be read, setquota runs anyway: it is idempotent.
	if cur, err := getUserQuota(plan.Mount.Source, u.UID); err != nil ||
		cur.BHardLimit != blocks || cur.BSoftLimit != blocks || cur.IHardLimit != 0 || cur.ISoftLimit != 0 {
		if err := run.run(ctx, setquotaArgv(p, u.Name, quotaMB, plan.Mount.MountPoint)); err != nil {
			return false, "", fmt.Errorf("set quota: %w", err)
		}
	}
	if quotaMB == 0 {
		return false, "no quota requested", nil
	}
	return true, "", nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// ifDqblk is struct if_dqblk of <linux/quota.h>; block limits are in 1 KiB
// units.
type ifDqblk struct {
	BHardLimit uint64
	BSoftLimit uint64
	CurSpace   uint64
	IHardLimit uint64
	ISoftLimit uint64
	CurInodes  uint64
	BTime      uint64
	ITime      uint64
	Valid      uint32
	_          uint32
}

// qGetUserQuota is QCMD(Q_GETQUOTA, USRQUOTA): Q_GETQUOTA (0x800007)
// shifted by SUBCMDSHIFT (8), or'ed with USRQUOTA, which is 0.
const qGetUserQuota = 0x800007 << 8

// getUserQuota reads uid's limits on the filesystem on device special with
// quotactl(2); x/sys/unix has no wrapper for it.
func getUserQuota(special string, uid uint32) (ifDqblk, error) {
	var dq ifDqblk
	dev, err := unix.BytePtrFromString(special)
	if err != nil {
		return dq, err
	}
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL, uintptr(qGetUserQuota), uintptr(unsafe.Pointer(dev)), uintptr(uid), uintptr(unsafe.Pointer(&dq)), 0, 0)
	if errno != 0 {
		return dq, fmt.Errorf("quotactl Q_GETQUOTA %s uid %d: %w", special, uid, errno)
	}
	return dq, nil
}
