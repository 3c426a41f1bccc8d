package graph

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
)

// Subscription limits, per replica. A subscription costs a goroutine and a
// small buffer here, no etcd watch (see AccountFeed), but without a cap one
// user could still hold thousands.
const (
	// MaxSubscriptionsPerConnection bounds one websocket's live
	// subscriptions.
	MaxSubscriptionsPerConnection = 50
	// MaxSubscriptionsPerUser bounds one user's live subscriptions over
	// all their connections.
	MaxSubscriptionsPerUser = 200
	// SubscriberBuffer is how many changes may wait for one subscriber;
	// one that falls further behind is dropped (SUBSCRIPTION_DROPPED).
	SubscriberBuffer = 64
	// SessionRecheck is how often a subscription whose account is quiet
	// checks that its session still stands; each change checks too.
	SessionRecheck = 30 * time.Second
)

// CodeSubscriptionDropped ends a subscription whose client did not read
// its events fast enough; it may subscribe again.
const CodeSubscriptionDropped = "SUBSCRIPTION_DROPPED"

var (
	// ErrTooManySubscriptions refuses a subscription over a cap.
	ErrTooManySubscriptions = errors.New("too many subscriptions")
	// ErrSlowSubscriber ends a feed whose buffer overflowed.
	ErrSlowSubscriber = errors.New("subscriber too slow")
)

// AccountFeed is one subscriber's share of the replica's single watch on
// accounts: the account's record after each change. The watch never waits
// for a subscriber; one whose buffer is full is dropped instead.
type AccountFeed interface {
	// Updates yields the account's record after each change (possibly
	// one it has seen already), nil once it is deleted. It is closed when
	// the feed ends.
	Updates() <-chan *store.Account
	// Err says why Updates was closed: ErrSlowSubscriber, or nil.
	Err() error
	// Close ends the feed and frees its place under the caps.
	Close()
}

// followAccount streams an account's transitions: those recorded so far,
// then each new one, none twice, and a final DELETED when the record goes
// away. It subscribes to the replica's feed before reading the record, so
// that no change falls in between (sequence numbers drop duplicates). A
// session revoked meanwhile (logout, revokeSessions, a new password) ends
// it with UNAUTHENTICATED before the next change is sent, or within
// SessionRecheck.
func (r *Resolver) followAccount(ctx context.Context, p auth.Principal, id string) (<-chan *model.AccountEvent, error) {
	feed, err := r.Cluster.FollowAccount(id, p.Name, connID(ctx))
	if errors.Is(err, ErrTooManySubscriptions) {
		return nil, errorf(codeQuotaExceeded, "too many live subscriptions: at most "+strconv.Itoa(MaxSubscriptionsPerConnection)+
			" per connection and "+strconv.Itoa(MaxSubscriptionsPerUser)+" per user; close some first")
	}
	if err != nil {
		return nil, err
	}
	a, _, err := r.Store.GetAccount(ctx, id)
	if err != nil {
		feed.Close()
		return nil, err
	}
	if !canSee(p, a) {
		feed.Close()
		r.refusedRead(ctx, "account", id, CodeNotFound)
		return nil, errorf(CodeNotFound, "account "+quote(id)+" not found")
	}
	ch := make(chan *model.AccountEvent, 16)
	go func() {
		defer close(ch)
		defer feed.Close()
		var lastSeq int64
		send := func(e *model.AccountEvent) bool {
			select {
			case ch <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, e := range a.Events {
			lastSeq = e.Seq
			if !send(eventModel(e)) {
				return
			}
		}
		recheck := time.NewTicker(SessionRecheck)
		defer recheck.Stop()
		for {
			var cur *store.Account
			var ok bool
			select {
			case cur, ok = <-feed.Updates():
			case <-recheck.C:
				if !r.Auth.SessionValid(ctx, p) {
					sessionEnded(ctx)
					return
				}
				continue
			case <-ctx.Done():
				return
			}
			// The session mirror is local: checking it per change is cheap.
			if ok && !r.Auth.SessionValid(ctx, p) {
				sessionEnded(ctx)
				return
			}
			switch {
			case !ok:
				if feed.Err() != nil {
					transport.AddSubscriptionError(ctx, &gqlerror.Error{
						Message:    "subscription dropped: the client fell more than " + strconv.Itoa(SubscriberBuffer) + " changes behind; subscribe again",
						Extensions: map[string]any{"code": CodeSubscriptionDropped},
					})
				}
				return
			case cur == nil:
				send(&model.AccountEvent{At: time.Now().UTC(), Status: model.AccountStatusDeleted})
				return
			}
			for _, e := range cur.Events {
				if e.Seq <= lastSeq {
					continue
				}
				lastSeq = e.Seq
				if !send(eventModel(e)) {
					return
				}
			}
		}
	}()
	return ch, nil
}

// sessionEnded ends a subscription whose session was revoked.
func sessionEnded(ctx context.Context) {
	transport.AddSubscriptionError(ctx, &gqlerror.Error{
		Message:    "the session was revoked (logout, revokeSessions or a new password); sign in again",
		Extensions: map[string]any{"code": CodeUnauthenticated},
	})
}

// followRecord runs the loop of a subscription to one record: each write
// the watch reports goes to onEvent (false ends the stream), the caller's
// session is checked at each batch and every period, and stillVisible
// (which reports its own refusal) decides every period whether the caller
// may still see the record. noun names the record when the watch is lost.
func (r *Resolver) followRecord(ctx context.Context, p auth.Principal, noun string, watch <-chan store.WatchBatch, every time.Duration, stillVisible func() bool, onEvent func(store.Event) bool) {
	recheck := time.NewTicker(every)
	defer recheck.Stop()
	for {
		select {
		case batch, ok := <-watch:
			if !ok || batch.Err != nil {
				if ctx.Err() == nil {
					transport.AddSubscriptionError(ctx, &gqlerror.Error{
						Message:    "subscription dropped: the server lost its watch of the " + noun + "; subscribe again",
						Extensions: map[string]any{"code": CodeSubscriptionDropped},
					})
				}
				return
			}
			if !r.Auth.SessionValid(ctx, p) {
				sessionEnded(ctx)
				return
			}
			for _, ev := range batch.Events {
				if !onEvent(ev) {
					return
				}
			}
		case <-recheck.C:
			if !r.Auth.SessionValid(ctx, p) {
				sessionEnded(ctx)
				return
			}
			if !stillVisible() {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
