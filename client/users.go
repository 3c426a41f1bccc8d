package client

import "context"

// User mirrors the GraphQL User type.
type User struct {
	Name    string  `json:"name"`
	Role    string  `json:"role"`
	Account *string `json:"account"`
	Owner   *string `json:"owner"`
}

const userFields = `name role account owner`

// UserFilter selects users in Users; empty fields match all.
type UserFilter struct {
	Role    string `json:"role,omitempty"`
	Search  string `json:"search,omitempty"`
	Account string `json:"account,omitempty"`
}

// Me returns the caller.
func (c *Client) Me(ctx context.Context) (*User, error) {
	var out struct{ Me User }
	err := c.Do(ctx, `{me{name role account}}`, nil, &out)
	return &out.Me, err
}

// Users lists the users the caller manages.
func (c *Client) Users(ctx context.Context, f UserFilter) ([]User, error) {
	var out struct{ Users []User }
	err := c.Do(ctx, `query($f:UserFilter){users(filter:$f){`+userFields+`}}`, map[string]any{"f": f}, &out)
	return out.Users, err
}

// UpdateUser binds a USER login to another account (id or username).
func (c *Client) UpdateUser(ctx context.Context, name, account string) (*User, error) {
	var out struct{ UpdateUser User }
	err := c.Do(ctx, `mutation($n:String!,$i:UpdateUserInput!){updateUser(name:$n,input:$i){`+userFields+`}}`,
		map[string]any{"n": name, "i": map[string]any{"account": account}}, &out)
	return &out.UpdateUser, err
}

// DeleteUser deletes a login.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){deleteUser(name:$n)}`, map[string]any{"n": name}, nil)
}

// ResetPassword sets a user's password and revokes its sessions.
func (c *Client) ResetPassword(ctx context.Context, name, password string) (*User, error) {
	var out struct{ ResetPassword User }
	err := c.Do(ctx, `mutation($n:String!,$p:String!){resetPassword(name:$n,password:$p){`+userFields+`}}`,
		map[string]any{"n": name, "p": password}, &out)
	return &out.ResetPassword, err
}
