package cmdline

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// fuzzFlags has a flag of each kind the commands use, under the names the
// seeds use: the commands themselves (package main, internal/agentcmd) are
// tested against their config files in their own packages.
func fuzzFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
	fs.String("data-dir", "", "")
	fs.String("api-listen", "", "")
	fs.String("etcd-endpoints", "", "comma-separated")
	fs.String("server", "", "comma-separated")
	fs.Duration("cert-lifetime", time.Hour, "")
	fs.Int("max-api-connections", 0, "")
	fs.Bool("api-insecure-http", false, "")
	fs.BoolFunc("mail-antivirus", "", func(v string) error {
		_, err := strconv.ParseBool(v)
		return err
	})
	return fs
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"data-dir: /var/lib/npanel/server\napi-listen: 0.0.0.0:8080\n",
		"etcd-endpoints:\n  - https://a:2379\n  - https://b:2379\n",
		"server: [a:7443, b:7443]\nmail-antivirus: false\n",
		"cert-lifetime: 24h\nmax-api-connections: 10\n",
		"a: &x 1\nb: *x\n",
		"",
		"- 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseConfig(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if e.key == "" || seen[e.key] {
				t.Fatalf("entry %+v: empty or duplicate key", e)
			}
			seen[e.key] = true
			if e.list && strings.Contains(e.value, ",,") {
				t.Fatalf("list %q has an empty item", e.value)
			}
		}
		// Applying to flags of every kind either works or is a usage error.
		if err := applyConfig(fuzzFlags(), "fuzz.yaml", entries); err != nil {
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("apply: %v is not a usage error", err)
			}
		}
	})
}
