package controlplane

import (
	"encoding/json"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

func TestSDTarget(t *testing.T) {
	for _, c := range []struct{ addr, fallback, want string }{
		{"[::]:9469", "192.0.2.10", "192.0.2.10:9469"},
		{"0.0.0.0:9469", "2001:db8::1", "[2001:db8::1]:9469"},
		{":9469", "web-1.example.net", "web-1.example.net:9469"},
		{"198.51.100.7:9469", "192.0.2.10", "198.51.100.7:9469"},
		{"[::]:8443", "agents.example.net:7443", "agents.example.net:8443"},
		{"", "192.0.2.10", ""},
		{"[::]:0", "192.0.2.10", ""},
		{"[::]:9469", "", ""},
		{"garbage", "192.0.2.10", ""},
	} {
		if got := sdTarget(c.addr, c.fallback); got != c.want {
			t.Errorf("sdTarget(%q, %q) = %q, want %q", c.addr, c.fallback, got, c.want)
		}
	}
}

// The answer is what Prometheus' http_sd reads: an array (never null) of
// {targets, labels}, label names within [a-zA-Z0-9_].
func TestSDGroupsShape(t *testing.T) {
	b, _ := json.Marshal(sdGroups(nil, nil))
	if string(b) != "[]" {
		t.Errorf("empty: %s", b)
	}
	nodes := []store.NodeView{{Node: store.Node{Name: "n1", Address: "192.0.2.1", Roles: []string{"WEB", "DNS"},
		Labels: map[string]string{"dc.name/x": "fra"}}, State: store.NodeState{MetricsAddr: "[::]:9469"}}}
	b, _ = json.Marshal(sdGroups(nodes, []store.Replica{{ID: "s1", APIAddr: "127.0.0.1:8080"}}))
	want := `[{"targets":["192.0.2.1:9469"],"labels":{"label_dc_name_x":"fra","node":"n1","roles":"dns,web","service":"agent"}},` +
		`{"targets":["127.0.0.1:8080"],"labels":{"server":"s1","service":"server"}}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
