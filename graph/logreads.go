package graph

import (
	"sync"

	"golang.org/x/time/rate"
)

// A log read is a task through etcd with a result of up to the agent's
// read cap, so a tenant looping on domainLogs would write etcd as fast as
// it asks. logReads allows one read per account at a time and a few per
// user per second.
const (
	logReadsPerSecond = 1
	logReadBurst      = 5
	// logReadUsers bounds the limiter map; past it the map starts over,
	// which at worst grants a burst early.
	logReadUsers = 10000
)

type logReadGate struct {
	// what names the requests in refusals ("" : log reads).
	what     string
	mu       sync.Mutex
	inFlight map[string]bool
	users    map[string]*rate.Limiter
}

// start admits a read of account's logs by user, or says why not; done
// must be called when an admitted read ends.
func (g *logReadGate) start(user, account string) (done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight == nil || len(g.users) > logReadUsers {
		g.inFlight, g.users = map[string]bool{}, map[string]*rate.Limiter{}
	}
	if g.inFlight[account] {
		return nil, errorf(CodeRateLimited, "a "+g.name()+" of this account is already running; try again when it ends")
	}
	l := g.users[user]
	if l == nil {
		l = rate.NewLimiter(logReadsPerSecond, logReadBurst)
		g.users[user] = l
	}
	if !l.Allow() {
		return nil, errorf(CodeRateLimited, "too many "+g.name()+"s; at most one a second")
	}
	g.inFlight[account] = true
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.inFlight, account)
	}, nil
}

func (g *logReadGate) name() string {
	if g.what == "" {
		return "log read"
	}
	return g.what
}
