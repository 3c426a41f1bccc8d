package agentmetrics

import (
	"context"
	"sync"
	"time"

	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/platform"
)

// walkEvery is the least time between two walk rounds where quotas are off.
const walkEvery = 10 * time.Minute

// DiskUsage reads the accounts' disk use. Where the homes' filesystem
// enforces user quotas it asks the quota (one quotactl per account: cheap
// enough for every refresh). Elsewhere it walks the homes, which costs one
// lstat per file: a round starts at most every walkEvery, walks the homes
// one after the other and stops at the refresh's deadline, and the next
// round resumes with the first account it did not reach. An account not
// walked yet has no series; a walked one keeps its figures until it is
// walked again. The alternative, no figures without quotas, would leave
// most test and small nodes without any account disk metric.
type DiskUsage struct {
	p *platform.Profile
	// walk is account.WalkUsage; tests count its calls.
	walk func(ctx context.Context, dir string) (bytes, inodes uint64, err error)
	now  func() time.Time

	mu       sync.Mutex
	walked   map[string]AccountDisk
	resume   string // first account of the next round, "" for the start
	lastWalk time.Time
}

// NewDiskUsage reads the accounts of profile p.
func NewDiskUsage(p *platform.Profile) *DiskUsage {
	return &DiskUsage{p: p, walk: account.WalkUsage, now: time.Now, walked: map[string]AccountDisk{}}
}

// Read is a Sources.AccountDisk.
func (d *DiskUsage) Read(ctx context.Context) ([]AccountDisk, error) {
	accts, err := account.ManagedAccounts(d.p)
	if err != nil {
		return nil, err
	}
	if q, ok := account.HomeQuotas(d.p); ok {
		out := make([]AccountDisk, 0, len(accts))
		for _, a := range accts {
			u, err := q.Usage(a.UID)
			if err != nil {
				continue // deleted meanwhile, or quotas just turned off
			}
			out = append(out, AccountDisk{Account: a.Name, UsedBytes: u.UsedBytes, QuotaBytes: u.QuotaBytes, Inodes: u.Inodes})
		}
		return out, nil
	}
	return d.walkRound(ctx, accts), nil
}

func (d *DiskUsage) walkRound(ctx context.Context, accts []account.Managed) []AccountDisk {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastWalk.IsZero() || d.now().Sub(d.lastWalk) >= walkEvery {
		d.lastWalk = d.now()
		// accts is in passwd order, which is stable: start at the account
		// the last round stopped before, then wrap around.
		start := 0
		for i, a := range accts {
			if a.Name == d.resume {
				start = i
				break
			}
		}
		d.resume = ""
		for i := range accts {
			a := accts[(start+i)%len(accts)]
			if ctx.Err() != nil {
				d.resume = a.Name
				break
			}
			b, n, err := d.walk(ctx, a.Home)
			if err != nil {
				if ctx.Err() != nil {
					d.resume = a.Name
					break
				}
				continue
			}
			d.walked[a.Name] = AccountDisk{Account: a.Name, UsedBytes: b, Inodes: n}
		}
	}
	out := make([]AccountDisk, 0, len(accts))
	live := make(map[string]bool, len(accts))
	for _, a := range accts {
		live[a.Name] = true
		if u, ok := d.walked[a.Name]; ok {
			out = append(out, u)
		}
	}
	for name := range d.walked {
		if !live[name] {
			delete(d.walked, name) // the account was deleted
		}
	}
	return out
}
