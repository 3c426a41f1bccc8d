// Package chaos is nPanel's Jepsen-style suite: the real binaries as
// processes (3 etcd members, 3 server replicas, 5 agents with their
// daemons) under a steady API load while replicas, etcd members and agents
// are killed, an agent is partitioned and the replicas are upgraded one at
// a time; then it checks that nothing answered was lost or duplicated.
//
// TestChaos builds what it runs: etcd at the version go.mod pins
// (internal/etcdbin) and bin/npanel twice (two -X main.version values, for
// the rolling upgrade), with -tags npanel_testnames so that the server and
// agents take the reserved test account names, which the suite removes
// from the machine afterwards. etcd speaks plain http on loopback (the
// replicas run with --etcd-insecure); everything listens on 127.0.0.1.
//
// In go test ./... it injects each fault once (about 2 minutes on 2
// cores); NPANEL_CHAOS=full (make chaos) kills the leader 10 times.
// NPANEL_CHAOS_KEEP=1 keeps a failed run's directory (logs of every
// process lifetime, data dirs) for a post-mortem.
package chaos
