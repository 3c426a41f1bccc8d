package ping

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		act     Action
		wantErr string
	}{
		{name: "empty", act: Action{}},
		{name: "payload at limit", act: Action{Payload: strings.Repeat("x", MaxPayloadBytes)}},
		{name: "multibyte at limit", act: Action{Payload: strings.Repeat("é", MaxPayloadBytes/2)}},
		{name: "payload over limit", act: Action{Payload: strings.Repeat("x", MaxPayloadBytes+1)}, wantErr: "payload is 257 bytes"},
		// 129 two-byte runes: 129 characters but 258 bytes; the bound is bytes.
		{name: "multibyte over limit", act: Action{Payload: strings.Repeat("é", 129)}, wantErr: "at most 256"},
		{name: "invalid utf-8", act: Action{Payload: "ok\xff"}, wantErr: "not valid UTF-8"},
		{name: "truncated rune", act: Action{Payload: "\xe2\x82"}, wantErr: "not valid UTF-8"},
		{name: "delay at limit", act: Action{DelayMs: 10000}},
		{name: "delay over limit", act: Action{DelayMs: 10001}, wantErr: "delay_ms 10001 exceeds 10000"},
		{name: "delay max uint32", act: Action{DelayMs: ^uint32(0)}, wantErr: "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.act.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
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
	a := New(&agentpb.PingAction{Payload: "hi", DelayMs: 5})
	if a.Payload != "hi" || a.DelayMs != 5 || a.Name() != "ping" {
		t.Fatalf("New = %+v", a)
	}
	if got := New(nil); got.Payload != "" || got.DelayMs != 0 {
		t.Fatalf("New(nil) = %+v", got)
	}
}

func TestApply(t *testing.T) {
	env := &actions.Env{Node: "node-1", Logger: slog.New(slog.DiscardHandler)}
	before := time.Now()
	out, err := (&Action{Payload: "héllo", DelayMs: 20}).Apply(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(before) < 20*time.Millisecond {
		t.Error("Apply returned before the delay")
	}
	// The result is the protobuf message the control plane reads.
	got, ok := out.(*agentpb.PingResult)
	if !ok {
		t.Fatalf("result is %T, want *agentpb.PingResult", out)
	}
	if got.GetPayload() != "héllo" || got.GetNode() != "node-1" || got.GetAgentUnixNano() < before.UnixNano() {
		t.Fatalf("result %v", got)
	}
}

func TestApplyRespectsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&Action{DelayMs: 10000}).Apply(ctx, &actions.Env{Node: "n", Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply = %v, want deadline exceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Apply ignored the context")
	}
}

func FuzzPingValidate(f *testing.F) {
	f.Add("", uint32(0))
	f.Add("hello", uint32(10000))
	f.Add(strings.Repeat("x", 257), uint32(1))
	f.Add("\xff", uint32(10001))
	f.Fuzz(func(t *testing.T, payload string, delayMs uint32) {
		err := (&Action{Payload: payload, DelayMs: delayMs}).Validate()
		want := len(payload) <= MaxPayloadBytes && utf8.ValidString(payload) && delayMs <= 10000
		if (err == nil) != want {
			t.Fatalf("Validate(%q, %d) = %v, want ok=%v", payload, delayMs, err, want)
		}
	})
}
