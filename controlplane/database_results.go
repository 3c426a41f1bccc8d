package controlplane

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// The agent's answers to database tasks, decoded into the protos/agentpb
// messages that document them. A result that does not decode is an error,
// never a zero value: a zero would pass for "no dump" or "0 tables".

var resultJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

func databaseResult(t *store.Task) (*agentpb.DatabaseResult, error) {
	res := &agentpb.DatabaseResult{}
	return res, decodeResult(t, res)
}

func listDatabasesResult(t *store.Task) (*agentpb.ListDatabasesResult, error) {
	res := &agentpb.ListDatabasesResult{}
	return res, decodeResult(t, res)
}

func decodeResult(t *store.Task, res proto.Message) error {
	if t.Result == "" {
		return fmt.Errorf("task %s (%s): %w", t.ID, t.Action, errNoResult)
	}
	if err := resultJSON.Unmarshal([]byte(t.Result), res); err != nil {
		return fmt.Errorf("task %s (%s): the node's result does not decode: %w", t.ID, t.Action, err)
	}
	return nil
}

var errNoResult = errors.New("the node sent no result")
