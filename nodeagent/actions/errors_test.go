package actions

import (
	"errors"
	"fmt"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

func TestReasonOf(t *testing.T) {
	sentinel := Fail(agentpb.ErrorReason_ERROR_REASON_TOO_EARLY, "step too early")
	for _, tc := range []struct {
		name string
		err  error
		want agentpb.ErrorReason
	}{
		{"plain error", errors.New("disk full"), agentpb.ErrorReason_ERROR_REASON_INTERNAL},
		{"fail", Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %q exists", "bob"), agentpb.ErrorReason_ERROR_REASON_CONFLICT},
		{"wrapped sentinel", fmt.Errorf("rotate keys of a.com: %w: wait 5s", sentinel), agentpb.ErrorReason_ERROR_REASON_TOO_EARLY},
		{"with reason", WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, errors.New("connection refused")), agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE},
		{"inner reason kept", WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("x: %w", sentinel)), agentpb.ErrorReason_ERROR_REASON_TOO_EARLY},
		{"unspecified is internal", Fail(agentpb.ErrorReason_ERROR_REASON_UNSPECIFIED, "?"), agentpb.ErrorReason_ERROR_REASON_INTERNAL},
	} {
		if got := ReasonOf(tc.err); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := fmt.Errorf("ctx: %w", sentinel); !errors.Is(err, sentinel) || err.Error() != "ctx: step too early" {
		t.Errorf("sentinel lost through wrapping: %v", err)
	}
	inner := errors.New("inner")
	if err := Fail(agentpb.ErrorReason_ERROR_REASON_INTERNAL, "outer: %w", inner); !errors.Is(err, inner) {
		t.Error("Fail does not wrap its %w argument")
	}
	if WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, nil) != nil {
		t.Error("WithReason(nil) is not nil")
	}
}
