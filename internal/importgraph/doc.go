// Package importgraph holds only a test: it keeps the server and the agent
// apart in the import graph. The server (controlplane, graph) imports
// nothing of the agent (nodeagent), the agent nothing of the server, and
// the packages both use (protos, pki, validate, dnszone) neither. cmd/npanel
// links both sides into one binary by design, so the test checks packages,
// not the binary, and in cmd/npanel the imports of the files that are not
// the agent's.
package importgraph
