package metricnames

import (
	"strings"
	"testing"
)

// listPath is the committed list, relative to this package's directory.
const listPath = "../../deploy/prometheus/metrics.txt"

func TestListIsSortedAndUnique(t *testing.T) {
	names, err := ReadFile(listPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("%s lists no metric", listPath)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		err      string
	}{
		{name: "comments and blanks", in: "# header\n\na_total\nb\n", want: []string{"a_total", "b"}},
		{name: "unsorted", in: "b\na\n", err: `"a" sorts before "b"`},
		{name: "duplicate", in: "a\na\n", err: `"a" listed twice`},
		{name: "invalid", in: "a-b\n", err: "not a metric name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse: err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Parse = %q, want %q", got, tc.want)
			}
		})
	}
}
