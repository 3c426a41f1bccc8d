package client

import "context"

// PlanUpdate is updatePlan's input: nil fields stay as they are.
type PlanUpdate struct {
	DiskMB      *int64   `json:"diskMB,omitempty"`
	BandwidthMB *int64   `json:"bandwidthMB,omitempty"`
	Domains     *int     `json:"domains,omitempty"`
	Mailboxes   *int     `json:"mailboxes,omitempty"`
	Databases   *int     `json:"databases,omitempty"`
	PHPVersions []string `json:"phpVersions,omitempty"`
	AllowExec   *bool    `json:"allowExec,omitempty"`
}

// UpdatePlan changes a plan; the accounts on it follow.
func (c *Client) UpdatePlan(ctx context.Context, name string, in PlanUpdate) (*Plan, error) {
	var out struct{ UpdatePlan Plan }
	err := c.Do(ctx, `mutation($n:String!,$i:UpdatePlanInput!){updatePlan(name:$n,input:$i){`+planFields+`}}`,
		map[string]any{"n": name, "i": in}, &out)
	return &out.UpdatePlan, err
}

// DeletePlan deletes a plan no account uses.
func (c *Client) DeletePlan(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){deletePlan(name:$n)}`, map[string]any{"n": name}, nil)
}

// Plan returns one plan the caller may use, nil if none.
func (c *Client) Plan(ctx context.Context, name string) (*Plan, error) {
	var out struct{ Plan *Plan }
	err := c.Do(ctx, `query($n:String!){plan(name:$n){`+planFields+`}}`, map[string]any{"n": name}, &out)
	return out.Plan, err
}

// ResellerUpdate is updateReseller's input: nil fields stay as they are.
type ResellerUpdate struct {
	MaxAccounts  *int     `json:"maxAccounts,omitempty"`
	MaxDiskMB    *int64   `json:"maxDiskMB,omitempty"`
	Plans        []string `json:"plans,omitempty"`
	NodeSelector *string  `json:"nodeSelector,omitempty"`
}

// UpdateReseller changes a reseller's limits, plans or node selector.
func (c *Client) UpdateReseller(ctx context.Context, name string, in ResellerUpdate) (*Reseller, error) {
	var out struct{ UpdateReseller Reseller }
	err := c.Do(ctx, `mutation($n:String!,$i:UpdateResellerInput!){updateReseller(name:$n,input:$i){`+resellerFields+`}}`,
		map[string]any{"n": name, "i": in}, &out)
	return &out.UpdateReseller, err
}

// DeleteReseller deletes a reseller that owns no accounts.
func (c *Client) DeleteReseller(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){deleteReseller(name:$n)}`, map[string]any{"n": name}, nil)
}

// Reseller returns one reseller, nil if not visible.
func (c *Client) Reseller(ctx context.Context, name string) (*Reseller, error) {
	var out struct{ Reseller *Reseller }
	err := c.Do(ctx, `query($n:String!){reseller(name:$n){`+resellerFields+`}}`, map[string]any{"n": name}, &out)
	return out.Reseller, err
}

// ChangeAccountPlan moves an account (id or username) to another plan.
func (c *Client) ChangeAccountPlan(ctx context.Context, account, plan string) (*Account, error) {
	var out struct{ ChangeAccountPlan Account }
	err := c.Do(ctx, `mutation($a:String!,$p:String!){changeAccountPlan(account:$a,plan:$p){`+AccountFields+`}}`,
		map[string]any{"a": account, "p": plan}, &out)
	return &out.ChangeAccountPlan, err
}

// ChangeAccountOwner gives an account (id or username) to another owner.
func (c *Client) ChangeAccountOwner(ctx context.Context, account, owner string) (*Account, error) {
	var out struct{ ChangeAccountOwner Account }
	err := c.Do(ctx, `mutation($a:String!,$o:String!){changeAccountOwner(account:$a,owner:$o){`+AccountFields+`}}`,
		map[string]any{"a": account, "o": owner}, &out)
	return &out.ChangeAccountOwner, err
}
