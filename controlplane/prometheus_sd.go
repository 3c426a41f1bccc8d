package controlplane

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/npanel/npanel/controlplane/store"
)

// PrometheusSDPath serves Prometheus' HTTP service discovery (http_sd_configs).
const PrometheusSDPath = "/v1/prometheus/sd"

// sdGroup is one target group of Prometheus' HTTP SD.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// prometheusSD lists every agent that serves /metrics and every server
// replica, as Prometheus' http_sd expects.
func (s *Server) prometheusSD(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.store.ListNodes(r.Context())
	if err != nil {
		http.Error(w, "cluster store unavailable", http.StatusServiceUnavailable)
		return
	}
	reps, err := s.store.Replicas(r.Context())
	if err != nil {
		http.Error(w, "cluster store unavailable", http.StatusServiceUnavailable)
		return
	}
	groups := sdGroups(nodes, reps)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(groups)
}

func sdGroups(nodes []store.NodeView, reps []store.Replica) []sdGroup {
	groups := []sdGroup{}
	for _, n := range nodes {
		target := sdTarget(n.State.MetricsAddr, n.Address)
		if target == "" {
			continue
		}
		roles := make([]string, len(n.Roles))
		for i, r := range n.Roles {
			roles[i] = strings.ToLower(r)
		}
		slices.Sort(roles)
		labels := map[string]string{"node": n.Name, "roles": strings.Join(roles, ","), "service": "agent"}
		for k, v := range n.Labels {
			labels["label_"+sdLabelName(k)] = v
		}
		groups = append(groups, sdGroup{Targets: []string{target}, Labels: labels})
	}
	slices.SortFunc(reps, func(a, b store.Replica) int { return strings.Compare(a.ID, b.ID) })
	for _, rep := range reps {
		target := sdTarget(rep.APIAddr, rep.AgentAddr)
		if target == "" {
			continue
		}
		groups = append(groups, sdGroup{Targets: []string{target}, Labels: map[string]string{"service": "server", "server": rep.ID}})
	}
	return groups
}

// sdTarget is addr, with an unspecified or missing host replaced by the
// host of fallback (the node's declared address, a replica's advertised
// agent address); "" when addr is unusable.
func sdTarget(addr, fallback string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || port == "0" {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = fallback
		if h, _, err := net.SplitHostPort(fallback); err == nil {
			host = h
		}
		if host == "" {
			return ""
		}
	}
	return net.JoinHostPort(host, port)
}

// sdLabelName makes a node label's key a valid Prometheus label name part.
func sdLabelName(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
