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

// agentCmd is `npanel agent`, as main adds it.
func agentCmd() *cobra.Command { return agentcmd.New("agent", version) }

// configured runs cmd (server or agent) under a root with the real
// persistent flags, its RunE replaced so nothing starts, and returns the
// command after the flags and the config file were applied.
func configured(t *testing.T, sub *cobra.Command, yaml string, args ...string) (*cobra.Command, error) {
	t.Helper()
	root := &cobra.Command{Use: "npanel", SilenceErrors: true, SilenceUsage: true}
	root.PersistentFlags().String("log-level", "info", "")
	root.PersistentFlags().String("log-format", "text", "")
	sub.RunE = func(*cobra.Command, []string) error { return nil }
	root.AddCommand(sub)
	argv := []string{sub.Name()}
	if yaml != "" {
		file := filepath.Join(t.TempDir(), "npanel.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "--config", file)
	}
	root.SetArgs(append(argv, args...))
	root.SetOut(&strings.Builder{})
	err := root.Execute()
	return sub, err
}

func TestConfigFile(t *testing.T) {
	tests := []struct {
		name string
		cmd  func() *cobra.Command
		yaml string
		args []string
		want map[string]string // flag -> value after applying
	}{
		{
			name: "values from the file",
			cmd:  serverCmd,
			yaml: "data-dir: /var/lib/npanel/server\napi-listen: 0.0.0.0:8080\napi-insecure-http: true\nmax-api-connections: 100\ncert-lifetime: 12h\n",
			want: map[string]string{"data-dir": "/var/lib/npanel/server", "api-listen": "0.0.0.0:8080", "api-insecure-http": "true", "max-api-connections": "100", "cert-lifetime": "12h0m0s"},
		},
		{
			name: "a flag on the command line wins",
			cmd:  serverCmd,
			yaml: "data-dir: /from/file\napi-listen: 0.0.0.0:8080\n",
			args: []string{"--data-dir", "/from/flag"},
			want: map[string]string{"data-dir": "/from/flag", "api-listen": "0.0.0.0:8080"},
		},
		{
			name: "a bool flag given false on the command line wins over true",
			cmd:  serverCmd,
			yaml: "public-introspection: true\n",
			args: []string{"--public-introspection=false"},
			want: map[string]string{"public-introspection": "false"},
		},
		{
			name: "list as a comma string",
			cmd:  serverCmd,
			yaml: "etcd-endpoints: https://a:2379,https://b:2379\n",
			want: map[string]string{"etcd-endpoints": "https://a:2379,https://b:2379"},
		},
		{
			name: "list as a YAML sequence",
			cmd:  serverCmd,
			yaml: "etcd-endpoints:\n  - https://a:2379\n  - https://b:2379\ntrusted-proxies: [10.0.0.0/8, 192.168.0.0/16]\n",
			want: map[string]string{"etcd-endpoints": "https://a:2379,https://b:2379", "trusted-proxies": "10.0.0.0/8,192.168.0.0/16"},
		},
		{
			name: "agent lists and the antivirus switch",
			cmd:  agentCmd,
			yaml: "server: [cp1:7443, cp2:7443]\nmodules: web,dns\ndata-dir: /var/lib/npanel/agent\nmail-antivirus: false\ngossip-listen: \"\"\n",
			want: map[string]string{"server": "cp1:7443,cp2:7443", "modules": "web,dns", "data-dir": "/var/lib/npanel/agent", "gossip-listen": ""},
		},
		{
			name: "persistent flags and an empty value",
			cmd:  agentCmd,
			yaml: "log-level: debug\nlog-format: json\nplatform:\n",
			want: map[string]string{"log-level": "debug", "log-format": "json", "platform": ""},
		},
		{
			name: "an empty file sets nothing",
			cmd:  serverCmd,
			yaml: "# nothing yet\n",
			want: map[string]string{"api-listen": "127.0.0.1:8080"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := configured(t, tt.cmd(), tt.yaml, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tt.want {
				if got := cmd.Flags().Lookup(k).Value.String(); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
	t.Run("mail-antivirus: false reaches the agent's config", func(t *testing.T) {
		cmd, err := configured(t, agentCmd(), "mail-antivirus: false\n")
		if err != nil {
			t.Fatal(err)
		}
		if !cmdline.FromFile(cmd.Flags(), "mail-antivirus") {
			t.Fatal("mail-antivirus not marked as set from the file")
		}
	})
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name string
		cmd  func() *cobra.Command
		yaml string
		want []string // substrings of the error besides the file name
	}{
		{"unknown key", serverCmd, "data-dir: /x\ndata_dir: /y\n", []string{"line 2", `unknown key "data_dir"`}},
		{"key of the other command", serverCmd, "join-token-file: /etc/npanel/join-token\n", []string{`unknown key "join-token-file"`}},
		{"config itself", agentCmd, "config: /etc/npanel/other.yaml\n", []string{`unknown key "config"`}},
		{"bad duration", serverCmd, "cert-lifetime: 3600\n", []string{"line 1", `"cert-lifetime"`, "missing unit"}},
		{"bad int", serverCmd, "max-api-connections: many\n", []string{`"max-api-connections"`}},
		{"bad bool", serverCmd, "api-insecure-http: maybe\n", []string{`"api-insecure-http"`}},
		{"empty bool", serverCmd, "api-insecure-http:\n", []string{`"api-insecure-http"`}},
		{"bad antivirus switch", agentCmd, "mail-antivirus: sometimes\n", []string{`"mail-antivirus"`}},
		{"list for a single value", serverCmd, "data-dir: [/a, /b]\n", []string{`"data-dir" takes one value`}},
		{"mapping value", serverCmd, "data-dir:\n  path: /a\n", []string{`"data-dir"`, "mapping"}},
		{"list item with a comma", serverCmd, "etcd-endpoints: [\"https://a:2379,https://b:2379\"]\n", []string{"comma"}},
		{"nested list", agentCmd, "server: [[a:1]]\n", []string{"plain values"}},
		{"duplicate key", serverCmd, "data-dir: /a\ndata-dir: /b\n", []string{"line 2", "twice", "line 1"}},
		{"not a mapping", serverCmd, "- data-dir\n", []string{"mapping"}},
		{"two documents", serverCmd, "data-dir: /a\n---\ndata-dir: /b\n", []string{"second YAML document"}},
		{"YAML syntax", serverCmd, "data-dir: [\n", []string{"yaml"}},
		{"non-string key", serverCmd, "8080: api-listen\n", []string{"flag name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configured(t, tt.cmd(), tt.yaml)
			var ue *cmdline.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, w := range append([]string{"npanel.yaml"}, tt.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("unreadable file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.yaml")
		_, err := configured(t, serverCmd(), "", "--config", missing)
		var ue *cmdline.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), missing) {
			t.Fatalf("err = %v, want a usage error naming %s", err, missing)
		}
	})
	t.Run("join token in a file others read", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(file, []byte("join-token: secret-token\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := configured(t, agentCmd(), "", "--config", file)
		var ue *cmdline.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "chmod 0600") || strings.Contains(err.Error(), "secret-token") {
			t.Fatalf("err = %v, want a usage error about the mode that does not show the token", err)
		}
	})
}

// Every string flag documented as comma-separated must accept a YAML list.
func TestConfigListFlagsKnown(t *testing.T) {
	for _, cmd := range []*cobra.Command{serverCmd(), agentCmd()} {
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "comma-separated") && !cmdline.IsListFlag(f.Name) {
				t.Errorf("%s --%s is comma-separated but not a cmdline list flag", cmd.Name(), f.Name)
			}
		})
	}
}

// Through the binary: a bad file exits 2 naming file and key, and a value
// from the file reaches the command (the server refuses the scheduler it
// names before it starts anything).
func TestConfigFileBinary(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("data-dir: "+dir+"\nschedular: binpack\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, nil, "", "server", "--config", bad)
	if code != 2 || !strings.Contains(out, bad) || !strings.Contains(out, `"schedular"`) {
		t.Fatalf("bad key: exit %d: %s", code, out)
	}
	good := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(good, []byte("data-dir: "+dir+"\nscheduler: roundrobin\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out, code = run(t, nil, "", "server", "--config", good)
	if code != 2 || !strings.Contains(out, "--scheduler") {
		t.Fatalf("scheduler from the file: exit %d: %s", code, out)
	}
	out, code = run(t, nil, "", "server", "--config", good, "--scheduler", "binpack", "--data-dir", "")
	if code != 2 || !strings.Contains(out, "--data-dir is required") {
		t.Fatalf("flags over the file: exit %d: %s", code, out)
	}
}
