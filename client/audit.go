package client

import (
	"context"
	"time"
)

// AuditEvent mirrors the GraphQL AuditEvent type.
type AuditEvent struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Source string    `json:"source"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Result string    `json:"result"`
}

// AuditFilter selects audit events; empty fields match all.
type AuditFilter struct {
	Actor      string     `json:"actor,omitempty"`
	Action     string     `json:"action,omitempty"`
	Target     string     `json:"target,omitempty"`
	FailedOnly bool       `json:"failedOnly,omitempty"`
	Since      *time.Time `json:"since,omitempty"`
}

// AuditEvents returns one page of the audit log, oldest first, and the
// cursor of the next ("" at the end).
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter, first int, after string) ([]AuditEvent, string, error) {
	var out struct {
		AuditEvents struct {
			Edges []struct {
				Node AuditEvent `json:"node"`
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
	err := c.Do(ctx, `query($f:AuditFilter,$n:Int,$a:String){auditEvents(filter:$f,first:$n,after:$a){edges{node{id time actor source action target result}} pageInfo{hasNextPage endCursor}}}`, vars, &out)
	if err != nil {
		return nil, "", err
	}
	evs := make([]AuditEvent, 0, len(out.AuditEvents.Edges))
	for _, e := range out.AuditEvents.Edges {
		evs = append(evs, e.Node)
	}
	next := ""
	if out.AuditEvents.PageInfo.HasNextPage && out.AuditEvents.PageInfo.EndCursor != nil {
		next = *out.AuditEvents.PageInfo.EndCursor
	}
	return evs, next, nil
}
