package store

import "testing"

// Every kind names its events by the object, never by the key.
func TestKindNames(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		key  string
		want string
	}{
		{KindAccounts, accountKey("01ABC"), "01ABC"},
		{KindAccountOutcomes, doneKey("account", "01ABC", "01TASK"), "01ABC"},
		{KindZones, zoneKey("example.com."), "example.com"},
		{KindZoneOutcomes, doneKey("zone", "example.com", "01TASK"), "example.com"},
		{KindDNSChecks, doneKey("dnsnode", "node-a", "01TASK"), "node-a"},
		{KindNodes, nodeKey("node-a"), "node-a"},
		{KindNodeQueue("node-a"), queueKey("node-a", "01TASK"), "01TASK"},
		{KindNodeState("node-a"), stateKey("node-a"), "node-a"},
	} {
		if got := tc.kind.nameOf(tc.key); got != tc.want {
			t.Errorf("%s: %q names %q, want %q", tc.kind, tc.key, got, tc.want)
		}
	}
}
