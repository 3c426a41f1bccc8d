package store

// MirroredPlan reports whether the replica's mirror holds plan name at rev.
func (s *Store) MirroredPlan(name string, rev int64) bool {
	_, r, ok := s.plans.get(name)
	return ok && r == rev
}

// DatabaseKey is the key of an account's database record.
func DatabaseKey(account, name string) string { return databaseKey(account, name) }

// MirroredServices returns the node's service report the replica's mirror
// holds, or nil.
func (s *Store) MirroredServices(node string) *NodeServices {
	r, _, _ := s.services.get(node)
	return r
}
