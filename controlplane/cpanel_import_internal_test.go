package controlplane

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/validate"
)

func TestRehomeZoneText(t *testing.T) {
	text := "; cPanel\n$TTL 14400\nex.com.\t86400\tIN\tSOA\tns1.host.example.\thostmaster.ex.com. ( 2026061201 3600 1800 1209600 86400 )\n" +
		"ex.com.\t14400\tIN\tA\t192.0.2.10\nmail\tIN\tA\t192.0.2.10 ; mail\ncdn\tIN\tA\t198.51.100.7\n\tIN\tA\t192.0.2.10\nwww\tIN\tCNAME\tex.com.\n"
	got, note := rehomeZoneText("ex.com", text, "203.0.113.5")
	if strings.Contains(got, "192.0.2.10") || !strings.Contains(got, "198.51.100.7") || strings.Count(got, "203.0.113.5") != 3 ||
		!strings.Contains(got, "; mail") || !strings.Contains(got, "\n\tIN\tA\t203.0.113.5") {
		t.Fatalf("rehomed:\n%s", got)
	}
	if !strings.Contains(note, "3 A records") || !strings.Contains(note, "192.0.2.10") {
		t.Errorf("note: %q", note)
	}
	for _, c := range []struct{ text, addr string }{
		{text, "not an address"},
		{text, "192.0.2.10"},
		{"www\tIN\tCNAME\tex.com.\n", "203.0.113.5"},
	} {
		if got, note := rehomeZoneText("ex.com", c.text, c.addr); got != c.text || note != "" {
			t.Errorf("%q with %s: changed to %q (%q)", c.text, c.addr, got, note)
		}
	}
}

// FuzzRehomeZoneText: the rewrite never adds or drops a line, and only
// ever changes lines to name the node's address.
func FuzzRehomeZoneText(f *testing.F) {
	f.Add("ex.com.\tIN\tA\t192.0.2.10\nmail\tIN\tA\t192.0.2.10 ; c\n\tIN\tA\t192.0.2.10\n")
	f.Add("$ORIGIN ex.com.\n@ 300 IN A 10.0.0.1\nwww IN CNAME @\n")
	f.Add("@ IN AAAA 2001:db8::1\n")
	f.Fuzz(func(t *testing.T, text string) {
		got, note := rehomeZoneText("ex.com", text, "203.0.113.5")
		if note == "" && got != text {
			t.Fatalf("changed without a note: %q -> %q", text, got)
		}
		in, out := strings.Split(text, "\n"), strings.Split(got, "\n")
		if len(in) != len(out) {
			t.Fatalf("%d lines became %d", len(in), len(out))
		}
		for i := range in {
			if in[i] != out[i] && !strings.Contains(out[i], "203.0.113.5") {
				t.Fatalf("line %q became %q", in[i], out[i])
			}
		}
	})
}

// An item refused for good is reported FAILED; a conflict that passes
// (the account not placed yet, a change still being applied) is tried
// again, whatever its words.
func TestImportPermanent(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("database alice_shop exists: %w", store.ErrConflict), true},
		{fmt.Errorf("plan limit: %w", store.ErrQuotaExceeded), true},
		{&validate.Error{Field: "to", Reason: "a loop"}, true},
		{fmt.Errorf("account alice is not placed on a node yet: %w", store.ErrNotYet), false},
		{fmt.Errorf("the DNS zone is being removed (say it again later): %w", store.ErrNotYet), false},
		{errors.New("etcd: request timed out"), false},
	} {
		if got := permanent(c.err); got != c.want {
			t.Errorf("permanent(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
