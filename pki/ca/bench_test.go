package ca

import (
	"context"
	"testing"

	"github.com/npanel/npanel/pki"
)

// BenchmarkEnroll measures what the gateway does for one agent: mint a token,
// build the CSR (key generated once, outside the loop, as the agent does it
// on its own machine) and Enroll.
func BenchmarkEnroll(b *testing.B) {
	ca, _ := newTestCA(b, 0)
	key, err := pki.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	used := newUsedTokens()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		tok, _, err := ca.NewJoinToken("web-1", nil, 0)
		if err != nil {
			b.Fatal(err)
		}
		csr, err := pki.NewNodeCSR(key, "web-1", nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := ca.Enroll(ctx, tok, csr, used.mark); err != nil {
			b.Fatal(err)
		}
	}
}
