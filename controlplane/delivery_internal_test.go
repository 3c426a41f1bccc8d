package controlplane

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
)

// A subscriber that does not read is dropped with ErrSlowSubscriber once
// its buffer is full; the publisher never waits, the others keep theirs,
// and the caps count only live subscriptions.
func TestAccountHubDropsSlowSubscriber(t *testing.T) {
	h := newAccountHub()
	h.maxPerConn, h.maxPerUser, h.buffer = 2, 3, 4
	slow, err := h.subscribe("a1", "u", "c1")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.subscribe("a1", "u", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.subscribe("a1", "u", "c1"); !errors.Is(err, graph.ErrTooManySubscriptions) {
		t.Fatalf("third on one connection: %v", err)
	}
	other, err := h.subscribe("a2", "u", "c2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.subscribe("a2", "u", "c3"); !errors.Is(err, graph.ErrTooManySubscriptions) {
		t.Fatalf("fourth of one user: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10 {
			h.publish("a1", &store.Account{ID: "a1", Generation: int64(i)})
			<-fast.Updates() // fast keeps up
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publish blocked on a subscriber that does not read")
	}
	n := 0
	for range slow.Updates() {
		n++
	}
	if n != h.buffer || !errors.Is(slow.Err(), graph.ErrSlowSubscriber) {
		t.Fatalf("slow subscriber: %d updates buffered, err %v", n, slow.Err())
	}
	if fast.Err() != nil || other.Err() != nil {
		t.Fatalf("others dropped: %v %v", fast.Err(), other.Err())
	}
	if h.count() != 2 {
		t.Fatalf("%d live subscriptions, want 2", h.count())
	}
	// The dropped one's place is free again; closing twice is harmless.
	slow.Close()
	if _, err := h.subscribe("a1", "u", "c1"); err != nil {
		t.Fatalf("after a drop: %v", err)
	}
	fast.Close()
	fast.Close()
	h.publish("a2", nil) // deletion
	if a, ok := <-other.Updates(); !ok || a != nil {
		t.Fatalf("deletion: %v %v", a, ok)
	}
}

func TestSentTasksOldestUnsent(t *testing.T) {
	var st sentTasks
	st.add("A")
	st.add("C")
	if id, ok := st.oldestUnsent([]string{"A", "B", "C", "D"}, time.Now()); !ok || id != "B" {
		t.Fatalf("oldest unsent: %q %v", id, ok)
	}
	if _, ok := st.oldestUnsent([]string{"A", "C"}, time.Now()); ok {
		t.Fatal("all sent, yet one unsent")
	}
	// Dequeued ids are forgotten, unless sent after the check began.
	begin := time.Now()
	time.Sleep(time.Millisecond)
	st.add("E")
	st.oldestUnsent(nil, begin)
	if len(st.ids) != 1 || st.ids["E"].IsZero() {
		t.Fatalf("kept %v", st.ids)
	}
}

func TestSuspectReason(t *testing.T) {
	stall := &store.DeliveryStall{Since: time.Unix(0, 0).UTC(), Replica: "r1", OldestTask: "T1"}
	for _, tc := range []struct {
		in         store.NodeStatus
		gossipDead bool
		stall      *store.DeliveryStall
		want       store.NodeStatus
		reason     string
	}{
		{store.NodeReady, false, nil, store.NodeReady, ""},
		{store.NodeReady, false, stall, store.NodeSuspect, "task delivery stalled: task T1"},
		{store.NodeSuspect, true, nil, store.NodeSuspect, "gossip"},
		{store.NodeDown, false, stall, store.NodeDown, ""},
		{store.NodePending, false, stall, store.NodePending, ""},
	} {
		got, reason := suspectReason(tc.in, tc.gossipDead, tc.stall)
		if got != tc.want || !strings.HasPrefix(reason, tc.reason) || (tc.reason == "") != (reason == "") {
			t.Errorf("suspectReason(%s, %v, %v) = %s %q", tc.in, tc.gossipDead, tc.stall, got, reason)
		}
	}
}
