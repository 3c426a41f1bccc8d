// Command npanel-image writes the container image the Helm chart runs
// (charts/npanel) as an OCI image layout directory, without Docker: one
// layer holding the static npanel binary at /usr/bin/npanel (the
// entrypoint), a CA bundle for outbound HTTPS (ACME), and passwd/group
// entries for the uid the chart runs as. Push it with any OCI tool, e.g.
// skopeo copy oci:DIR:TAG docker://ghcr.io/npanel/npanel:TAG.
//
//	cd deploy && go run ./cmd/npanel-image -binary ../bin/npanel -tag 0.1.0 -out ../dist/npanel-oci
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "../bin/npanel", "the static npanel binary (make build)")
	flag.StringVar(&o.out, "out", "../dist/npanel-oci", "OCI image layout directory to write (must not exist)")
	flag.StringVar(&o.tag, "tag", "", "the image's tag (org.opencontainers.image.ref.name), e.g. the npanel version (required)")
	flag.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM roots copied to the same path in the image; empty: none")
	flag.Parse()
	if o.tag == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: npanel-image -tag TAG [-binary FILE] [-out DIR] [-ca-bundle FILE]")
		os.Exit(2)
	}
	digest, err := write(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "npanel-image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s:%s %s\n", o.out, o.tag, digest)
}
