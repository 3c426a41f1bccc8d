package client

import (
	"context"
	"time"
)

// Mailbox mirrors the GraphQL Mailbox type.
type Mailbox struct {
	Address       string         `json:"address"`
	Domain        string         `json:"domain"`
	QuotaMB       int            `json:"quotaMB"`
	UsedBytes     *int64         `json:"usedBytes"`
	Messages      *int64         `json:"messages"`
	Status        string         `json:"status"`
	Reason        *string        `json:"reason"`
	Autoresponder *Autoresponder `json:"autoresponder"`
	CreatedAt     time.Time      `json:"createdAt"`
}

// Autoresponder is a mailbox's vacation reply.
type Autoresponder struct {
	Subject string     `json:"subject"`
	Body    string     `json:"body"`
	From    *string    `json:"from,omitempty"`
	Until   *time.Time `json:"until,omitempty"`
}

// MailboxPayload is a mailbox after a change; Password is set only when the
// server generated it, and is shown this once.
type MailboxPayload struct {
	Mailbox  Mailbox `json:"mailbox"`
	Password *string `json:"password"`
}

// Forwarder mirrors the GraphQL Forwarder type.
type Forwarder struct {
	From string   `json:"from"`
	To   []string `json:"to"`
}

// DKIMSelector is one DKIM key of a mail domain.
type DKIMSelector struct {
	Selector    string     `json:"selector"`
	Signing     bool       `json:"signing"`
	PublishedAt *time.Time `json:"publishedAt"`
	RetireAt    *time.Time `json:"retireAt"`
	TXT         *string    `json:"txt"`
}

// SpamFilter is a mail domain's spam setting.
type SpamFilter struct {
	Enabled bool    `json:"enabled"`
	Score   float64 `json:"score"`
	Action  string  `json:"action"`
}

// MailDomain mirrors the GraphQL MailDomain type.
type MailDomain struct {
	Domain     string         `json:"domain"`
	Status     string         `json:"status"`
	Reason     *string        `json:"reason"`
	CatchAll   *string        `json:"catchAll"`
	SpamFilter SpamFilter     `json:"spamFilter"`
	DKIM       []DKIMSelector `json:"dkim"`
	SPF        *string        `json:"spf"`
	DMARC      *string        `json:"dmarc"`
	Webmail    bool           `json:"webmail"`
}

// MailLogs is what mailLogs returns.
type MailLogs struct {
	Lines     []string `json:"lines"`
	Truncated bool     `json:"truncated"`
}

// MailQueueEntry is one queued message.
type MailQueueEntry struct {
	ID         string   `json:"id"`
	AgeSeconds int64    `json:"ageSeconds"`
	SizeBytes  int64    `json:"sizeBytes"`
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
	Frozen     bool     `json:"frozen"`
}

// MailQueue is a node's mail queue.
type MailQueue struct {
	Node     string           `json:"node"`
	Total    int              `json:"total"`
	Messages []MailQueueEntry `json:"messages"`
}

// ScanResult is what scanMailbox returns.
type ScanResult struct {
	Scanned  int64 `json:"scanned"`
	Infected []struct {
		Message   string `json:"message"`
		Signature string `json:"signature"`
	} `json:"infected"`
}

const (
	mailboxFields    = `address domain quotaMB usedBytes messages status reason autoresponder{subject body from until} createdAt`
	mailDomainFields = `domain status reason catchAll spamFilter{enabled score action} dkim{selector signing publishedAt retireAt txt} spf dmarc webmail`
)

