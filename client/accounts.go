package client

import (
	"context"
	"time"
)

// Plan mirrors the GraphQL Plan type.
type Plan struct {
	Name        string   `json:"name"`
	DiskMB      int64    `json:"diskMB"`
	BandwidthMB int64    `json:"bandwidthMB"`
	Domains     int      `json:"domains"`
	Mailboxes   int      `json:"mailboxes"`
	Databases   int      `json:"databases"`
	PHPVersions []string `json:"phpVersions"`
	AllowExec   bool     `json:"allowExec"`
	Owner       *string  `json:"owner"`
	// Backup is filled by the calls that ask for it (SetPlanBackup,
	// PlanBackup).
	Backup *PlanBackup `json:"backup,omitempty"`
}

// Reseller mirrors the GraphQL Reseller type.
type Reseller struct {
	Name         string   `json:"name"`
	MaxAccounts  int      `json:"maxAccounts"`
	MaxDiskMB    int64    `json:"maxDiskMB"`
	Plans        []string `json:"plans"`
	NodeSelector string   `json:"nodeSelector"`
	Usage        struct {
		Accounts int   `json:"accounts"`
		DiskMB   int64 `json:"diskMB"`
	} `json:"usage"`
}

// AccountEvent is one lifecycle transition.
type AccountEvent struct {
	At     time.Time `json:"at"`
	Status string    `json:"status"`
	Reason *string   `json:"reason"`
}

// Account mirrors the GraphQL Account type.
type Account struct {
	ID        string                 `json:"id"`
	Username  string                 `json:"username"`
	Domain    string                 `json:"domain"`
	Status    string                 `json:"status"`
	Reason    *string                `json:"reason"`
	Suspended bool                   `json:"suspended"`
	Node      *struct{ Name string } `json:"node"`
	Plan      struct{ Name string }  `json:"plan"`
	Owner     struct{ Name string }  `json:"owner"`
	Events    []AccountEvent         `json:"events"`
	CreatedAt time.Time              `json:"createdAt"`
}

// NodeName is the account's node, or "".
func (a *Account) NodeName() string {
	if a.Node == nil {
		return ""
	}
	return a.Node.Name
}

const planFields = `name diskMB bandwidthMB domains mailboxes databases phpVersions allowExec owner`
const resellerFields = `name maxAccounts maxDiskMB plans nodeSelector usage{accounts diskMB}`

// AccountFields is the selection the client reads for an account.
const AccountFields = `id username domain status reason suspended node{name} plan{name} owner{name} events{at status reason} createdAt`

// CreatePlan creates a plan.
func (c *Client) CreatePlan(ctx context.Context, p Plan) (*Plan, error) {
	var out struct{ CreatePlan Plan }
	err := c.Do(ctx, `mutation($i:CreatePlanInput!){createPlan(input:$i){`+planFields+`}}`, map[string]any{"i": map[string]any{
		"name": p.Name, "diskMB": p.DiskMB, "bandwidthMB": p.BandwidthMB, "domains": p.Domains,
		"mailboxes": p.Mailboxes, "databases": p.Databases, "phpVersions": nonNil(p.PHPVersions),
		"allowExec": p.AllowExec,
	}}, &out)
	return &out.CreatePlan, err
}

// Plans lists the plans the caller may use.
func (c *Client) Plans(ctx context.Context) ([]Plan, error) {
	var out struct{ Plans []Plan }
	err := c.Do(ctx, `{plans{`+planFields+`}}`, nil, &out)
	return out.Plans, err
}

// CreateReseller creates a reseller and its login.
func (c *Client) CreateReseller(ctx context.Context, name, password string, maxAccounts int, maxDiskMB int64, plans []string, selector string) (*Reseller, error) {
	var out struct{ CreateReseller Reseller }
	err := c.Do(ctx, `mutation($i:CreateResellerInput!){createReseller(input:$i){`+resellerFields+`}}`, map[string]any{"i": map[string]any{
		"name": name, "password": password, "maxAccounts": maxAccounts, "maxDiskMB": maxDiskMB,
		"plans": nonNil(plans), "nodeSelector": selector,
	}}, &out)
	return &out.CreateReseller, err
}

// Resellers lists resellers.
func (c *Client) Resellers(ctx context.Context) ([]Reseller, error) {
	var out struct{ Resellers []Reseller }
	err := c.Do(ctx, `{resellers{`+resellerFields+`}}`, nil, &out)
	return out.Resellers, err
}

// CreateUser creates an account owner's login.
func (c *Client) CreateUser(ctx context.Context, name, password, account string) error {
	return c.Do(ctx, `mutation($i:CreateUserInput!){createUser(input:$i){name}}`,
		map[string]any{"i": map[string]any{"name": name, "password": password, "account": account}}, nil)
}

