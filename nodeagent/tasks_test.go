package nodeagent

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestSetResultCoversTheOneof: every message of TaskResult's oneof result
// lands in its own case (the oneof is walked by reflection, so a new case
// is checked without a change here), and any other message is refused.
func TestSetResultCoversTheOneof(t *testing.T) {
	oneof := (&agentpb.TaskResult{}).ProtoReflect().Descriptor().Oneofs().ByName("result")
	fields := oneof.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		res := &agentpb.TaskResult{}
		msg := res.ProtoReflect().NewField(fd).Message().Interface()
		if err := setResult(res, msg); err != nil {
			t.Errorf("%s: %v", fd.Name(), err)
			continue
		}
		m := res.ProtoReflect()
		if got := m.WhichOneof(oneof); got == nil || got.Name() != fd.Name() {
			t.Errorf("%T landed in %v, want %s", msg, got, fd.Name())
		} else if m.Get(got).Message().Interface() != msg {
			t.Errorf("%s: the message was not kept", fd.Name())
		}
	}

	res := &agentpb.TaskResult{}
	if err := setResult(res, &agentpb.PingAction{}); err == nil || res.GetResult() != nil {
		t.Errorf("a message outside the oneof: %v, result %v", err, res.GetResult())
	}
	for _, none := range []proto.Message{nil, (*agentpb.ZoneResult)(nil)} {
		if err := setResult(res, none); err != nil || res.GetResult() != nil {
			t.Errorf("no result (%T): %v, result %v", none, err, res.GetResult())
		}
	}
}
