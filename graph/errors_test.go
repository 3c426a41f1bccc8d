package graph

import (
	"errors"
	"fmt"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// A conflict that passes is answered as any conflict, with its message
// and without the sentinel, and can still be told apart by callers that
// wait.
func TestClassifyNotYet(t *testing.T) {
	err := fmt.Errorf("account alice is not placed on a node yet: %w", store.ErrNotYet)
	code, msg := classify(err)
	if code != CodeConflict || msg != "account alice is not placed on a node yet" {
		t.Fatalf("classify: %s %q", code, msg)
	}
	if !errors.Is(err, store.ErrNotYet) || !errors.Is(err, store.ErrConflict) {
		t.Fatal("ErrNotYet is not both itself and a conflict")
	}
	if errors.Is(fmt.Errorf("plan exists: %w", store.ErrConflict), store.ErrNotYet) {
		t.Fatal("a lasting conflict reads as one that passes")
	}
}
