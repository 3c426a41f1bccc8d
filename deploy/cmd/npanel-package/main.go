// Command npanel-package builds the npanel rpm and deb (make package):
//
//	npanel-package --binary bin/npanel-release --agent-binary bin/npanel-agent-release \
//	  --version 0.1.0~git123.5fe3efb --out dist
//
// writes dist/npanel_VERSION_amd64.deb and dist/npanel-VERSION.x86_64.rpm
// from the binaries and the files in packaging/.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/npanel/npanel/deploy/packaging"
)

func main() {
	var o packaging.Options
	flag.StringVar(&o.Binary, "binary", "", "the npanel binary to package (linux/amd64)")
	flag.StringVar(&o.AgentBinary, "agent-binary", "", "the npanel-agent binary to package (linux/amd64)")
	flag.StringVar(&o.Version, "version", "", "package version, e.g. 0.1.0~git123.5fe3efb")
	flag.StringVar(&o.OutDir, "out", "dist", "directory the packages are written to")
	flag.StringVar(&o.Dir, "packaging", "packaging", "directory of nfpm.yaml and the files it names")
	flag.Parse()
	if o.Binary == "" || o.AgentBinary == "" || o.Version == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: npanel-package --binary FILE --agent-binary FILE --version VERSION [--out DIR] [--packaging DIR]")
		os.Exit(2)
	}
	r, err := packaging.Build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "npanel-package:", err)
		os.Exit(1)
	}
	fmt.Println(r.Deb)
	fmt.Println(r.RPM)
}