// Mailboxes returns one page of an account's mailboxes, after the cursor
// after ("" from the start), and the cursor of the next page ("" when
// none).
func (c *Client) Mailboxes(ctx context.Context, account string, first int, after string) ([]Mailbox, string, error) {
	var out struct {
		Mailboxes struct {
			Edges    []struct{ Node Mailbox }
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	err := c.Do(ctx, `query($a:ID!,$f:Int,$c:String){mailboxes(account:$a,first:$f,after:$c){edges{node{`+mailboxFields+`}} pageInfo{hasNextPage endCursor}}}`,
		map[string]any{"a": account, "f": first, "c": optional(after)}, &out)
	if err != nil {
		return nil, "", err
	}
	list := make([]Mailbox, 0, len(out.Mailboxes.Edges))
	for _, e := range out.Mailboxes.Edges {
		list = append(list, e.Node)
	}
	next := ""
	if out.Mailboxes.PageInfo.HasNextPage && out.Mailboxes.PageInfo.EndCursor != nil {
		next = *out.Mailboxes.PageInfo.EndCursor
	}
	return list, next, nil
}

// CreateMailbox creates a mailbox; password "" has the server generate one
// (returned in the payload), quotaMB 0 the default quota.
func (c *Client) CreateMailbox(ctx context.Context, account, address, password string, quotaMB int) (*MailboxPayload, error) {
	in := map[string]any{"account": account, "address": address, "password": optional(password)}
	if quotaMB != 0 {
		in["quotaMB"] = quotaMB
	}
	var out struct{ CreateMailbox MailboxPayload }
	if err := c.Do(ctx, `mutation($i:CreateMailboxInput!){createMailbox(input:$i){mailbox{`+mailboxFields+`} password}}`, map[string]any{"i": in}, &out); err != nil {
		return nil, err
	}
	return &out.CreateMailbox, nil
}

// mailboxCall runs a mutation named field that returns a Mailbox.
func (c *Client) mailboxCall(ctx context.Context, field, params, args string, vars map[string]any) (*Mailbox, error) {
	var out map[string]Mailbox
	if err := c.Do(ctx, `mutation(`+params+`){`+field+`(`+args+`){`+mailboxFields+`}}`, vars, &out); err != nil {
		return nil, err
	}
	m := out[field]
	return &m, nil
}

// DeleteMailbox archives and removes a mailbox.
func (c *Client) DeleteMailbox(ctx context.Context, address string) (*Mailbox, error) {
	return c.mailboxCall(ctx, "deleteMailbox", "$a:String!", "address:$a", map[string]any{"a": address})
}

// SetMailboxPassword changes a mailbox's password; "" has the server
// generate one.
func (c *Client) SetMailboxPassword(ctx context.Context, address, password string) (*MailboxPayload, error) {
	var out struct{ SetMailboxPassword MailboxPayload }
	err := c.Do(ctx, `mutation($a:String!,$p:String){setMailboxPassword(address:$a,password:$p){mailbox{`+mailboxFields+`} password}}`,
		map[string]any{"a": address, "p": optional(password)}, &out)
	if err != nil {
		return nil, err
	}
	return &out.SetMailboxPassword, nil
}

// SetMailboxQuota changes a mailbox's quota.
func (c *Client) SetMailboxQuota(ctx context.Context, address string, quotaMB int) (*Mailbox, error) {
	return c.mailboxCall(ctx, "setMailboxQuota", "$a:String!,$q:Int!", "address:$a,quotaMB:$q", map[string]any{"a": address, "q": quotaMB})
}

// DisableMailbox refuses a mailbox's logins; EnableMailbox allows them.
func (c *Client) DisableMailbox(ctx context.Context, address string) (*Mailbox, error) {
	return c.mailboxCall(ctx, "disableMailbox", "$a:String!", "address:$a", map[string]any{"a": address})
}

// EnableMailbox allows a disabled mailbox's logins again.
func (c *Client) EnableMailbox(ctx context.Context, address string) (*Mailbox, error) {
	return c.mailboxCall(ctx, "enableMailbox", "$a:String!", "address:$a", map[string]any{"a": address})
}

// SetAutoresponder sets a mailbox's vacation reply.
func (c *Client) SetAutoresponder(ctx context.Context, address string, ar Autoresponder) (*Mailbox, error) {
	return c.mailboxCall(ctx, "setAutoresponder", "$a:String!,$r:AutoresponderInput!", "address:$a,autoresponder:$r", map[string]any{"a": address, "r": ar})
}

// DeleteAutoresponder removes a mailbox's vacation reply.
func (c *Client) DeleteAutoresponder(ctx context.Context, address string) (*Mailbox, error) {
	return c.mailboxCall(ctx, "deleteAutoresponder", "$a:String!", "address:$a", map[string]any{"a": address})
}

// Forwarders lists an account's forwarders.
func (c *Client) Forwarders(ctx context.Context, account string) ([]Forwarder, error) {
	var out struct{ Forwarders []Forwarder }
	err := c.Do(ctx, `query($a:ID!){forwarders(account:$a){from to}}`, map[string]any{"a": account}, &out)
	return out.Forwarders, err
}

// CreateForwarder forwards from to the targets (added to those it has).
func (c *Client) CreateForwarder(ctx context.Context, from string, to []string) (*Forwarder, error) {
	var out struct{ CreateForwarder Forwarder }
	if err := c.Do(ctx, `mutation($f:String!,$t:[String!]!){createForwarder(from:$f,to:$t){from to}}`, map[string]any{"f": from, "t": to}, &out); err != nil {
		return nil, err
	}
	return &out.CreateForwarder, nil
}

// DeleteForwarder removes a forwarder.
func (c *Client) DeleteForwarder(ctx context.Context, from string) (*Forwarder, error) {
	var out struct{ DeleteForwarder Forwarder }
	if err := c.Do(ctx, `mutation($f:String!){deleteForwarder(from:$f){from to}}`, map[string]any{"f": from}, &out); err != nil {
		return nil, err
	}
	return &out.DeleteForwarder, nil
}

// MailDomains lists an account's mail domains.
func (c *Client) MailDomains(ctx context.Context, account string) ([]MailDomain, error) {
	var out struct{ MailDomains []MailDomain }
	err := c.Do(ctx, `query($a:ID!){mailDomains(account:$a){`+mailDomainFields+`}}`, map[string]any{"a": account}, &out)
	return out.MailDomains, err
}

// domainCall runs a mutation named field that returns a MailDomain.
func (c *Client) domainCall(ctx context.Context, field, params, args string, vars map[string]any) (*MailDomain, error) {
	var out map[string]MailDomain
	if err := c.Do(ctx, `mutation(`+params+`){`+field+`(`+args+`){`+mailDomainFields+`}}`, vars, &out); err != nil {
		return nil, err
	}
	d := out[field]
	return &d, nil
}

// SetCatchAll sets where mail to unknown addresses of domain goes.
func (c *Client) SetCatchAll(ctx context.Context, domain, target string) (*MailDomain, error) {
	return c.domainCall(ctx, "setCatchAll", "$d:String!,$t:String!", "domain:$d,target:$t", map[string]any{"d": domain, "t": target})
}

// EnableDKIM creates and publishes a DKIM key for domain.
func (c *Client) EnableDKIM(ctx context.Context, domain string) (*MailDomain, error) {
	return c.domainCall(ctx, "enableDKIM", "$d:String!", "domain:$d", map[string]any{"d": domain})
}

// RotateDKIM replaces domain's DKIM key.
func (c *Client) RotateDKIM(ctx context.Context, domain string) (*MailDomain, error) {
	return c.domainCall(ctx, "rotateDKIM", "$d:String!", "domain:$d", map[string]any{"d": domain})
}

// SetSPF replaces domain's SPF record.
func (c *Client) SetSPF(ctx context.Context, domain, record string) (*MailDomain, error) {
	return c.domainCall(ctx, "setSPF", "$d:String!,$r:String!", "domain:$d,record:$r", map[string]any{"d": domain, "r": record})
}

// SetDMARC replaces domain's DMARC record.
func (c *Client) SetDMARC(ctx context.Context, domain, policy string) (*MailDomain, error) {
	return c.domainCall(ctx, "setDMARC", "$d:String!,$p:String!", "domain:$d,policy:$p", map[string]any{"d": domain, "p": policy})
}

// EnableWebmail serves Roundcube at webmail.DOMAIN.
func (c *Client) EnableWebmail(ctx context.Context, domain string) (*MailDomain, error) {
	return c.domainCall(ctx, "enableWebmail", "$d:String!", "domain:$d", map[string]any{"d": domain})
}

// SetSpamFilter sets domain's spam filter; score 0 is the default, action
// "" TAG.
func (c *Client) SetSpamFilter(ctx context.Context, domain string, enabled bool, score float64, action string) (*MailDomain, error) {
	f := map[string]any{"enabled": enabled, "action": optional(action)}
	if score != 0 {
		f["score"] = score
	}
	return c.domainCall(ctx, "setSpamFilter", "$d:String!,$f:SpamFilterInput!", "domain:$d,filter:$f", map[string]any{"d": domain, "f": f})
}

// TrainMail teaches the spam filter a message (IMAP UID) is spam or not.
func (c *Client) TrainMail(ctx context.Context, address string, uid int, spam bool) (bool, error) {
	field := "trainHam"
	if spam {
		field = "trainSpam"
	}
	var out map[string]struct{ Learned bool }
	if err := c.Do(ctx, `mutation($a:String!,$u:Int!){`+field+`(address:$a,messageUid:$u){learned}}`, map[string]any{"a": address, "u": uid}, &out); err != nil {
		return false, err
	}
	return out[field].Learned, nil
}

// MailLogs reads the log lines naming a mailbox over the last hours.
func (c *Client) MailLogs(ctx context.Context, address string, hours int) (*MailLogs, error) {
	var out struct{ MailLogs MailLogs }
	if err := c.Do(ctx, `query($a:String!,$h:Int){mailLogs(address:$a,hours:$h){lines truncated}}`, map[string]any{"a": address, "h": hours}, &out); err != nil {
		return nil, err
	}
	return &out.MailLogs, nil
}

// ScanMailbox scans a mailbox for malware.
func (c *Client) ScanMailbox(ctx context.Context, address string) (*ScanResult, error) {
	var out struct{ ScanMailbox ScanResult }
	if err := c.Do(ctx, `mutation($a:String!){scanMailbox(address:$a){scanned infected{message signature}}}`, map[string]any{"a": address}, &out); err != nil {
		return nil, err
	}
	return &out.ScanMailbox, nil
}

// MailQueue lists a node's mail queue.
func (c *Client) MailQueue(ctx context.Context, node string, limit int) (*MailQueue, error) {
	var out struct{ MailQueue MailQueue }
	err := c.Do(ctx, `query($n:String!,$l:Int){mailQueue(node:$n,limit:$l){node total messages{id ageSeconds sizeBytes sender recipients frozen}}}`,
		map[string]any{"n": node, "l": limit}, &out)
	if err != nil {
		return nil, err
	}
	return &out.MailQueue, nil
}

// FlushMailQueue retries every queued message on node now.
func (c *Client) FlushMailQueue(ctx context.Context, node string) error {
	return c.Do(ctx, `mutation($n:String!){flushMailQueue(node:$n)}`, map[string]any{"n": node}, nil)
}
