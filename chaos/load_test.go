package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// api sends requests to whichever replica is up, as a client behind a load
// balancer with health checks would.
type api struct {
	c     *cluster
	token string
	next  atomic.Int64

	mu      sync.Mutex
	clients map[*replica]*client.Client
}

func (a *api) clientFor(r *replica) *client.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients == nil {
		a.clients = map[*replica]*client.Client{}
	}
	cl := a.clients[r]
	if cl == nil {
		cl = client.New(r.url(), a.token)
		a.clients[r] = cl
	}
	return cl
}

// pick returns the next replica in turn, up or not: the client knows the
// three addresses, not which is down, and moves on when one fails.
func (a *api) pick() *replica {
	return a.c.replicas[int(a.next.Add(1))%len(a.c.replicas)]
}

// retryable is an error after which the request's outcome is unknown and
// another replica should be asked: no answer, or the replica could not
// reach etcd.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	switch client.CodeOf(err) {
	case "UNAVAILABLE", "INTERNAL":
		return true
	case "":
		return true // no GraphQL answer: transport error or a 5xx page
	}
	return false
}

// notSent tells a request that never reached a replica (the dial failed)
// from one whose fate is unknown.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// attempt runs f once against one replica with a short deadline.
func (a *api) attempt(ctx context.Context, f func(context.Context, *client.Client) error) error {
	cctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	return f(cctx, a.clientFor(a.pick()))
}

// do runs an idempotent request (a read, or a write whose repeat is
// harmless) until it is answered, for up to two minutes.
func (a *api) do(ctx context.Context, what string, f func(context.Context, *client.Client) error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := a.attempt(ctx, f)
		if !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// outcome of one write of the stream.
type outcome int

const (
	// ok: a replica answered success (possibly on a retry that found the
	// earlier attempt had landed): the object must exist exactly once.
	ok outcome = iota
	// refused: a definitive error answer: the object must not exist
	// (unless an earlier unanswered attempt created it: then unknown).
	refused
	// unknown: no answer for two minutes: at most once.
	unknown
)

type acctReq struct {
	username, domain, id string
	dbNode               bool
	out                  outcome
	at                   time.Time
}

type recordReq struct {
	zone, name, content string
	out                 outcome
}

type dbReq struct {
	account, username, name string // name is the full <username>_<short>
	out                     outcome
}

// ledger is what the stream asked for and what it was told.
type ledger struct {
	mu       sync.Mutex
	accounts []*acctReq
	records  []*recordReq
	dbs      []*dbReq
	// writes: every write's end time and whether it succeeded, for the
	// availability figures.
	writes []write
	// retried counts requests that needed another replica.
	retried int
	errs    []string
}

type write struct {
	start, end time.Time
	ok         bool
}

func (l *ledger) note(start time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, write{start, time.Now(), ok})
}

func (l *ledger) errorf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 50 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

// slowestWrite is the longest a write took (start to final answer, over
// its retries) among those started in [from, to].
func (l *ledger) slowestWrite(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, w := range l.writes {
		if !w.start.Before(from) && !w.start.After(to) {
			d = max(d, w.end.Sub(w.start))
		}
	}
	return d
}

// firstWriteAfter is when the first write started at or after t succeeded.
func (l *ledger) firstWriteAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best time.Time
	for _, w := range l.writes {
		if w.ok && !w.start.Before(t) && (best.IsZero() || w.end.Before(best)) {
			best = w.end
		}
	}
	return best, !best.IsZero()
}

// stream is the steady load: account creations, DNS record additions and
// database creations, each through a replica that is up, retried on
// another when unanswered, with the retry first checking whether the
// unanswered attempt landed (the API's creates are not idempotent keys).
type stream struct {
	api    *api
	l      *ledger
	dbNode string
	seq    atomic.Int64
	wg     sync.WaitGroup
	stop   chan struct{}
}

func (s *stream) start(ctx context.Context, pause time.Duration) {
	s.stop = make(chan struct{})
	loop := func(every time.Duration, f func(context.Context)) {
		s.wg.Go(func() {
			for {
				select {
				case <-s.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(every):
				}
				f(ctx)
			}
		})
	}
	// Paced for 2 busy cores: an account is a Linux user, a PHP-FPM
	// pool and an nginx vhost (a reload of both) on its node, plus its
	// zone on both DNS nodes.
	loop(2*pause, s.createAccount)
	loop(pause, s.addRecord)
	loop(3*pause, s.createDatabase)
}

func (s *stream) halt() {
	close(s.stop)
	s.wg.Wait()
}

