package store

import (
	"fmt"
	"testing"
)

// TestFollowSubSince: a follower that joined with a list at revision 10
// gets from a batch only the events after it, and nothing of a batch
// (events or progress) at or below it.
func TestFollowSubSince(t *testing.T) {
	sub := &followSub{after: 10}
	evs := func(revs ...int64) []Event {
		var out []Event
		for _, r := range revs {
			out = append(out, Event{Name: fmt.Sprint(r), Rev: r})
		}
		return out
	}
	for _, c := range []struct {
		b    WatchBatch
		ok   bool
		want string
	}{
		{WatchBatch{Events: evs(8, 9, 10), Rev: 10}, false, ""},
		{WatchBatch{Rev: 10}, false, ""},
		{WatchBatch{Rev: 11}, true, "[]"},
		{WatchBatch{Events: evs(9, 10, 11, 12), Rev: 12}, true, "[11 12]"},
		{WatchBatch{Events: evs(11, 12), Rev: 12}, true, "[11 12]"},
	} {
		got, ok := sub.since(c.b)
		var names []string
		for _, ev := range got.Events {
			names = append(names, ev.Name)
		}
		if ok != c.ok || ok && (fmt.Sprint(names) != c.want || got.Rev != c.b.Rev) {
			t.Errorf("since(%+v) = %v %v, want %v %s", c.b, names, ok, c.ok, c.want)
		}
	}
}
