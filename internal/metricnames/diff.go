package metricnames

import (
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// Diff compares the listed names with the families a registry gathered,
// looking only at gathered names that start with one of prefixes (so the Go
// runtime's and gRPC's families need not be listed). unlisted are gathered
// but missing from the list: a dashboard cannot use them yet. ungathered
// are listed but were not gathered: renamed or removed, or a vector that had
// no child when gathered, so a caller exercises the code first. Both sorted.
func Diff(listed []string, families []*dto.MetricFamily, prefixes ...string) (unlisted, ungathered []string) {
	gathered := map[string]bool{}
	for _, f := range families {
		gathered[f.GetName()] = true
	}
	for name := range gathered {
		if !slices.Contains(listed, name) && slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			unlisted = append(unlisted, name)
		}
	}
	for _, name := range listed {
		if !gathered[name] {
			ungathered = append(ungathered, name)
		}
	}
	slices.Sort(unlisted)
	return unlisted, ungathered
}