// write runs one non-idempotent write: on an unanswered attempt it asks
// landed (on any replica) before trying again. It returns the outcome.
func (s *stream) write(ctx context.Context, what string, f func(context.Context, *client.Client) error, landed func(context.Context, *client.Client) (bool, error)) outcome {
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	uncertain := false
	for {
		err := s.api.attempt(ctx, f)
		switch {
		case err == nil:
			s.l.note(start, true)
			return ok
		case !retryable(err) && uncertain && client.CodeOf(err) == "CONFLICT":
			// The unanswered attempt may have created it: look.
		case !retryable(err):
			s.l.note(start, false)
			if !uncertain {
				return refused
			}
			s.l.errorf("%s: refused after an unanswered attempt: %v", what, err)
			return unknown
		}
		s.l.mu.Lock()
		s.l.retried++
		s.l.mu.Unlock()
		if notSent(err) && !uncertain {
			// Refused connection: the request never left; just retry.
			if time.Now().After(deadline) || ctx.Err() != nil {
				s.l.note(start, false)
				s.l.errorf("%s: no replica took it for 2 minutes: %v", what, err)
				return refused
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		uncertain = true
		for {
			if time.Now().After(deadline) || ctx.Err() != nil {
				s.l.note(start, false)
				s.l.errorf("%s: unanswered for 2 minutes: %v", what, err)
				return unknown
			}
			var there bool
			lerr := s.api.attempt(ctx, func(ctx context.Context, cl *client.Client) error {
				var err error
				there, err = landed(ctx, cl)
				return err
			})
			if lerr == nil {
				if there {
					s.l.note(start, true)
					return ok
				}
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *stream) createAccount(ctx context.Context) {
	n := s.seq.Add(1)
	u := testenv.TestUsername()
	r := &acctReq{username: u, domain: u + ".example.com", at: time.Now()}
	in := client.CreateAccountInput{Username: u, Domain: r.domain, Plan: "chaos"}
	// Every third account lives on the database node, for the stream's
	// database creations.
	if n%3 == 0 {
		in.Node, r.dbNode = s.dbNode, true
	}
	r.out = s.write(ctx, "createAccount "+u, func(ctx context.Context, cl *client.Client) error {
		a, err := cl.CreateAccount(ctx, in)
		if err == nil {
			r.id = a.ID
		}
		return err
	}, func(ctx context.Context, cl *client.Client) (bool, error) {
		a, err := cl.Account(ctx, u)
		if a != nil {
			r.id = a.ID
		}
		return a != nil, err
	})
	s.l.mu.Lock()
	s.l.accounts = append(s.l.accounts, r)
	s.l.mu.Unlock()
}

// target picks an account the stream created at least a few seconds ago.
func (s *stream) target(dbNode bool) *acctReq {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	var cands []*acctReq
	for _, a := range s.l.accounts {
		if a.out == ok && a.id != "" && time.Since(a.at) > 3*time.Second && (!dbNode || a.dbNode) {
			cands = append(cands, a)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[rand.IntN(len(cands))]
}

func (s *stream) addRecord(ctx context.Context) {
	a := s.target(false)
	if a == nil {
		return
	}
	n := s.seq.Add(1)
	r := &recordReq{zone: a.domain, name: fmt.Sprintf("c%d.%s.", n, a.domain), content: fmt.Sprintf(`"chaos-%d"`, n)}
	in := client.RecordInput{Name: r.name, Type: "TXT", Content: r.content}
	r.out = s.write(ctx, "addRecord "+r.name, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.AddRecord(ctx, r.zone, in)
		return err
	}, func(ctx context.Context, cl *client.Client) (bool, error) {
		z, err := cl.Zone(ctx, r.zone)
		return z != nil && countRecords(z, r.content) > 0, err
	})
	s.l.mu.Lock()
	s.l.records = append(s.l.records, r)
	s.l.mu.Unlock()
}

func countRecords(z *client.Zone, content string) int {
	n := 0
	for _, rec := range z.Records {
		if rec.Type == "TXT" && rec.Content == content {
			n++
		}
	}
	return n
}

func (s *stream) createDatabase(ctx context.Context) {
	a := s.target(true)
	if a == nil {
		return
	}
	short := fmt.Sprintf("d%d", s.seq.Add(1))
	d := &dbReq{account: a.id, username: a.username, name: a.username + "_" + short}
	d.out = s.write(ctx, "createDatabase "+d.name, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreateDatabase(ctx, a.id, short, "")
		return err
	}, func(ctx context.Context, cl *client.Client) (bool, error) {
		dbs, err := cl.Databases(ctx, a.id)
		return slices.ContainsFunc(dbs, func(x client.Database) bool { return x.Name == d.name }), err
	})
	s.l.mu.Lock()
	s.l.dbs = append(s.l.dbs, d)
	s.l.mu.Unlock()
}

// prober reads through one replica after another every 100 ms and records
// when each read was answered, for the API's unavailability per fault.
type prober struct {
	mu   sync.Mutex
	oks  []time.Time
	stop chan struct{}
	done chan struct{}
}

func startProber(ctx context.Context, a *api) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			// The account list is read from etcd's mirror on the
			// replica, with the caller's session checked in etcd.
			err := a.attempt(ctx, func(ctx context.Context, cl *client.Client) error {
				_, _, err := cl.Accounts(ctx, client.AccountFilter{}, 1, "")
				return err
			})
			if err == nil {
				p.mu.Lock()
				p.oks = append(p.oks, time.Now())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *prober) halt() {
	close(p.stop)
	<-p.done
}

// firstOKAfter is the first answered read after t.
func (p *prober) firstOKAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ok := range p.oks {
		if ok.After(t) {
			return ok, true
		}
	}
	return time.Time{}, false
}

// longestGap is the longest time between answered reads in [from, to].
func (p *prober) longestGap(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, gap := from, time.Duration(0)
	for _, ok := range p.oks {
		if ok.Before(from) || ok.After(to) {
			continue
		}
		gap = max(gap, ok.Sub(prev))
		prev = ok
	}
	return max(gap, to.Sub(prev))
}

func summarize(ds []time.Duration) (p50, maxd time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
}
