package client

import (
	"context"
	"time"
)

// Node mirrors the GraphQL Node type.
type Node struct {
	Name            string     `json:"name"`
	Address         string     `json:"address"`
	Draining        bool       `json:"draining"`
	MaxAccounts     int        `json:"maxAccounts"`
	DiskMB          int64      `json:"diskMB"`
	Roles           []string   `json:"roles"`
	Labels          []Label    `json:"labels"`
	Status          string     `json:"status"`
	StatusChangedAt *time.Time `json:"statusChangedAt"`
	LastSeen        *time.Time `json:"lastSeen"`
	EnrolledAt      *time.Time `json:"enrolledAt"`
	AgentVersion    *string    `json:"agentVersion"`
	Capabilities    []string   `json:"capabilities"`
	OS              *string    `json:"os"`
	Capacity        struct {
		CPUs        int   `json:"cpus"`
		MemoryBytes int64 `json:"memoryBytes"`
		DiskBytes   int64 `json:"diskBytes"`
	} `json:"capacity"`
}

// Label is a node label.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Task mirrors the GraphQL Task type.
type Task struct {
	ID         string     `json:"id"`
	Node       string     `json:"node"`
	Action     string     `json:"action"`
	Status     string     `json:"status"`
	Result     *string    `json:"result"`
	Error      *string    `json:"error"`
	CreatedAt  time.Time  `json:"createdAt"`
	FinishedAt *time.Time `json:"finishedAt"`
}

// JoinToken is what createJoinToken returns.
type JoinToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

const nodeFields = `name address draining maxAccounts diskMB roles labels{key value} status statusChangedAt lastSeen enrolledAt agentVersion capabilities os capacity{cpus memoryBytes diskBytes}`

// Nodes lists the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out struct{ Nodes []Node }
	err := c.Do(ctx, `{nodes{`+nodeFields+`}}`, nil, &out)
	return out.Nodes, err
}

// Node returns one node, or nil if it does not exist.
func (c *Client) Node(ctx context.Context, name string) (*Node, error) {
	var out struct{ Node *Node }
	err := c.Do(ctx, `query($n:String!){node(name:$n){`+nodeFields+`}}`, map[string]any{"n": name}, &out)
	return out.Node, err
}

// CreateJoinToken declares a node and returns its join token.
func (c *Client) CreateJoinToken(ctx context.Context, name, address string, roles []string, labels map[string]string) (*JoinToken, error) {
	ls := []map[string]string{}
	for k, v := range labels {
		ls = append(ls, map[string]string{"key": k, "value": v})
	}
	var out struct{ CreateJoinToken JoinToken }
	err := c.Do(ctx, `mutation($i:CreateJoinTokenInput!){createJoinToken(input:$i){token expiresAt}}`,
		map[string]any{"i": map[string]any{"name": name, "address": address, "roles": roles, "labels": ls}}, &out)
	if err != nil {
		return nil, err
	}
	return &out.CreateJoinToken, nil
}

// RemoveNode removes a node from the cluster.
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){removeNode(name:$n)}`, map[string]any{"n": name}, nil)
}

// Ping runs the PING action on node and waits for its result.
func (c *Client) Ping(ctx context.Context, node, payload string, timeoutSeconds int) (*Task, error) {
	var out struct{ RunNodeAction Task }
	err := c.Do(ctx, `mutation($n:String!,$p:String,$t:Int){runNodeAction(node:$n,action:PING,payload:$p,timeoutSeconds:$t){id node action status result error createdAt finishedAt}}`,
		map[string]any{"n": node, "p": payload, "t": timeoutSeconds}, &out)
	if err != nil {
		return nil, err
	}
	return &out.RunNodeAction, nil
}
