package daemon

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a port free on ip for both TCP and UDP that was not
// handed out before in this process. A daemon is given the port after the
// probe closes it, so the port is chosen below the kernel's ephemeral range:
// an outgoing connection may take any port of that range in between, and a
// daemon then fails to bind (seen with PowerDNS's API port in CI).
func FreePort(ip string) (int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 1000 {
		// Above the fixed ports of npanel dev (8080+N, 8440+N, ...).
		port := 20000 + rand.IntN(max(lo-20000, 1000))
		if handedOut.ports[port] {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no port free on %s below the ephemeral range", ip)
}
