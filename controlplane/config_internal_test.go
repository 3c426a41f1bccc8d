package controlplane

import "testing"

// The account controller's batch follows the transaction size the etcd
// allows: etcd's default 128 operations, a raised --max-txn-ops, the
// embedded member's own limit.
func TestAccountBatchFollowsTxnLimit(t *testing.T) {
	for _, tc := range []struct {
		endpoints []string
		ops, want int
	}{
		{nil, 0, embeddedAccountBatch},
		{[]string{"https://e1:2379"}, 0, defaultAccountBatch},
		{[]string{"https://e1:2379"}, 128, defaultAccountBatch},
		{[]string{"https://e1:2379"}, 1024, 160},
		{[]string{"https://e1:2379"}, 1 << 16, embeddedAccountBatch},
	} {
		c := Config{DataDir: t.TempDir(), EtcdEndpoints: tc.endpoints, EtcdMaxTxnOps: tc.ops, EtcdInsecure: len(tc.endpoints) > 0}
		if err := c.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if c.AccountBatch != tc.want {
			t.Errorf("etcd %v, --etcd-max-txn-ops %d: account batch %d, want %d", tc.endpoints, tc.ops, c.AccountBatch, tc.want)
		}
		// A batch's operations fit the limit (six an account at most).
		if limit := max(tc.ops, 128); len(tc.endpoints) > 0 && 6*c.AccountBatch > limit {
			t.Errorf("--etcd-max-txn-ops %d: %d accounts need up to %d operations", tc.ops, c.AccountBatch, 6*c.AccountBatch)
		}
	}
}
