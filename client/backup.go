package client

import (
	"context"
	"encoding/json"
	"time"
)

// Backup mirrors the GraphQL Backup type.
type Backup struct {
	ID             string              `json:"id"`
	Account        string              `json:"account"`
	AccountID      string              `json:"accountId"`
	Target         string              `json:"target"`
	Node           string              `json:"node"`
	Status         string              `json:"status"`
	Scheduled      bool                `json:"scheduled"`
	CreatedAt      time.Time           `json:"createdAt"`
	StartedAt      *time.Time          `json:"startedAt"`
	FinishedAt     *time.Time          `json:"finishedAt"`
	SizeBytes      int64               `json:"sizeBytes"`
	AddedBytes     int64               `json:"addedBytes"`
	FileCount      int64               `json:"fileCount"`
	Contents       BackupContents      `json:"contents"`
	Failed         []BackupItemFailure `json:"failed"`
	VerifiedAt     *time.Time          `json:"verifiedAt"`
	Verified       bool                `json:"verified"`
	VerifyProblems []string            `json:"verifyProblems"`
	Error          *string             `json:"error"`
	Progress       *BackupProgress     `json:"progress"`
	Events         []BackupEvent       `json:"events"`
}

// BackupContents is what a backup holds.
type BackupContents struct {
	Files     bool     `json:"files"`
	Databases []string `json:"databases"`
	Mailboxes []string `json:"mailboxes"`
	Zones     []string `json:"zones"`
}

// BackupItemFailure is an item a backup or restore could not handle.
type BackupItemFailure struct {
	Item  string `json:"item"`
	Error string `json:"error"`
}

// BackupProgress is what a running backup has done.
type BackupProgress struct {
	FilesDone  int64 `json:"filesDone"`
	BytesDone  int64 `json:"bytesDone"`
	TotalFiles int64 `json:"totalFiles"`
	TotalBytes int64 `json:"totalBytes"`
}

// Event is one step of a record's history (a backup, a restore, a
// certificate).
type Event struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Message *string   `json:"message"`
}

// BackupEvent is one step of a backup's or restore's history.
type BackupEvent = Event

// BackupProgressEvent is one message of BackupEvents: the backup as it
// stands and its newest event.
type BackupProgressEvent struct {
	Backup Backup       `json:"backup"`
	Event  *BackupEvent `json:"event"`
}

// Restore mirrors the GraphQL Restore type.
type Restore struct {
	ID           string              `json:"id"`
	Backup       string              `json:"backup"`
	Account      string              `json:"account"`
	What         string              `json:"what"`
	Into         string              `json:"into"`
	Path         *string             `json:"path"`
	Database     *string             `json:"database"`
	DatabaseInto *string             `json:"databaseInto"`
	Mailbox      *string             `json:"mailbox"`
	Node         string              `json:"node"`
	Status       string              `json:"status"`
	Restored     []string            `json:"restored"`
	Failed       []BackupItemFailure `json:"failed"`
	Error        *string             `json:"error"`
	Step         *string             `json:"step"`
	CreatedAt    time.Time           `json:"createdAt"`
	StartedAt    *time.Time          `json:"startedAt"`
	FinishedAt   *time.Time          `json:"finishedAt"`
	Events       []BackupEvent       `json:"events"`
}

// RestoreInput is restoreBackup's input; zero fields are left out. What
// is ALL, FILES, DATABASE, MAILBOX or ZONE; Into IN_PLACE or SIDE_BY_SIDE
// ("" is SIDE_BY_SIDE).
type RestoreInput struct {
	Backup       string
	What         string
	Path         string
	Database     string
	DatabaseInto string
	Mailbox      string
	Into         string
	Node         string
}

// BackupTarget mirrors the GraphQL BackupTarget type (which never holds
// the S3 secret key).
type BackupTarget struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Node        *string   `json:"node"`
	SFTPAddress *string   `json:"sftpAddress"`
	HostKey     *string   `json:"hostKey"`
	AccessError *string   `json:"accessError"`
	Endpoint    *string   `json:"endpoint"`
	Bucket      *string   `json:"bucket"`
	Prefix      *string   `json:"prefix"`
	Region      *string   `json:"region"`
	AccessKeyID *string   `json:"accessKeyId"`
	CreatedAt   time.Time `json:"createdAt"`
}

// BackupTargetInput is createBackupTarget's input. SecretAccessKey is
// sent once and never returned.
type BackupTargetInput struct {
	Name            string
	Kind            string // LOCAL, NODE or S3
	Node            string
	Endpoint        string
	Bucket          string
	Prefix          string
	Region          string
	AccessKeyID     string
	SecretAccessKey string
}

// PlanBackup mirrors the GraphQL PlanBackup type.
type PlanBackup struct {
	Target      string `json:"target"`
	Hour        *int   `json:"hour"`
	KeepDaily   int    `json:"keepDaily"`
	KeepWeekly  int    `json:"keepWeekly"`
	KeepMonthly int    `json:"keepMonthly"`
	Enabled     bool   `json:"enabled"`
}

