package dns

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/npanel/npanel/nodeagent/actions"
)

// Stats are the figures of the node's PowerDNS the agent's /metrics
// exports.
type Stats struct {
	UDPQueries, TCPQueries uint64 // answered since pdns_server started
	Zones                  int
}

// Stats reads the query counters from the API's statistics endpoint and
// counts the zones. It is for the metrics collector, which caches it: the
// zone list of a large node is a few megabytes of JSON.
func (m *Module) Stats(ctx context.Context, env *actions.Env) (Stats, error) {
	c, err := m.clientFor(env)
	if err != nil {
		return Stats{}, err
	}
	var items []struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Value any    `json:"value"` // a string for StatisticItem, a list for the others
	}
	if err := c.do(ctx, http.MethodGet, "/statistics", nil, &items); err != nil {
		return Stats{}, err
	}
	var st Stats
	for _, it := range items {
		s, ok := it.Value.(string)
		if !ok {
			continue
		}
		switch it.Name {
		case "udp-queries":
			st.UDPQueries, err = strconv.ParseUint(s, 10, 64)
		case "tcp-queries":
			st.TCPQueries, err = strconv.ParseUint(s, 10, 64)
		}
		if err != nil {
			return Stats{}, fmt.Errorf("powerdns statistic %s: %w", it.Name, err)
		}
	}
	zs, err := c.zones(ctx)
	if err != nil {
		return Stats{}, err
	}
	st.Zones = len(zs)
	return st, nil
}
