package controlplane

import (
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

func TestDesiredStatus(t *testing.T) {
	for _, tc := range []struct {
		enrolled, lease, gossipDead bool
		want                        store.NodeStatus
	}{
		{false, false, false, store.NodePending},
		{false, true, false, store.NodePending},
		{true, true, false, store.NodeReady},
		{true, true, true, store.NodeSuspect},
		{true, false, false, store.NodeDown},
		{true, false, true, store.NodeDown},
	} {
		if got := desiredStatus(tc.enrolled, tc.lease, tc.gossipDead); got != tc.want {
			t.Errorf("desiredStatus(enrolled=%v, lease=%v, gossipDead=%v) = %s, want %s",
				tc.enrolled, tc.lease, tc.gossipDead, got, tc.want)
		}
	}
}
