// Package observe holds the agent's read-only observability actions: the
// node's figures and its daemons' logs.
package observe
