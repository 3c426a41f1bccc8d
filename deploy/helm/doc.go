// Package helm tests the Helm chart in ../charts/npanel with Helm's own
// library: lint in strict mode, render as helm template does, and decode
// every rendered object strictly into its Kubernetes API type, so a
// misspelt field fails here rather than on a cluster.
package helm
