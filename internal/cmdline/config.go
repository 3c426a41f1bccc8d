package cmdline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// maxConfigSize bounds what --config reads: a flag file is a few KB.
const maxConfigSize = 1 << 20

// listFlags are the string flags that take a comma-separated list; in a
// config file they may also be written as a YAML sequence.
var listFlags = map[string]bool{
	"etcd-endpoints":  true,
	"trusted-proxies": true,
	"server":          true,
	"modules":         true,
}

// configEntry is one "key: value" of a config file, the value already in
// the form the flag's Set takes.
type configEntry struct {
	key   string
	value string
	line  int
	list  bool // written as a YAML sequence
}

// WithConfigFile gives cmd a --config flag: a YAML file whose keys are the
// command's long flag names. Its values are set before the command runs,
// except for flags given on the command line, which win.
func WithConfigFile(cmd *cobra.Command) *cobra.Command {
	var file string
	cmd.Flags().StringVar(&file, "config", "", "YAML file of flag values, keys the long flag names (flags given on the command line win)")
	next := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if file != "" {
			if err := applyConfigFile(cmd.Flags(), file); err != nil {
				return err
			}
			// The logger was set up from the flags before this hook ran.
			if FromFile(cmd.Flags(), "log-level") || FromFile(cmd.Flags(), "log-format") {
				level, _ := cmd.Flags().GetString("log-level")
				format, _ := cmd.Flags().GetString("log-format")
				SetLogger(level, format)
			}
		}
		if next != nil {
			return next(cmd, args)
		}
		return nil
	}
	return cmd
}

// IsListFlag reports whether a config file may give flag name as a YAML
// sequence (a comma-separated list).
func IsListFlag(name string) bool { return listFlags[name] }

// configAnnotation marks a flag whose value came from the config file.
const configAnnotation = "npanel-config-file"

// FromFile reports whether flag name got its value from the config file.
func FromFile(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Annotations[configAnnotation] != nil
}

// applyConfigFile reads file and sets every flag it names that the
// command line did not. Every failure is a usage error naming the file
// (and the key), so a typo stops the daemon at start instead of being
// ignored.
func applyConfigFile(fs *pflag.FlagSet, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return Usagef("--config: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Usagef("--config: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return Usagef("--config %s: not a regular file", file)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Usagef("--config: %v", err)
	}
	if len(data) > maxConfigSize {
		return Usagef("--config %s: larger than %d bytes", file, maxConfigSize)
	}
	entries, err := parseConfig(data)
	if err != nil {
		return Usagef("config file %s: %v", file, err)
	}
	for _, e := range entries {
		// Like --join-token-file, a token in a file others may read
		// would leak it.
		if e.key == "join-token" && fi.Mode().Perm()&0o077 != 0 {
			return Usagef("config file %s: line %d: join-token: mode %04o lets other users read the token; chmod 0600 the file or use join-token-file", file, e.line, fi.Mode().Perm())
		}
	}
	return applyConfig(fs, file, entries)
}

// applyConfig sets the flags named by entries, skipping those changed on
// the command line.
func applyConfig(fs *pflag.FlagSet, file string, entries []configEntry) error {
	for _, e := range entries {
		f := fs.Lookup(e.key)
		if f == nil || e.key == "config" || e.key == "help" {
			return Usagef("config file %s: line %d: unknown key %q (keys are the long flag names of this command; see --help)", file, e.line, e.key)
		}
		if e.list && !listFlags[e.key] {
			return Usagef("config file %s: line %d: key %q takes one value, not a list", file, e.line, e.key)
		}
		if f.Changed {
			continue
		}
		if err := fs.Set(e.key, e.value); err != nil {
			return Usagef("config file %s: line %d: key %q: %v", file, e.line, e.key, cleanSetError(err))
		}
		_ = fs.SetAnnotation(e.key, configAnnotation, []string{file})
	}
	return nil
}

// cleanSetError drops pflag's `invalid argument "v" for "--k" flag:`
// prefix: the message names the key already.
func cleanSetError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " flag: "); i >= 0 && strings.HasPrefix(msg, "invalid argument") {
		return msg[i+len(" flag: "):]
	}
	return msg
}

// parseConfig parses a config file: one YAML document, a mapping from
// flag names to scalars (strings, numbers, bools, durations as Go
// duration strings) or sequences of scalars (lists, joined with commas).
// An empty document sets nothing.
func parseConfig(data []byte) ([]configEntry, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: a second YAML document; a config file holds one", extra.Line)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("not a YAML document")
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values", m.Line)
	}
	seen := make(map[string]int)
	var out []configEntry
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" || k.Value == "" {
			return nil, fmt.Errorf("line %d: a key must be a flag name", k.Line)
		}
		key := k.Value
		if prev, dup := seen[key]; dup {
			return nil, fmt.Errorf("line %d: key %q given twice (first on line %d)", k.Line, key, prev)
		}
		seen[key] = k.Line
		e := configEntry{key: key, line: k.Line}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		switch v.Kind {
		case yaml.ScalarNode:
			s, err := scalar(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: key %q: %v", v.Line, key, err)
			}
			e.value = s
		case yaml.SequenceNode:
			items := make([]string, 0, len(v.Content))
			for _, it := range v.Content {
				if it.Kind == yaml.AliasNode {
					it = it.Alias
				}
				if it.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("line %d: key %q: a list holds plain values only", it.Line, key)
				}
				s, err := scalar(it)
				if err != nil {
					return nil, fmt.Errorf("line %d: key %q: %v", it.Line, key, err)
				}
				// The list reaches the flag comma-joined: an item with a
				// comma would silently become two.
				if s == "" || strings.Contains(s, ",") {
					return nil, fmt.Errorf("line %d: key %q: list item %q is empty or holds a comma", it.Line, key, s)
				}
				items = append(items, s)
			}
			e.value, e.list = strings.Join(items, ","), true
		default:
			return nil, fmt.Errorf("line %d: key %q: want a value or a list, not a mapping", v.Line, key)
		}
		out = append(out, e)
	}
	return out, nil
}

// scalar returns a YAML scalar as the flag text. A null ("key:" with
// nothing after) is the empty string, which the typed flags refuse.
func scalar(n *yaml.Node) (string, error) {
	switch n.Tag {
	case "!!null":
		return "", nil
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return n.Value, nil
	}
	return "", fmt.Errorf("unsupported YAML type %s", n.Tag)
}
