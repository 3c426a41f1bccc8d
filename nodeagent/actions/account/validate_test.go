package account

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		act     actions.Action
		wantErr string
	}{
		{"ensure ok", &Ensure{Username: "alice", DiskQuotaMB: 1024}, ""},
		{"ensure suspended", &Ensure{Username: "alice2", Suspended: true}, ""},
		{"quota at limit", &Ensure{Username: "alice", DiskQuotaMB: 16 << 20}, ""},
		{"quota over limit", &Ensure{Username: "alice", DiskQuotaMB: 16<<20 + 1}, "exceeds 16777216"},
		{"quota max uint64", &Ensure{Username: "alice", DiskQuotaMB: ^uint64(0)}, "exceeds"},
		{"root", &Ensure{Username: "root"}, "reserved"},
		{"root delete", &Delete{Username: "root"}, "reserved"},
		{"www-data", &Ensure{Username: "www-data"}, "username"},
		{"www-data delete", &Delete{Username: "www-data"}, "username"},
		{"nobody", &Delete{Username: "nobody"}, "reserved"},
		{"nginx", &Ensure{Username: "nginx"}, "reserved"},
		{"test prefix", &Ensure{Username: validate.TestUserPrefix + "abc123"}, "reserved"},
		{"empty", &Ensure{}, "empty"},
		{"empty delete", &Delete{}, "empty"},
		{"option-like", &Ensure{Username: "-rf"}, "username"},
		{"path", &Delete{Username: "../etc"}, "username"},
		{"colon", &Ensure{Username: "a:b"}, "username"},
		{"upper", &Ensure{Username: "Alice"}, "uppercase"},
		{"too long", &Ensure{Username: "a" + strings.Repeat("b", 32)}, "at most 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.act.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewFromWire(t *testing.T) {
	e := testModule.NewEnsure(&agentpb.EnsureAccountAction{Username: "bob", DiskQuotaMb: 7, Suspended: true})
	if e.Username != "bob" || e.DiskQuotaMB != 7 || !e.Suspended || e.Name() != "ensure_account" {
		t.Fatalf("NewEnsure = %+v", e)
	}
	if d := testModule.NewDelete(&agentpb.DeleteAccountAction{Username: "bob"}); d.Username != "bob" || d.Name() != "delete_account" {
		t.Fatalf("NewDelete = %+v", d)
	}
	if e := testModule.NewEnsure(nil); e.Username != "" {
		t.Fatalf("NewEnsure(nil) = %+v", e)
	}
}

// Apply refuses what no valid name looks like even if Validate was skipped,
// and runs nothing without a profile.
func TestApplyGuards(t *testing.T) {
	env := &actions.Env{Logger: slog.New(slog.DiscardHandler), Profile: platform.Debian12(t.TempDir())}
	run := &CountingRunner{}
	for _, name := range []string{"", "-r", "a/b", "../x", "a b", "A", "a_b", strings.Repeat("a", 33)} {
		if _, err := WithRunner(&Ensure{Username: name}, run).Apply(context.Background(), env); err == nil {
			t.Errorf("Ensure.Apply(%q) succeeded", name)
		}
		if _, err := WithRunner(&Delete{Username: name}, run).Apply(context.Background(), env); err == nil {
			t.Errorf("Delete.Apply(%q) succeeded", name)
		}
	}
	if _, err := WithRunner(&Ensure{Username: "alice"}, run).Apply(context.Background(), &actions.Env{}); err == nil || !strings.Contains(err.Error(), "profile") {
		t.Errorf("Apply without profile = %v", err)
	}
	if c := run.Calls(); len(c) != 0 {
		t.Fatalf("guards ran %q", c)
	}
}