// PlanBackupInput is setPlanBackup's input; nil fields take the
// server's defaults (keep 7 daily, 4 weekly, 3 monthly; the default
// window; enabled).
type PlanBackupInput struct {
	Target      string
	Hour        *int
	KeepDaily   *int
	KeepWeekly  *int
	KeepMonthly *int
	Enabled     *bool
}

const backupEventFields = `at kind message`

const backupFields = `id account accountId target node status scheduled createdAt startedAt finishedAt sizeBytes addedBytes fileCount
	contents{files databases mailboxes zones} failed{item error} verifiedAt verified verifyProblems error
	progress{filesDone bytesDone totalFiles totalBytes} events{` + backupEventFields + `}`

const restoreFields = `id backup account what into path database databaseInto mailbox node status restored failed{item error}
	error step createdAt startedAt finishedAt events{` + backupEventFields + `}`

const backupTargetFields = `name kind node sftpAddress hostKey accessError endpoint bucket prefix region accessKeyId createdAt`

const planBackupFields = `target hour keepDaily keepWeekly keepMonthly enabled`

// CreateBackup starts a backup of account (id or username) to its plan's
// target, or target (admins; "" for the plan's). It returns the PENDING
// backup at once.
func (c *Client) CreateBackup(ctx context.Context, account, target string) (*Backup, error) {
	var out struct{ CreateBackup Backup }
	err := c.Do(ctx, `mutation($a:String!,$t:String){createBackup(account:$a,target:$t){`+backupFields+`}}`,
		map[string]any{"a": account, "t": optional(target)}, &out)
	return &out.CreateBackup, err
}

// Backup returns a backup; nil when there is none the caller may see.
func (c *Client) Backup(ctx context.Context, id string) (*Backup, error) {
	var out struct{ Backup *Backup }
	err := c.Do(ctx, `query($id:ID!){backup(id:$id){`+backupFields+`}}`, map[string]any{"id": id}, &out)
	return out.Backup, err
}

