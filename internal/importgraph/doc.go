// Package importgraph holds only a test: it keeps the server and the agent
// apart in the import graph. The server (controlplane, graph) imports
// nothing of the agent (nodeagent), the agent nothing of the server, and
// the packages both use (protos, pki, validate, dnszone) neither. cmd/npanel
// links both sides into one binary by design, so for it the test checks
// packages, and in cmd/npanel the imports of the files that are not the
// agent's. cmd/npanel-agent is the agent alone: its whole graph is checked,
// down to the server's external dependencies (etcd server, smallstep's CA,
// gqlgen), which would cost every node memory.
package importgraph
