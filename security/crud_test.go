package security

import (
	"context"
	"testing"

	"github.com/npanel/npanel/client"
)

// crudVectors attack the update and delete mutations: another tenant's
// plan, login and account, and what only an admin may change. Each is
// refused and changes nothing.
func crudVectors() []vector {
	ctx := context.Background()
	ptrInt := func(v int) *int { return &v }
	vs := []vector{
		refused("reseller updates other reseller's plan", "reseller A raises the quotas of B's own plan",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.UpdatePlan(ctx, "bplan", client.PlanUpdate{Domains: ptrInt(1000)})
				return err
			}, "NOT_FOUND"),
		refused("reseller deletes other reseller's plan", "reseller A deletes B's own plan",
			func(t *testing.T, c *cluster) error { return c.resA.DeletePlan(ctx, "bplan") }, "NOT_FOUND"),
		refused("reseller changes the admin plan", "reseller A changes the admin plan it sells, for every reseller",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.UpdatePlan(ctx, planName, client.PlanUpdate{Domains: ptrInt(1000)})
				return err
			}, "FORBIDDEN"),
		refused("reseller grants exec through a plan change", "reseller A turns allowExec on in its own plan",
			func(t *testing.T, c *cluster) error {
				allow := true
				_, err := c.resA.UpdatePlan(ctx, planName, client.PlanUpdate{AllowExec: &allow})
				return err
			}, "FORBIDDEN"),
		refused("reseller resets other reseller's user's password", "reseller A sets the password of B's account owner (takeover)",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.ResetPassword(ctx, "secuserb1", "takeover-password-123")
				return err
			}, "NOT_FOUND"),
		refused("reseller resets other reseller's password", "reseller A sets reseller B's password",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.ResetPassword(ctx, "secresb", "takeover-password-123")
				return err
			}, "NOT_FOUND"),
		refused("reseller resets the admin's password", "reseller A sets the admin's password",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.ResetPassword(ctx, "admin", "takeover-password-123")
				return err
			}, "NOT_FOUND"),
		refused("reseller deletes other reseller's user", "reseller A deletes B's account owner",
			func(t *testing.T, c *cluster) error { return c.resA.DeleteUser(ctx, "secuserb1") }, "NOT_FOUND"),
		refused("reseller rebinds other reseller's user", "reseller A binds B's account owner to one of A's accounts",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.UpdateUser(ctx, "secuserb1", c.a1.ID)
				return err
			}, "NOT_FOUND"),
		refused("reseller binds its user to other reseller's account", "reseller A binds its account owner to B's account",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.UpdateUser(ctx, "secusera1", c.b1.ID)
				return err
			}, "NOT_FOUND"),
		refused("reseller moves other reseller's account", "reseller A changes the plan of B's account",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.ChangeAccountPlan(ctx, c.b1.ID, planName)
				return err
			}, "NOT_FOUND"),
		refused("reseller moves its account to other reseller's plan", "reseller A moves its account to B's own plan",
			func(t *testing.T, c *cluster) error {
				_, err := c.resA.ChangeAccountPlan(ctx, c.a1.ID, "bplan")
				return err
			}, "NOT_FOUND"),
		refused("account user resets a password", "an account owner sets another login's password",
			func(t *testing.T, c *cluster) error {
				_, err := c.a1.owner.ResetPassword(ctx, "secresa", "takeover-password-123")
				return err
			}, "FORBIDDEN"),
		refused("account user changes its plan", "an account owner moves its account to another plan",
			func(t *testing.T, c *cluster) error {
				_, err := c.a1.owner.ChangeAccountPlan(ctx, c.a1.ID, "bplan")
				return err
			}, "FORBIDDEN"),
		refused("account user lists users with a filter", "an account owner lists the users of its account",
			func(t *testing.T, c *cluster) error {
				_, err := c.a1.owner.Users(ctx, client.UserFilter{Account: c.a1.ID})
				return err
			}, "FORBIDDEN"),
		hidden("reseller filters users by other reseller's account", "reseller A asks users(filter:{account}) of B's account",
			func(t *testing.T, c *cluster) (bool, error) {
				us, err := c.resA.Users(ctx, client.UserFilter{Account: c.b1.ID})
				return len(us) > 0, err
			}),
	}
	adminOnly := []struct {
		name string
		call func(*client.Client) error
	}{
		{"updateReseller", func(cl *client.Client) error {
			_, err := cl.UpdateReseller(ctx, "secresa", client.ResellerUpdate{MaxAccounts: ptrInt(100000)})
			return err
		}},
		{"deleteReseller", func(cl *client.Client) error { return cl.DeleteReseller(ctx, "secresb") }},
		{"changeAccountOwner", func(cl *client.Client) error {
			return cl.Do(ctx, `mutation{changeAccountOwner(account:"secuserb1-account",owner:"secresa"){id}}`, nil, nil)
		}},
		{"updateNode", func(cl *client.Client) error {
			_, err := cl.UpdateNode(ctx, "node-a", client.NodeUpdate{Roles: []string{"WEB"}})
			return err
		}},
	}
	for _, op := range adminOnly {
		for _, who := range []string{"reseller", "account user"} {
			vs = append(vs, refused(who+" calls admin "+op.name, "a "+who+" calls the admin-only "+op.name,
				func(t *testing.T, c *cluster) error {
					cl := c.resA
					if who == "account user" {
						cl = c.a1.owner
					}
					return op.call(cl)
				}, "FORBIDDEN"))
		}
	}
	return vs
}
