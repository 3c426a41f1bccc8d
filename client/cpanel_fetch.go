package client

import (
	"context"
	"time"
)

// CpanelServerInput is how a node reaches an old cPanel server: the
// fields of scanCpanelServer's input, and fetchCpanelBackup's besides
// account and remotePath.
type CpanelServerInput struct {
	Node               string  `json:"node"`
	Host               string  `json:"host"`
	Port               *int    `json:"port,omitempty"`
	User               string  `json:"user"`
	Password           *string `json:"password,omitempty"`
	PrivateKey         *string `json:"privateKey,omitempty"`
	HostKeyFingerprint *string `json:"hostKeyFingerprint,omitempty"`
}

// CpanelServerAccount is one account a scan found.
type CpanelServerAccount struct {
	Username      string `json:"username"`
	Domain        string `json:"domain"`
	DiskUsedBytes int64  `json:"diskUsedBytes"`
	Suspended     bool   `json:"suspended"`
}

// CpanelServerScan is scanCpanelServer's answer.
type CpanelServerScan struct {
	HostKeyFingerprint string                `json:"hostKeyFingerprint"`
	Accounts           []CpanelServerAccount `json:"accounts"`
	// Truncated: the server had more accounts than a scan returns.
	Truncated bool `json:"truncated"`
}

// CpanelFetch is one pull of an archive from an old server.
type CpanelFetch struct {
	ID                 string     `json:"id"`
	Node               string     `json:"node"`
	Host               string     `json:"host"`
	Port               int        `json:"port"`
	User               string     `json:"user"`
	HostKeyFingerprint string     `json:"hostKeyFingerprint"`
	Account            *string    `json:"account"`
	RemotePath         *string    `json:"remotePath"`
	Path               string     `json:"path"`
	Status             string     `json:"status"`
	Bytes              int64      `json:"bytes"`
	Sha256             *string    `json:"sha256"`
	Error              *string    `json:"error"`
	CreatedBy          string     `json:"createdBy"`
	StartedAt          time.Time  `json:"startedAt"`
	FinishedAt         *time.Time `json:"finishedAt"`
}

// Finished reports whether the fetch has ended (DONE, FAILED).
func (f *CpanelFetch) Finished() bool { return f.Status == "DONE" || f.Status == "FAILED" }

const cpanelFetchFields = `id node host port user hostKeyFingerprint account remotePath path status bytes sha256 error createdBy startedAt finishedAt`

// ScanCpanelServer has the node list the server's cPanel accounts.
func (c *Client) ScanCpanelServer(ctx context.Context, in CpanelServerInput) (*CpanelServerScan, error) {
	var out struct{ ScanCpanelServer *CpanelServerScan }
	err := c.Do(ctx, `mutation($in:ScanCpanelServerInput!){scanCpanelServer(input:$in){hostKeyFingerprint accounts{username domain diskUsedBytes suspended} truncated}}`,
		map[string]any{"in": in}, &out)
	return out.ScanCpanelServer, err
}

// FetchCpanelBackup starts a fetch of account's archive (made by pkgacct)
// or of the archive at remotePath ("" for the one not used).
func (c *Client) FetchCpanelBackup(ctx context.Context, in CpanelServerInput, account, remotePath string) (*CpanelFetch, error) {
	fp := ""
	if in.HostKeyFingerprint != nil {
		fp = *in.HostKeyFingerprint
	}
	v := map[string]any{"node": in.Node, "host": in.Host, "user": in.User, "hostKeyFingerprint": fp}
	if in.Port != nil {
		v["port"] = *in.Port
	}
	if in.Password != nil {
		v["password"] = *in.Password
	}
	if in.PrivateKey != nil {
		v["privateKey"] = *in.PrivateKey
	}
	if account != "" {
		v["account"] = account
	}
	if remotePath != "" {
		v["remotePath"] = remotePath
	}
	var out struct{ FetchCpanelBackup *CpanelFetch }
	err := c.Do(ctx, `mutation($in:FetchCpanelBackupInput!){fetchCpanelBackup(input:$in){`+cpanelFetchFields+`}}`,
		map[string]any{"in": v}, &out)
	return out.FetchCpanelBackup, err
}

// CpanelFetch reads one fetch; nil when there is none.
func (c *Client) CpanelFetch(ctx context.Context, id string) (*CpanelFetch, error) {
	var out struct{ CpanelFetch *CpanelFetch }
	err := c.Do(ctx, `query($id:ID!){cpanelFetch(id:$id){`+cpanelFetchFields+`}}`, map[string]any{"id": id}, &out)
	return out.CpanelFetch, err
}

// CpanelFetches lists a page of fetches, oldest first, and the cursor of
// the next page ("" when none).
func (c *Client) CpanelFetches(ctx context.Context, first int, after string) ([]CpanelFetch, string, error) {
	var out struct {
		CpanelFetches struct {
			Edges []struct {
				Node CpanelFetch `json:"node"`
			} `json:"edges"`
			PageInfo struct {
				HasNextPage bool    `json:"hasNextPage"`
				EndCursor   *string `json:"endCursor"`
			} `json:"pageInfo"`
		}
	}
	vars := map[string]any{"first": first}
	if after != "" {
		vars["after"] = after
	}
	err := c.Do(ctx, `query($first:Int,$after:String){cpanelFetches(first:$first,after:$after){edges{node{`+cpanelFetchFields+`}} pageInfo{hasNextPage endCursor}}}`, vars, &out)
	if err != nil {
		return nil, "", err
	}
	list := make([]CpanelFetch, 0, len(out.CpanelFetches.Edges))
	for _, e := range out.CpanelFetches.Edges {
		list = append(list, e.Node)
	}
	next := ""
	if out.CpanelFetches.PageInfo.HasNextPage && out.CpanelFetches.PageInfo.EndCursor != nil {
		next = *out.CpanelFetches.PageInfo.EndCursor
	}
	return list, next, nil
}
