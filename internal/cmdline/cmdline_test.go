package cmdline

import (
	"errors"
	"fmt"
	"testing"
)

func TestIsUsage(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{Usagef("--server is required"), true},
		{fmt.Errorf("start: %w", Usagef("bad")), true},
		{errors.New("unknown flag: --bogus"), true},
		{errors.New(`accepts 1 arg(s), received 2`), true},
		{errors.New("connection refused"), false},
	} {
		if got := IsUsage(tt.err); got != tt.want {
			t.Errorf("IsUsage(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" a, b,,c ,")
	if fmt.Sprint(got) != "[a b c]" {
		t.Errorf("SplitList = %q", got)
	}
	if SplitList("") != nil {
		t.Error("SplitList of nothing is not empty")
	}
}
