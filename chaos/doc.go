// Package chaos is nPanel's Jepsen-style suite: the real binaries as
// processes (3 etcd members, 3 server replicas, 5 agents with their
// daemons) under a steady API load while replicas, etcd members and agents
// are killed, an agent is partitioned and the replicas are upgraded one at
// a time; then it checks that nothing answered was lost or duplicated.
// The tests are in chaos_test.go; `make chaos` runs the long form.
package chaos
