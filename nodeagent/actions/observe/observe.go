// Package observe holds the read-only actions that let the API look at a
// node: its host figures (node_metrics) and its daemons' logs
// (read_service_log). None of them changes anything on the node.
package observe
