package client

import "context"

// Logout revokes every login token of the caller, this client's included.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, `mutation{logout}`, nil, nil)
}

// RevokeSessions revokes every login token of user (admin).
func (c *Client) RevokeSessions(ctx context.Context, user string) error {
	return c.Do(ctx, `mutation($u:String!){revokeSessions(user:$u)}`, map[string]any{"u": user}, nil)
}

// ChangePassword sets the caller's password and returns a client with the
// new token (every earlier login token is revoked).
func (c *Client) ChangePassword(ctx context.Context, current, next string) (*Client, string, error) {
	var out struct {
		ChangePassword struct{ Token string }
	}
	err := c.Do(ctx, `mutation($c:String!,$n:String!){changePassword(currentPassword:$c,newPassword:$n){token}}`,
		map[string]any{"c": current, "n": next}, &out)
	if err != nil {
		return nil, "", err
	}
	return c.WithToken(out.ChangePassword.Token), out.ChangePassword.Token, nil
}

// Token is the bearer token the client sends, for other HTTP endpoints
// that want it (/metrics).
func (c *Client) Token() string { return c.token }
