package testenv

import (
	"net"
	"net/netip"
	"testing"

	"github.com/npanel/npanel/nodeagent"
)

// StartIsolatedAgentAt is StartIsolatedAgent for a node whose address
// (the one its join token declares: what the control plane writes in
// its accounts' A records and gives other nodes to reach it) is
// address, a loopback address of 127.0.0.0/8 other than 127.0.0.1, so
// that two nodes on this machine have addresses that differ. Linux
// answers the whole of 127.0.0.0/8 on lo: nothing needs configuring.
// Which of its listeners bind that address is up to the options (see
// ListenOn).
func (s *Server) StartIsolatedAgentAt(t testing.TB, name, address string, opts ...AgentOption) *IsolatedAgent {
	t.Helper()
	ip, err := netip.ParseAddr(address)
	if err != nil || !ip.Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(ip) {
		t.Fatalf("node address %q: the tests use loopback addresses of 127.0.0.0/8 only", address)
	}
	return s.startIsolatedAgent(t, name, address, opts...)
}

// ListenOn moves the listeners the option's caller names (pointers to
// config fields holding host:port, set by an earlier option such as
// WithModules) onto host, keeping their ports: pass it after them.
func ListenOn(host string, fields ...func(*nodeagent.Config) *string) AgentOption {
	return func(c *nodeagent.Config) {
		for _, f := range fields {
			p := f(c)
			if _, port, err := net.SplitHostPort(*p); err == nil {
				*p = net.JoinHostPort(host, port)
			}
		}
	}
}
