package account

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/npanel/npanel/nodeagent/platform"
)

// Managed is an account nPanel manages on this node.
type Managed struct {
	Name string
	UID  uint32
	Home string
}

// ManagedAccounts lists the node's accounts: the users checkManaged
// accepts (nPanel's marker, a normal UID, the home where the profile puts
// it). It reads the user database without any lock: a listing for
// metrics may be a moment old.
func ManagedAccounts(p *platform.Profile) ([]Managed, error) {
	pw, err := os.ReadFile(p.Passwd)
	if err != nil {
		return nil, fmt.Errorf("read user database: %w", err)
	}
	var out []Managed
	for _, u := range parsePasswd(pw) {
		if checkManaged(p, u) == nil {
			out = append(out, Managed{Name: u.Name, UID: u.UID, Home: u.Home})
		}
	}
	return out, nil
}

// QuotaUsage is one account's figures from the filesystem's quota.
type QuotaUsage struct {
	UsedBytes, QuotaBytes, Inodes uint64 // QuotaBytes 0: no limit
}

// QuotaReader reads user quotas on the filesystem holding the homes.
type QuotaReader struct{ source string }

// HomeQuotas returns a reader of the quotas of the filesystem holding
// p.HomeBase, or ok false when that filesystem enforces no user quotas
// (then only a walk of the homes can tell their use).
func HomeQuotas(p *platform.Profile) (r QuotaReader, ok bool) {
	real, err := filepath.EvalSymlinks(p.HomeBase)
	if err != nil {
		return QuotaReader{}, false
	}
	data, err := os.ReadFile(mountinfoPath)
	if err != nil {
		return QuotaReader{}, false
	}
	m, found := mountFor(parseMountinfo(data), real)
	if !found || !m.userQuotaEnforced() {
		return QuotaReader{}, false
	}
	return QuotaReader{source: m.Source}, true
}

// Usage reads uid's use and hard block limit: one quotactl(2), no walk.
func (r QuotaReader) Usage(uid uint32) (QuotaUsage, error) {
	dq, err := getUserQuota(r.source, uid)
	if err != nil {
		return QuotaUsage{}, err
	}
	return QuotaUsage{UsedBytes: dq.CurSpace, QuotaBytes: dq.BHardLimit * 1024, Inodes: dq.CurInodes}, nil
}

// WalkUsage adds up what dir holds, as du -sx would: allocated blocks (what
// a quota counts, not apparent sizes) and inodes, without following
// symlinks or leaving dir's filesystem, each hard-linked file once. It is
// the fallback where quotas are off, and it costs one lstat per entry:
// callers must rate-limit it. Entries that vanish or cannot be read during
// the walk are skipped; ctx ending stops it with ctx's error.
func WalkUsage(ctx context.Context, dir string) (bytes, inodes uint64, err error) {
	top, err := os.Lstat(dir)
	if err != nil {
		return 0, 0, err
	}
	st, ok := top.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, errors.New("walk usage: no stat data")
	}
	dev := st.Dev
	seen := map[uint64]bool{} // inodes of files with several links
	n := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // vanished or unreadable: skipped, like du's warnings
		}
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		s, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if s.Dev != dev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && s.Nlink > 1 {
			if seen[s.Ino] {
				return nil
			}
			seen[s.Ino] = true
		}
		bytes += uint64(s.Blocks) * 512
		inodes++
		return nil
	})
	return bytes, inodes, err
}
