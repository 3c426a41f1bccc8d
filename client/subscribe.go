package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// Subscribe runs a GraphQL subscription over the graphql-transport-ws
// protocol and delivers each result's "data" until ctx ends or the server
// completes the subscription, then closes the channel. The token travels in
// the connection_init payload, as browsers must send it.
func (c *Client) Subscribe(ctx context.Context, query string, vars map[string]any) (<-chan json.RawMessage, error) {
	u := "ws" + strings.TrimPrefix(c.url, "http")
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPHeader:   http.Header{},
		HTTPClient:   c.ws,
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	init := map[string]any{"type": "connection_init"}
	if c.token != "" {
		init["payload"] = map[string]string{"Authorization": "Bearer " + c.token}
	}
	if err := wsjson.Write(ctx, conn, init); err != nil {
		conn.CloseNow()
		return nil, err
	}
	var ack struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := wsjson.Read(ctx, conn, &ack); err != nil {
		conn.CloseNow()
		return nil, fmt.Errorf("connection_init: %w", err)
	}
	if ack.Type != "connection_ack" {
		conn.CloseNow()
		return nil, fmt.Errorf("connection_init answered %q: %s", ack.Type, ack.Payload)
	}
	sub := map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": query, "variables": vars}}
	if err := wsjson.Write(ctx, conn, sub); err != nil {
		conn.CloseNow()
		return nil, err
	}
	out := make(chan json.RawMessage, 16)
	go func() {
		defer close(out)
		defer conn.CloseNow()
		for {
			var msg struct {
				Type    string          `json:"type"`
				Payload json.RawMessage `json:"payload"`
			}
			if err := wsjson.Read(ctx, conn, &msg); err != nil {
				return
			}
			switch msg.Type {
			case "next":
				var r gqlResponse
				if json.Unmarshal(msg.Payload, &r) != nil || len(r.Errors) > 0 {
					return
				}
				select {
				case out <- r.Data:
				case <-ctx.Done():
					return
				}
			case "ping":
				_ = wsjson.Write(ctx, conn, map[string]string{"type": "pong"})
			case "error", "complete":
				return
			}
		}
	}()
	return out, nil
}
