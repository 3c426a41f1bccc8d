package pki

import (
	"errors"
	"strings"
	"testing"
)

func TestValidNodeName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring; empty means valid
	}{
		{"a", ""},
		{"web-1", ""},
		{"0", ""},
		{"123abc", ""},
		{"a-b-c", ""},
		{"a--b", ""},
		{strings.Repeat("a", 63), ""},
		{"", "empty"},
		{strings.Repeat("a", 64), "64 characters long, the maximum is 63"},
		{"-web", "must not start with '-'"},
		{"web-", "must not end with '-'"},
		{"-", "must not start with '-'"},
		{"Web1", "uppercase 'W'"},
		{"web_1", "contains '_'"},
		{"web.example", "contains '.'"},
		{"web 1", "contains ' '"},
		{"wéb", "contains 'é'"},
		{"w\xffb", "contains '\uFFFD'"},
		{"web/1", "contains '/'"},
		{"web\x00", "contains '\\x00'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidNodeName(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidNodeName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidNodeName(%q) = nil, want error containing %q", tt.name, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ValidNodeName(%q) = %q, want it to contain %q", tt.name, err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("ValidNodeName(%q) error does not wrap ErrInvalidName", tt.name)
			}
		})
	}
}

func TestURIs(t *testing.T) {
	if got, want := NodeURI("web-1").String(), "spiffe://npanel/node/web-1"; got != want {
		t.Errorf("NodeURI = %q, want %q", got, want)
	}
	if got, want := ServerURI("cp-1").String(), "spiffe://npanel/server/cp-1"; got != want {
		t.Errorf("ServerURI = %q, want %q", got, want)
	}
}

func TestNodeNameAndServerID(t *testing.T) {
	tests := []struct {
		desc       string
		uris       []string
		wantNode   string // empty: NodeName must fail
		wantServer string // empty: ServerID must fail
	}{
		{"node", []string{"spiffe://npanel/node/web-1"}, "web-1", ""},
		{"server", []string{"spiffe://npanel/server/cp-1"}, "", "cp-1"},
		{"no URI", nil, "", ""},
		{"two URIs", []string{"spiffe://npanel/node/a", "spiffe://npanel/node/b"}, "", ""},
		{"node and server", []string{"spiffe://npanel/node/a", "spiffe://npanel/server/a"}, "", ""},
		{"other trust domain", []string{"spiffe://other/node/a"}, "", ""},
		{"other scheme", []string{"https://npanel/node/a"}, "", ""},
		{"port", []string{"spiffe://npanel:443/node/a"}, "", ""},
		{"userinfo", []string{"spiffe://u@npanel/node/a"}, "", ""},
		{"query", []string{"spiffe://npanel/node/a?x=1"}, "", ""},
		{"fragment", []string{"spiffe://npanel/node/a#x"}, "", ""},
		{"nested path", []string{"spiffe://npanel/node/a/b"}, "", ""},
		{"escaped slash", []string{"spiffe://npanel/node/a%2Fb"}, "", ""},
		{"empty name", []string{"spiffe://npanel/node/"}, "", ""},
		{"uppercase name", []string{"spiffe://npanel/node/Web"}, "", ""},
		{"bad label", []string{"spiffe://npanel/server/-x"}, "", ""},
		{"unknown kind", []string{"spiffe://npanel/agent/a"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cert := certWithURIs(t, tt.uris...)
			node, err := NodeName(cert)
			switch {
			case tt.wantNode == "" && err == nil:
				t.Errorf("NodeName = %q, want error", node)
			case tt.wantNode != "" && (err != nil || node != tt.wantNode):
				t.Errorf("NodeName = %q, %v, want %q", node, err, tt.wantNode)
			}
			id, err := ServerID(cert)
			switch {
			case tt.wantServer == "" && err == nil:
				t.Errorf("ServerID = %q, want error", id)
			case tt.wantServer != "" && (err != nil || id != tt.wantServer):
				t.Errorf("ServerID = %q, %v, want %q", id, err, tt.wantServer)
			}
		})
	}
	if _, err := NodeName(nil); err == nil {
		t.Error("NodeName(nil) succeeded")
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string // want empty: error
	}{
		{"localhost", "localhost"},
		{"CP1.Example.com", "cp1.example.com"},
		{"127.0.0.1", "127.0.0.1"},
		{"::1", "::1"},
		{"2001:DB8::1", "2001:db8::1"},
		{"", ""},
		{"host:443", ""},
		{"[::1]:443", ""},
		{"a..b", ""},
		{"-a.b", ""},
		{"example.com.", ""},
		{"*.example.com", ""},
		{"https://example.com", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeHost(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizeHost(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}
