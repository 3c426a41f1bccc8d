package dnszone

import (
	"slices"
	"testing"
)

func TestPublishableDS(t *testing.T) {
	in := []string{
		"example.com. IN DS 12345 13 1 8b1ee4f5c1e2c0a1f9e0d1c2b3a4958677665544",
		"example.com. IN DS 12345 13 2 a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
		"example.com. IN DS 12345 13 4 0011223344556677889900112233445566778899001122334455667788990011223344556677889900112233445566",
		"12345 13 2 ffee",
		"garbage",
	}
	want := []string{in[1], in[2], in[3]}
	if got := PublishableDS(in); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
