package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/npanel/npanel/client"
)

// poller follows one record of the API (an import, a backup, a
// certificate…) by fetching it again every interval until it has finished.
type poller[T any] struct {
	kind, id string // in errors: "backup 01…"
	every    time.Duration
	get      func(context.Context) (*T, error)
	done     func(*T) bool
	status   func(*T) string
	// show is called with the record as it was given and with each record
	// fetched; nil shows nothing.
	show func(*T)
}

// wait returns the record once done says it has finished, or the last one
// seen with an error when timeout passes or the record is gone.
func (p poller[T]) wait(ctx context.Context, cur *T, timeout time.Duration) (*T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		if p.show != nil {
			p.show(cur)
		}
		if p.done(cur) {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("%s %s still %s after %s", p.kind, p.id, p.status(cur), timeout)
		case <-tick.C:
		}
		next, err := p.get(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return cur, apiError(err)
		}
		if next == nil {
			return cur, fmt.Errorf("%s %s is gone", p.kind, p.id)
		}
		cur = next
	}
}

// statusChanges returns a show that prints the status each time it
// changes (nothing with -o json).
func (o *ctlOptions) statusChanges(w io.Writer) func(status string) {
	last := ""
	return func(s string) {
		if s != last && o.output != "json" {
			fmt.Fprintf(w, "%s  %s\n", time.Now().Format(time.TimeOnly), s)
			last = s
		}
	}
}

// newEvents returns a show that prints the events not printed before
// (nothing with -o json); events already in the first record count as
// printed.
func (o *ctlOptions) newEvents(w io.Writer, first []client.Event) func([]client.Event) {
	seen := len(first)
	return func(evs []client.Event) {
		if seen > len(evs) {
			seen = 0 // the bounded list moved on
		}
		if o.output != "json" {
			for _, e := range evs[seen:] {
				fmt.Fprintf(w, "%s  %s  %s\n", e.At.Local().Format(time.TimeOnly), e.Kind, deref(e.Message))
			}
		}
		seen = len(evs)
	}
}
