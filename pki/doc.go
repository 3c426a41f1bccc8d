// Package pki is what both sides of the cluster need of its PKI: node and
// server identities (SPIFFE URIs in the URI SAN), node keys and CSRs, PEM
// encoding, the shape of join tokens and their unverified decoding, the
// TLS configs of the gateway and the agent, sealing secrets to a node's key,
// and the control plane's key-encryption key.
//
// The certificate authority itself is package pki/ca, server only: it links
// smallstep's authority (and through it badger, bbolt, cloud KMS clients),
// which would cost the agent, which runs on every node, megabytes of memory
// for code it never calls. Keep this package free of it: the agent's import
// graph is checked by internal/importgraph.
package pki
