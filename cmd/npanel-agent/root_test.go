package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/npanel/npanel/internal/agentcmd"
	"github.com/npanel/npanel/internal/cmdline"
)

// npanel-agent takes every flag `npanel agent` takes, with the same
// defaults, plus npanel's persistent log flags: agent.yaml means the same
// to both.
func TestSameFlagsAsNpanelAgent(t *testing.T) {
	root := newRoot()
	want := agentcmd.New("agent", version).Flags()
	want.String("log-level", "info", "")
	want.String("log-format", "text", "")
	want.VisitAll(func(f *pflag.Flag) {
		got := root.Flags().Lookup(f.Name)
		if got == nil {
			t.Errorf("npanel-agent has no --%s", f.Name)
			return
		}
		if got.DefValue != f.DefValue {
			t.Errorf("--%s defaults to %q, npanel agent's to %q", f.Name, got.DefValue, f.DefValue)
		}
	})
}

func TestConfigFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	yaml := "server: [cp1:7443, cp2:7443]\ndata-dir: /var/lib/npanel/agent\nlog-level: debug\nmodules: none\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	root.RunE = func(*cobra.Command, []string) error { return nil }
	root.SetArgs([]string{"--config", file, "--modules", "dns"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"server": "cp1:7443,cp2:7443", "data-dir": "/var/lib/npanel/agent", "log-level": "debug", "modules": "dns"} {
		if got := root.Flags().Lookup(k).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("servers: [cp1:7443]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root = newRoot()
	root.SetArgs([]string{"--config", bad})
	err := root.Execute()
	var ue *cmdline.UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `unknown key "servers"`) {
		t.Fatalf("unknown key: %v, want a usage error naming it", err)
	}
}
