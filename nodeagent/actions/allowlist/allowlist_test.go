package allowlist

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions/ping"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestFromTaskPing(t *testing.T) {
	act, err := FromTask(&agentpb.Task{Id: "t1", Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "x", DelayMs: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := act.(*ping.Action)
	if !ok || p.Payload != "x" || p.DelayMs != 3 {
		t.Fatalf("FromTask = %#v", act)
	}
}

func TestFromTaskNoAction(t *testing.T) {
	_, err := FromTask(&agentpb.Task{Id: "t1"})
	if !errors.Is(err, ErrNoAction) || !strings.Contains(err.Error(), "no action") {
		t.Fatalf("FromTask(empty) = %v", err)
	}
}

// An action added to the protocol later arrives as a field this agent's
// generated code does not know.
func TestFromTaskUnknownAction(t *testing.T) {
	wire, err := proto.Marshal(&agentpb.Task{Id: "t1", Generation: 4})
	if err != nil {
		t.Fatal(err)
	}
	wire = protowire.AppendTag(wire, 99, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte{0x0a, 0x01, 'x'})
	var task agentpb.Task
	if err := proto.Unmarshal(wire, &task); err != nil {
		t.Fatal(err)
	}
	_, err = FromTask(&task)
	if !errors.Is(err, ErrNoAction) || !strings.Contains(err.Error(), "unknown to this agent version") {
		t.Fatalf("FromTask(unknown) = %v", err)
	}
}

func TestFromTaskNil(t *testing.T) {
	if _, err := FromTask(nil); !errors.Is(err, ErrNoAction) {
		t.Fatalf("FromTask(nil) = %v", err)
	}
}
