package testenv

import (
	"testing"

	"github.com/npanel/npanel/internal/testenv/pebble"
)

// StartPebble starts Pebble, the ACME test server, for t (see package
// internal/testenv/pebble, which tests of the agent's own packages use
// directly: this package imports the agent).
func StartPebble(t testing.TB, opts pebble.Options) *pebble.Server {
	t.Helper()
	return pebble.Start(t, opts)
}
