package store

import "context"

// MirroredPlan reports whether the replica's mirror holds plan name at rev.
func (s *Store) MirroredPlan(name string, rev int64) bool {
	_, r, ok := s.plans.get(name)
	return ok && r == rev
}

// DatabaseStateKey is the key of an account's database status.
func DatabaseStateKey(account, name string) string { return databaseStateKey(account, name) }

// MirroredServices returns the node's service report the replica's mirror
// holds, or nil.
func (s *Store) MirroredServices(node string) *NodeServices {
	r, _, _ := s.services.get(node)
	return r
}

// MirroredNode is the replica's mirror of node specs, without the
// fallback to etcd.
func (s *Store) MirroredNode(name string) *Node {
	n, _, _ := s.nodes.get(name)
	return n
}

// NameHolder returns who holds name in the name tree ("" when nobody does).
func (s *Store) NameHolder(ctx context.Context, name string) (string, error) {
	resp, err := s.cli.Get(ctx, treeKey(name))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// TaskKey is the key of a task's record.
func TaskKey(id string) string { return taskKey(id) }
