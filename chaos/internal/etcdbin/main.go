// Command etcdbin is etcd at the version go.mod pins, for the chaos suite,
// which runs real etcd members as processes it can kill.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
