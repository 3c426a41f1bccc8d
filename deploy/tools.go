// Package deploy builds and tests what production runs: the rpm and deb
// packages (cmd/npanel-package), the Ansible roles in ../ansible and the Helm
// chart in ../charts. It is its own module so that nfpm, Helm and the
// Kubernetes API types stay out of the npanel binary's dependency graph.
package deploy
