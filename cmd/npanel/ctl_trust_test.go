package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serverKey makes one key of every spelling of a server URL.
func TestServerKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://cp:8080":              "https://cp:8080",
		"https://cp:8080/":             "https://cp:8080",
		"HTTPS://CP:8080":              "https://cp:8080",
		"https://Cp.Example.NET:443/":  "https://cp.example.net",
		"https://cp.example.net":       "https://cp.example.net",
		"http://127.0.0.1:80":          "http://127.0.0.1",
		"http://127.0.0.1:8080":        "http://127.0.0.1:8080",
		"https://[::1]:443":            "https://[::1]",
		"https://[::1]:8443/":          "https://[::1]:8443",
		"https://cp.example.net/api//": "https://cp.example.net/api",
		"  https://cp:8080  ":          "https://cp:8080",
		"not a url":                    "not a url",
	} {
		if got := serverKey(in); got != want {
			t.Errorf("serverKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// A pin saved by login under one spelling of --server is found under
// every other; an https server with no saved trust is refused with exit 3
// rather than verified against the system roots; --system-roots saved for
// it is honoured; plain http needs nothing. Saved files keyed by raw
// spellings are read by the normalised key, and spellings that disagree
// are both dropped.
func TestCtlTrustLookupNormalised(t *testing.T) {
	conf := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", conf)
	fp := strings.Repeat("ab", 32)
	if err := saveTrust("https://cp:8080/", serverTrust{CAFingerprint: fp}); err != nil {
		t.Fatal(err)
	}
	if err := saveTrust("https://Public.Example.NET:443", serverTrust{SystemRoots: true}); err != nil {
		t.Fatal(err)
	}
	opts := func(server, flagFP string) (int, error) {
		o := &ctlOptions{server: server, caFingerprint: flagFP}
		got, err := o.clientOptions()
		return len(got), err
	}
	for _, server := range []string{"https://cp:8080", "HTTPS://CP:8080", "https://cp:8080/", "https://CP:8080//"} {
		if n, err := opts(server, ""); err != nil || n != 1 {
			t.Errorf("%s: %d options, %v; want the pin", server, n, err)
		}
	}
	for _, server := range []string{"https://public.example.net", "https://PUBLIC.example.net:443/"} {
		if n, err := opts(server, ""); err != nil || n != 0 {
			t.Errorf("%s: %d options, %v; want the system roots", server, n, err)
		}
	}
	if n, err := opts("http://cp:8080", ""); err != nil || n != 0 {
		t.Errorf("plain http: %d options, %v", n, err)
	}
	if n, err := opts("https://other:8080", fp); err != nil || n != 1 {
		t.Errorf("--ca-fingerprint without a saved pin: %d options, %v", n, err)
	}
	for _, server := range []string{"https://other:8080", "https://cp:9090", "https://cp"} {
		_, err := opts(server, "")
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitTrust || !strings.Contains(ee.msg, "log in again to pin") {
			t.Errorf("%s without a saved pin: %v, want exit %d (log in again to pin)", server, err, exitTrust)
		}
	}

	// A file written before keys were normalised.
	old := `{"HTTPS://Old:8080/": {"ca_fingerprint": "` + fp + `"},
		"https://clash:8080": {"ca_fingerprint": "` + fp + `"}, "https://CLASH:8080/": {"system_roots": true}}`
	if err := os.WriteFile(filepath.Join(conf, "npanel", "servers.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := opts("https://old:8080", ""); err != nil || n != 1 {
		t.Errorf("a pin saved under a raw spelling: %d options, %v", n, err)
	}
	if _, err := opts("https://clash:8080", ""); err == nil {
		t.Error("spellings that disagree: one of them was taken")
	}

	// Tokens are keyed the same way.
	if _, err := saveToken("HTTPS://CP:8080/", "tok"); err != nil {
		t.Fatal(err)
	}
	if got := loadCredentials()[serverKey("https://cp:8080")]; got != "tok" {
		t.Errorf("token saved under another spelling: %q", got)
	}
}
