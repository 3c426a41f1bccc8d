package client

import (
	"context"
	"fmt"
	"time"
)

// Domain mirrors the GraphQL Domain type.
type Domain struct {
	Name       string    `json:"name"`
	Primary    bool      `json:"primary"`
	Docroot    string    `json:"docroot"`
	PHPVersion *string   `json:"phpVersion"`
	Redirect   *Redirect `json:"redirect"`
	AliasOf    *string   `json:"aliasOf"`
	State      string    `json:"state"`
	Reason     *string   `json:"reason"`
}

// Redirect is a domain's redirect.
type Redirect struct {
	To   string `json:"to"`
	Code int    `json:"code"`
}

// Service mirrors the GraphQL Service type.
type Service struct {
	Name     string     `json:"name"`
	State    string     `json:"state"`
	Version  *string    `json:"version"`
	Listen   []string   `json:"listen"`
	Since    *time.Time `json:"since"`
	Error    *string    `json:"error"`
	Restarts int        `json:"restarts"`
}

const domainFields = `name primary docroot phpVersion redirect{to code} aliasOf state reason`

// Domains lists the domains an account serves, primary first.
func (c *Client) Domains(ctx context.Context, account string) ([]Domain, error) {
	var out struct{ Domains []Domain }
	err := c.Do(ctx, `query($a:ID!){domains(account:$a){`+domainFields+`}}`, map[string]any{"a": account}, &out)
	return out.Domains, err
}

// AddDomain adds an add-on domain; docroot "" takes the server's default.
func (c *Client) AddDomain(ctx context.Context, account, domain, docroot string) (*Domain, error) {
	vars := map[string]any{"a": account, "d": domain, "r": nil}
	if docroot != "" {
		vars["r"] = docroot
	}
	var out struct{ AddDomain Domain }
	err := c.Do(ctx, `mutation($a:ID!,$d:String!,$r:String){addDomain(account:$a,domain:$d,docroot:$r){`+domainFields+`}}`, vars, &out)
	return &out.AddDomain, err
}

// AddAliasDomain adds a parked (alias) domain serving the site of target.
func (c *Client) AddAliasDomain(ctx context.Context, account, domain, target string) (*Domain, error) {
	var out struct{ AddDomain Domain }
	err := c.Do(ctx, `mutation($a:ID!,$d:String!,$t:String){addDomain(account:$a,domain:$d,aliasOf:$t){`+domainFields+`}}`,
		map[string]any{"a": account, "d": domain, "t": target}, &out)
	return &out.AddDomain, err
}

// RemoveDomain stops serving an add-on domain.
func (c *Client) RemoveDomain(ctx context.Context, account, domain string) error {
	return c.Do(ctx, `mutation($a:ID!,$d:String!){removeDomain(account:$a,domain:$d)}`, map[string]any{"a": account, "d": domain}, nil)
}

// SetPHPVersion sets a domain's PHP version; "" serves static files only.
func (c *Client) SetPHPVersion(ctx context.Context, account, domain, version string) (*Domain, error) {
	vars := map[string]any{"a": account, "d": domain, "v": nil}
	if version != "" {
		vars["v"] = version
	}
	var out struct{ SetPHPVersion Domain }
	err := c.Do(ctx, `mutation($a:ID!,$d:String!,$v:String){setPHPVersion(account:$a,domain:$d,version:$v){`+domainFields+`}}`, vars, &out)
	return &out.SetPHPVersion, err
}

// SetRedirect redirects a domain; to "" removes the redirect.
func (c *Client) SetRedirect(ctx context.Context, domain, to string, code int) (*Domain, error) {
	vars := map[string]any{"d": domain, "t": nil, "c": code}
	if to != "" {
		vars["t"] = to
	}
	var out struct{ SetRedirect Domain }
	err := c.Do(ctx, `mutation($d:String!,$t:String,$c:Int){setRedirect(domain:$d,to:$t,code:$c){`+domainFields+`}}`, vars, &out)
	return &out.SetRedirect, err
}

// Services lists the daemons a node's agent manages.
func (c *Client) Services(ctx context.Context, node string) ([]Service, *time.Time, error) {
	var out struct {
		Node *struct {
			Services           []Service  `json:"services"`
			ServicesReportedAt *time.Time `json:"servicesReportedAt"`
		}
	}
	err := c.Do(ctx, `query($n:String!){node(name:$n){services{name state version listen since error restarts} servicesReportedAt}}`, map[string]any{"n": node}, &out)
	if err != nil {
		return nil, nil, err
	}
	if out.Node == nil {
		return nil, nil, &Error{Code: "NOT_FOUND", Message: fmt.Sprintf("node %q not found", node)}
	}
	return out.Node.Services, out.Node.ServicesReportedAt, nil
}

// RestartService restarts a daemon on a node and waits for the result.
func (c *Client) RestartService(ctx context.Context, node, name string, timeoutSeconds int) (*Task, error) {
	var out struct{ RestartService Task }
	err := c.Do(ctx, `mutation($n:String!,$s:String!,$t:Int){restartService(node:$n,name:$s,timeoutSeconds:$t){id node action status result error createdAt finishedAt}}`,
		map[string]any{"n": node, "s": name, "t": timeoutSeconds}, &out)
	if err != nil {
		return nil, err
	}
	return &out.RestartService, nil
}