// Backups lists a page of an account's backups, oldest first, and the
// cursor of the next page ("" when this is the last).
func (c *Client) Backups(ctx context.Context, account string, first int, after string) ([]Backup, string, error) {
	var out struct {
		Backups struct {
			Edges    []struct{ Node Backup }
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	vars := map[string]any{"a": account, "c": optional(after)}
	if first > 0 {
		vars["n"] = first
	}
	err := c.Do(ctx, `query($a:String!,$n:Int,$c:String){backups(account:$a,first:$n,after:$c){edges{node{`+backupFields+`}} pageInfo{hasNextPage endCursor}}}`,
		vars, &out)
	if err != nil {
		return nil, "", err
	}
	list := make([]Backup, 0, len(out.Backups.Edges))
	for _, e := range out.Backups.Edges {
		list = append(list, e.Node)
	}
	next := ""
	if out.Backups.PageInfo.HasNextPage && out.Backups.PageInfo.EndCursor != nil {
		next = *out.Backups.PageInfo.EndCursor
	}
	return list, next, nil
}

// AllBackups lists every backup of account the caller may see, reading
// page after page.
func (c *Client) AllBackups(ctx context.Context, account string) ([]Backup, error) {
	var all []Backup
	for after := ""; ; {
		page, next, err := c.Backups(ctx, account, 500, after)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		after = next
	}
}

// RestoreBackup restores part or all of a backup (asynchronous).
func (c *Client) RestoreBackup(ctx context.Context, in RestoreInput) (*Restore, error) {
	vars := map[string]any{"in": map[string]any{"backup": in.Backup, "what": in.What, "path": optional(in.Path),
		"database": optional(in.Database), "databaseInto": optional(in.DatabaseInto), "mailbox": optional(in.Mailbox),
		"into": optional(in.Into), "node": optional(in.Node)}}
	if in.Into == "" {
		delete(vars["in"].(map[string]any), "into")
	}
	var out struct{ RestoreBackup Restore }
	err := c.Do(ctx, `mutation($in:RestoreBackupInput!){restoreBackup(input:$in){`+restoreFields+`}}`, vars, &out)
	return &out.RestoreBackup, err
}

// RestoreAccount brings a deleted account back from one of its backups,
// onto node (admins; "" lets the scheduler pick).
func (c *Client) RestoreAccount(ctx context.Context, backup, node string) (*Restore, error) {
	var out struct{ RestoreAccount Restore }
	err := c.Do(ctx, `mutation($b:ID!,$n:String){restoreAccount(backup:$b,node:$n){`+restoreFields+`}}`,
		map[string]any{"b": backup, "n": optional(node)}, &out)
	return &out.RestoreAccount, err
}

// Restore returns a restore; nil when there is none the caller may see.
func (c *Client) Restore(ctx context.Context, id string) (*Restore, error) {
	var out struct{ Restore *Restore }
	err := c.Do(ctx, `query($id:ID!){restore(id:$id){`+restoreFields+`}}`, map[string]any{"id": id}, &out)
	return out.Restore, err
}

// Restores lists an account's restores, oldest first.
func (c *Client) Restores(ctx context.Context, account string) ([]Restore, error) {
	var out struct{ Restores []Restore }
	err := c.Do(ctx, `query($a:String!){restores(account:$a){`+restoreFields+`}}`, map[string]any{"a": account}, &out)
	return out.Restores, err
}

// VerifyBackup asks for the backup to be read back and checked.
func (c *Client) VerifyBackup(ctx context.Context, id string) (*Backup, error) {
	var out struct{ VerifyBackup Backup }
	err := c.Do(ctx, `mutation($id:ID!){verifyBackup(id:$id){`+backupFields+`}}`, map[string]any{"id": id}, &out)
	return &out.VerifyBackup, err
}

// DeleteBackup removes the backup's data from its target, then the backup.
func (c *Client) DeleteBackup(ctx context.Context, id string) (*Backup, error) {
	var out struct{ DeleteBackup Backup }
	err := c.Do(ctx, `mutation($id:ID!){deleteBackup(id:$id){`+backupFields+`}}`, map[string]any{"id": id}, &out)
	return &out.DeleteBackup, err
}

// BackupTargets lists the backup targets (admins).
func (c *Client) BackupTargets(ctx context.Context) ([]BackupTarget, error) {
	var out struct{ BackupTargets []BackupTarget }
	err := c.Do(ctx, `{backupTargets{`+backupTargetFields+`}}`, nil, &out)
	return out.BackupTargets, err
}

// CreateBackupTarget adds a backup target (admins).
func (c *Client) CreateBackupTarget(ctx context.Context, in BackupTargetInput) (*BackupTarget, error) {
	vars := map[string]any{"in": map[string]any{"name": in.Name, "kind": in.Kind, "node": optional(in.Node),
		"endpoint": optional(in.Endpoint), "bucket": optional(in.Bucket), "prefix": optional(in.Prefix),
		"region": optional(in.Region), "accessKeyId": optional(in.AccessKeyID), "secretAccessKey": optional(in.SecretAccessKey)}}
	var out struct{ CreateBackupTarget BackupTarget }
	err := c.Do(ctx, `mutation($in:CreateBackupTargetInput!){createBackupTarget(input:$in){`+backupTargetFields+`}}`, vars, &out)
	return &out.CreateBackupTarget, err
}

// DeleteBackupTarget removes a target no plan and no backup uses (admins).
func (c *Client) DeleteBackupTarget(ctx context.Context, name string) (*BackupTarget, error) {
	var out struct{ DeleteBackupTarget BackupTarget }
	err := c.Do(ctx, `mutation($n:String!){deleteBackupTarget(name:$n){`+backupTargetFields+`}}`, map[string]any{"n": name}, &out)
	return &out.DeleteBackupTarget, err
}

// SetPlanBackup sets a plan's backup target, schedule and retention; nil
// turns scheduled backups off.
func (c *Client) SetPlanBackup(ctx context.Context, plan string, in *PlanBackupInput) (*Plan, error) {
	var input any
	if in != nil {
		m := map[string]any{"target": in.Target}
		for k, v := range map[string]*int{"hour": in.Hour, "keepDaily": in.KeepDaily, "keepWeekly": in.KeepWeekly, "keepMonthly": in.KeepMonthly} {
			if v != nil {
				m[k] = *v
			}
		}
		if in.Enabled != nil {
			m["enabled"] = *in.Enabled
		}
		input = m
	}
	var out struct{ SetPlanBackup Plan }
	err := c.Do(ctx, `mutation($p:String!,$in:PlanBackupInput){setPlanBackup(plan:$p,input:$in){`+planFields+` backup{`+planBackupFields+`}}}`,
		map[string]any{"p": plan, "in": input}, &out)
	return &out.SetPlanBackup, err
}

// PlanBackup returns a plan's backup settings (nil: none).
func (c *Client) PlanBackup(ctx context.Context, plan string) (*PlanBackup, error) {
	var out struct {
		Plan *struct{ Backup *PlanBackup }
	}
	err := c.Do(ctx, `query($p:String!){plan(name:$p){backup{`+planBackupFields+`}}}`, map[string]any{"p": plan}, &out)
	if err != nil || out.Plan == nil {
		return nil, err
	}
	return out.Plan.Backup, nil
}

// BackupEvents follows a backup: its state, then each change, until it
// has finished (or was deleted), ctx ends or the server ends the
// subscription.
func (c *Client) BackupEvents(ctx context.Context, id string) (<-chan BackupProgressEvent, error) {
	raw, err := c.Subscribe(ctx, `subscription($id:ID!){backupEvents(id:$id){backup{`+backupFields+`} event{`+backupEventFields+`}}}`, map[string]any{"id": id})
	if err != nil {
		return nil, err
	}
	out := make(chan BackupProgressEvent)
	go func() {
		defer close(out)
		for data := range raw {
			var d struct{ BackupEvents BackupProgressEvent }
			if json.Unmarshal(data, &d) != nil {
				return
			}
			select {
			case out <- d.BackupEvents:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
