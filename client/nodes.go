package client

import "context"

// NodeUpdate is updateNode's input: nil fields stay as they are; Labels,
// when set, replaces every label, Roles every role.
type NodeUpdate struct {
	Labels      map[string]string
	Roles       []string
	MaxAccounts *int
	DiskMB      *int64
}

// UpdateNode changes a node's labels, roles or capacity.
func (c *Client) UpdateNode(ctx context.Context, name string, in NodeUpdate) (*Node, error) {
	input := map[string]any{}
	if in.Labels != nil {
		labels := make([]Label, 0, len(in.Labels))
		for k, v := range in.Labels {
			labels = append(labels, Label{Key: k, Value: v})
		}
		input["labels"] = labels
	}
	if in.Roles != nil {
		input["roles"] = in.Roles
	}
	if in.MaxAccounts != nil || in.DiskMB != nil {
		capacity := map[string]any{}
		if in.MaxAccounts != nil {
			capacity["maxAccounts"] = *in.MaxAccounts
		}
		if in.DiskMB != nil {
			capacity["diskMB"] = *in.DiskMB
		}
		input["capacity"] = capacity
	}
	var out struct{ UpdateNode Node }
	err := c.Do(ctx, `mutation($n:String!,$i:UpdateNodeInput!){updateNode(name:$n,input:$i){`+nodeFields+`}}`,
		map[string]any{"n": name, "i": input}, &out)
	return &out.UpdateNode, err
}
