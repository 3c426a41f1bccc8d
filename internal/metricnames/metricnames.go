// Package metricnames reads deploy/prometheus/metrics.txt, the list of metric
// family names nPanel exports. The dashboards and alert rules in deploy/ are
// checked against that list, so it must stay equal to what the agent's and
// the server's registries really gather.
package metricnames

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// validName is Prometheus's metric name syntax.
var validName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// Parse reads one name per line; blank lines and lines starting with '#' are
// skipped. It fails on an invalid name and on names that are not strictly
// ascending (byte order), so the file has one canonical form and a diff shows
// exactly which family appeared or vanished.
func Parse(r io.Reader) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !validName.MatchString(line) {
			return nil, fmt.Errorf("line %d: %q is not a metric name", n, line)
		}
		if k := len(names); k > 0 && line <= names[k-1] {
			if line == names[k-1] {
				return nil, fmt.Errorf("line %d: %q listed twice", n, line)
			}
			return nil, fmt.Errorf("line %d: %q sorts before %q", n, line, names[k-1])
		}
		names = append(names, line)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return names, nil
}

// ReadFile parses the list at path.
func ReadFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return names, nil
}