// CreateAccountInput is createAccount's input; Owner and Node are optional.
type CreateAccountInput struct {
	Username string `json:"username"`
	Domain   string `json:"domain"`
	Plan     string `json:"plan"`
	Owner    string `json:"owner,omitempty"`
	Node     string `json:"node,omitempty"`
}

// CreateAccount creates an account.
func (c *Client) CreateAccount(ctx context.Context, in CreateAccountInput) (*Account, error) {
	var out struct{ CreateAccount Account }
	err := c.Do(ctx, `mutation($i:CreateAccountInput!){createAccount(input:$i){`+AccountFields+`}}`, map[string]any{"i": in}, &out)
	return &out.CreateAccount, err
}

// Account returns one account by id or username, nil if not visible.
func (c *Client) Account(ctx context.Context, ref string) (*Account, error) {
	var out struct{ ByID, ByName *Account }
	err := c.Do(ctx, `query($r:ID!,$n:String!){byID:account(id:$r){`+AccountFields+`} byName:account(username:$n){`+AccountFields+`}}`,
		map[string]any{"r": ref, "n": ref}, &out)
	if out.ByID != nil {
		return out.ByID, err
	}
	return out.ByName, err
}

// AccountFilter selects accounts in Accounts.
type AccountFilter struct {
	Status string `json:"status,omitempty"`
	Node   string `json:"node,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Search string `json:"search,omitempty"`
}

// Accounts returns one page of accounts and the cursor for the next ("" at the end).
func (c *Client) Accounts(ctx context.Context, f AccountFilter, first int, after string) ([]Account, string, error) {
	var out struct {
		Accounts struct {
			Edges []struct {
				Node Account `json:"node"`
			} `json:"edges"`
			PageInfo struct {
				HasNextPage bool    `json:"hasNextPage"`
				EndCursor   *string `json:"endCursor"`
			} `json:"pageInfo"`
		}
	}
	vars := map[string]any{"f": f, "n": first}
	if after != "" {
		vars["a"] = after
	}
	err := c.Do(ctx, `query($f:AccountFilter,$n:Int,$a:String){accounts(filter:$f,first:$n,after:$a){edges{node{`+AccountFields+`}} pageInfo{hasNextPage endCursor}}}`, vars, &out)
	if err != nil {
		return nil, "", err
	}
	accts := make([]Account, 0, len(out.Accounts.Edges))
	for _, e := range out.Accounts.Edges {
		accts = append(accts, e.Node)
	}
	next := ""
	if out.Accounts.PageInfo.HasNextPage && out.Accounts.PageInfo.EndCursor != nil {
		next = *out.Accounts.PageInfo.EndCursor
	}
	return accts, next, nil
}

// AccountAction runs suspendAccount, unsuspendAccount or deleteAccount.
func (c *Client) AccountAction(ctx context.Context, mutation, id string) (*Account, error) {
	var out map[string]Account
	err := c.Do(ctx, `mutation($id:ID!){r:`+mutation+`(id:$id){`+AccountFields+`}}`, map[string]any{"id": id}, &out)
	a := out["r"]
	return &a, err
}

// SetDraining drains or undrains a node.
func (c *Client) SetDraining(ctx context.Context, node string, draining bool) error {
	m := "undrainNode"
	if draining {
		m = "drainNode"
	}
	return c.Do(ctx, `mutation($n:String!){`+m+`(name:$n){name}}`, map[string]any{"n": node}, nil)
}

// APIToken mirrors the GraphQL APIToken type.
type APIToken struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expiresAt"`
	CreatedAt time.Time  `json:"createdAt"`
}

// CreateAPIToken returns the secret token and its record.
func (c *Client) CreateAPIToken(ctx context.Context, name string, expires *time.Time) (string, *APIToken, error) {
	var out struct {
		CreateAPIToken struct {
			Token    string   `json:"token"`
			APIToken APIToken `json:"apiToken"`
		}
	}
	err := c.Do(ctx, `mutation($n:String!,$e:Time){createAPIToken(name:$n,expiresAt:$e){token apiToken{id name expiresAt createdAt}}}`,
		map[string]any{"n": name, "e": expires}, &out)
	return out.CreateAPIToken.Token, &out.CreateAPIToken.APIToken, err
}

// APITokens lists the caller's tokens.
func (c *Client) APITokens(ctx context.Context) ([]APIToken, error) {
	var out struct{ APITokens []APIToken }
	err := c.Do(ctx, `{apiTokens{id name expiresAt createdAt}}`, nil, &out)
	return out.APITokens, err
}

// RevokeAPIToken revokes a token.
func (c *Client) RevokeAPIToken(ctx context.Context, id string) error {
	return c.Do(ctx, `mutation($id:ID!){revokeAPIToken(id:$id)}`, map[string]any{"id": id}, nil)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
