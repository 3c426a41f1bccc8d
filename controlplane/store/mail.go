package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key prefixes of an account's mail records (see the layout in store.go).
// They follow the databases' shape: specs written by the API, statuses by
// the mail controller, one sequence key per account that every change of
// either bumps, and done notices of finished mail tasks.
const (
	prefixMail      = prefix + "mail/"
	prefixMailState = prefix + "mailstate/"
	prefixMailSeq   = prefix + "mailseq/"
	mailDoneKind    = "mail"
)

// MailState is where a mailbox or mail domain is, derived from its spec and
// observed status (Mailbox.State), never written by the API.
type MailState string

const (
	// MailPending: the node has not applied the latest change yet.
	MailPending MailState = "PENDING"
	MailActive  MailState = "ACTIVE"
	// MailDisabled: a mailbox the node applied with logins refused.
	MailDisabled MailState = "DISABLED"
	// MailFailed: the node could not apply the latest change; Reason says
	// why.
	MailFailed MailState = "FAILED"
	// MailDeleting: the removal is wanted and not done yet.
	MailDeleting MailState = "DELETING"
	// MailDeleted: a removed object's tombstone status (expires).
	MailDeleted MailState = "DELETED"
)

// Task actions a mail status names as in flight.
const (
	MailTaskEnsure = "ensure"
	MailTaskDelete = "delete"
)

// MailStatus is what the mail controller last observed of one mailbox or
// mail domain on the account's node; written by the controller only.
type MailStatus struct {
	ObservedGeneration int64     `json:"observedGeneration"`
	State              MailState `json:"state,omitempty"`
	Reason             string    `json:"reason,omitempty"`
	// Suspended is the account suspension the node last applied.
	Suspended bool `json:"suspended,omitempty"`
	// Served: an ensure of the domain succeeded once, so the node serves
	// it (a later failure leaves the earlier generation in place) and its
	// mailboxes may be sent.
	Served bool `json:"served,omitempty"`
	// Node is the node that applied the object: after the account moved,
	// the new node is behind whatever the generations say.
	Node string `json:"node,omitempty"`

	// The one task in flight for the object, if any: an object has one at
	// most, so two changes never race on the node.
	TaskID         string `json:"taskId,omitempty"`
	TaskAction     string `json:"taskAction,omitempty"` // MailTaskEnsure, MailTaskDelete
	TaskGeneration int64  `json:"taskGeneration,omitempty"`
	TaskPassword   int64  `json:"taskPassword,omitempty"` // password generation the task carries
	TaskSuspended  bool   `json:"taskSuspended,omitempty"`

	// PasswordGeneration is the mailbox password generation the node
	// applied: a newer one in the spec travels in the next ensure.
	PasswordGeneration int64 `json:"passwordGeneration,omitempty"`

	// UsedBytes and Messages: a mailbox's usage as its last ensure
	// reported it (the last known values when the node cannot be asked).
	UsedBytes  uint64    `json:"usedBytes,omitempty"`
	Messages   uint64    `json:"messages,omitempty"`
	MeasuredAt time.Time `json:"measuredAt,omitzero"`

	// DKIM is a domain's keys as the node last reported them, with the TXT
	// values to publish.
	DKIM []MailDKIMKey `json:"dkim,omitempty"`
	// DKIMReason: why a domain's DKIM record could not be published (the
	// zone refused it); its selector does not sign meanwhile.
	DKIMReason string `json:"dkimReason,omitempty"`

	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// MailDKIMKey is one DKIM key the node holds for a domain.
type MailDKIMKey struct {
	Selector string `json:"selector"`
	TXT      string `json:"txt"`
	Signing  bool   `json:"signing,omitempty"`
}

func mailState(generation int64, deleted bool, st *MailStatus) (MailState, string) {
	observed := st.State != "" && st.ObservedGeneration == generation
	switch {
	case deleted && observed && st.State == MailFailed:
		return MailFailed, st.Reason
	case deleted:
		return MailDeleting, ""
	case observed:
		return st.State, st.Reason
	}
	return MailPending, ""
}

// MailAutoresponder is a mailbox's vacation reply.
type MailAutoresponder struct {
	Subject string    `json:"subject"`
	Body    string    `json:"body"`
	From    string    `json:"from,omitempty"`
	Until   time.Time `json:"until,omitzero"`
}

// Mailbox is one mailbox of an account: the spec the API writes and, in
// Status, what the controller observed. The password is never kept in the
// clear: SealedPassword is sealed to the node's key (pki.SealDER with
// agentpb.MailPasswordSealContext(address)), which only the node opens.
type Mailbox struct {
	Address  string `json:"address"` // local@domain, canonical
	Domain   string `json:"domain"`
	QuotaMB  int    `json:"quotaMB"`
	Disabled bool   `json:"disabled,omitempty"`
	Node     string `json:"node"` // the node SealedPassword is sealed to

	SealedPassword []byte `json:"sealedPassword,omitempty"`
	// SealedPasswordHash is a hash made elsewhere (the node the mailbox
	// moved from, a cPanel archive), sealed to Node's key with
	// agentpb.MailPasswordHashSealContext; it stands for SealedPassword
	// (at most one is set) and is installed as it is.
	SealedPasswordHash []byte             `json:"sealedPasswordHash,omitempty"`
	PasswordGeneration int64              `json:"passwordGeneration,omitempty"`
	Autoresponder      *MailAutoresponder `json:"autoresponder,omitempty"`

	Generation int64     `json:"generation,omitempty"`
	Deleted    bool      `json:"deleted,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`

	Status MailStatus `json:"-"`
}

// State is the mailbox's state and its reason (FAILED).
// An applied mailbox whose logins are switched off is DISABLED. A mailbox
// the node of a moved account applied without its password (sealed to the
// old node, which alone can open it) is FAILED until the password is set
// again.
func (m *Mailbox) State() (MailState, string) {
	st, reason := mailState(m.Generation, m.Deleted, &m.Status)
	if (st == MailActive || st == MailDisabled) && m.Status.Node != "" && m.Status.Node != m.Node && m.Status.PasswordGeneration == 0 {
		return MailFailed, "password must be set again after the move to " + m.Status.Node + " (setMailboxPassword)"
	}
	if st == MailActive && m.Disabled {
		st = MailDisabled
	}
	return st, reason
}

// MailSpam is a domain's spam filter setting.
type MailSpam struct {
	Enabled     bool   `json:"enabled,omitempty"`
	ScoreTenths int    `json:"scoreTenths,omitempty"`
	Action      string `json:"action,omitempty"` // TAG, JUNK_FOLDER, REJECT
}

// MailDKIM is one DKIM selector of a domain's spec. A new selector is
// created by the node first; once the controller has published its TXT
// record, PublishedAt is set and the selector signs (and any other stops
// signing, to be removed at RetireAt).
type MailDKIM struct {
	Selector    string    `json:"selector"`
	Signing     bool      `json:"signing,omitempty"`
	PublishedAt time.Time `json:"publishedAt,omitzero"`
	// TXT is the record published for the selector: a node that reports
	// another key for it (the account moved, the node lost its key) makes
	// the controller stop signing with it until the new key is published.
	TXT string `json:"txt,omitempty"`
	// RetireAt: a selector replaced by a rotation stops signing at once
	// and its key and TXT record go at RetireAt, so that messages signed
	// just before still verify.
	RetireAt time.Time `json:"retireAt,omitzero"`
}

// MailDomain is one mail domain of an account (one of its domains): its
// forwarders, catch-all, spam settings, DKIM selectors and webmail.
type MailDomain struct {
	Domain string `json:"domain"`
	// Aliases maps a local part to its forwarding targets.
	Aliases  map[string][]string `json:"aliases,omitempty"`
	CatchAll string              `json:"catchAll,omitempty"`
	Spam     MailSpam            `json:"spam"`
	DKIM     []MailDKIM          `json:"dkim,omitempty"`
	Webmail  bool                `json:"webmail,omitempty"`

	Generation int64     `json:"generation,omitempty"`
	Deleted    bool      `json:"deleted,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`

	Status MailStatus `json:"-"`
}

// State is the domain's state and its reason.
func (d *MailDomain) State() (MailState, string) {
	return mailState(d.Generation, d.Deleted, &d.Status)
}

// MailSet is an account's mail domains and mailboxes at one revision.
type MailSet struct {
	Account   *Account
	Domains   map[string]*MailDomain
	Mailboxes map[string]*Mailbox
	// seqRev is the revision of the account's mail sequence key when the
	// set was read (0: absent).
	seqRev int64
}

// MailChange is the specs a ChangeMail callback writes.
type MailChange struct {
	Domains   []*MailDomain
	Mailboxes []*Mailbox
	// Read is other accounts' mail the change was decided on (a loop
	// check across accounts): the commit also fails, and the callback
	// runs again, when any of them changed since it was read.
	Read []*MailSet
}

func (c *MailChange) empty() bool { return c == nil || len(c.Domains)+len(c.Mailboxes) == 0 }

func mailPrefix(account string) string            { return prefixMail + account + "/" }
func mailboxKey(account, address string) string   { return mailPrefix(account) + "box/" + address }
func mailDomainKey(account, domain string) string { return mailPrefix(account) + "domain/" + domain }
func mailStatePrefix(account string) string       { return prefixMailState + account + "/" }
func mailboxStateKey(account, address string) string {
	return mailStatePrefix(account) + "box/" + address
}
func mailDomainStateKey(account, domain string) string {
	return mailStatePrefix(account) + "domain/" + domain
}
func mailSeqKey(account string) string     { return prefixMailSeq + account }
func mailDonePrefix(account string) string { return prefixDone + mailDoneKind + "/" + account + "/" }

// MailObject is the Task.Object of an account's mail tasks: their done
// notices name the account (done/mail/<account>/<task>).
func MailObject(account string) string { return mailDoneKind + "/" + account }

// mailCleanupOps forget an account's mail records with the account (its
// deletion removes the home, maildirs included, on the node).
func mailCleanupOps(account string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(mailPrefix(account), clientv3.WithPrefix()),
		clientv3.OpDelete(mailStatePrefix(account), clientv3.WithPrefix()),
		clientv3.OpDelete(mailSeqKey(account)),
		clientv3.OpDelete(mailDonePrefix(account), clientv3.WithPrefix()),
	}
}

// What bumped an account's mail sequence key.
const (
	MailChangedSpec   = "spec"
	MailChangedTasks  = "tasks"
	MailChangedStatus = "status"
)

// The kinds the mail controller follows, named by account.
var (
	KindMailChanges  = Kind{label: "mail-changes", prefix: prefixMailSeq}
	KindMailOutcomes = Kind{label: "mail-outcomes", prefix: prefixDone + mailDoneKind + "/", name: firstSegment}
)

// MailChangeOf says what a KindMailChanges event changed: a MailChanged*
// constant, "" for a deletion.
func MailChangeOf(ev Event) string {
	if ev.Deleted {
		return ""
	}
	change, _, _ := strings.Cut(string(ev.Value), " ")
	if change == MailChangedTasks || change == MailChangedStatus {
		return change
	}
	return MailChangedSpec
}

func mailSeqPut(account, change string, now time.Time) clientv3.Op {
	return clientv3.OpPut(mailSeqKey(account), change+" "+now.Format(time.RFC3339Nano))
}

// mailRead is an account's mail records at one revision, with the
// revisions its commit compares and its done notices.
type mailRead struct {
	set          *MailSet
	arev, seqRev int64
	done         []string
}

// GetMail reads an account's mail domains and mailboxes at one revision.
func (s *Store) GetMail(ctx context.Context, account string) (*MailSet, error) {
	r, err := s.readMail(ctx, account)
	if err != nil {
		return nil, err
	}
	return r.set, nil
}

func (s *Store) readMail(ctx context.Context, account string) (*mailRead, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(accountKey(account)),
		clientv3.OpGet(mailSeqKey(account)),
		clientv3.OpGet(mailPrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(mailStatePrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(mailDonePrefix(account), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read mail of %s: %w", account, err)
	}
	akvs := resp.Responses[0].GetResponseRange().Kvs
	if len(akvs) == 0 {
		return nil, fmt.Errorf("account %q: %w", account, ErrNotFound)
	}
	a, err := DecodeAccount(akvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("decode account %s: %w", account, err)
	}
	r := &mailRead{arev: akvs[0].ModRevision}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		r.seqRev = kvs[0].ModRevision
	}
	set := &MailSet{Account: a, Domains: map[string]*MailDomain{}, Mailboxes: map[string]*Mailbox{}, seqRev: r.seqRev}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		kind, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), mailPrefix(account)), "/")
		switch kind {
		case "box":
			m, err := decodeJSON[Mailbox](kv.Key, kv.Value)
			if err != nil {
				return nil, err
			}
			set.Mailboxes[m.Address] = m
		case "domain":
			d, err := decodeJSON[MailDomain](kv.Key, kv.Value)
			if err != nil {
				return nil, err
			}
			set.Domains[d.Domain] = d
		}
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		st, err := decodeJSON[MailStatus](kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		kind, name, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), mailStatePrefix(account)), "/")
		switch kind {
		case "box":
			if m := set.Mailboxes[name]; m != nil {
				m.Status = *st
			}
		case "domain":
			if d := set.Domains[name]; d != nil {
				d.Status = *st
			}
		}
	}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		r.done = append(r.done, string(kv.Key))
	}
	r.set = set
	return r, nil
}

// commitMail commits ops if neither the account nor its mail sequence key
// changed since r was read.
func (s *Store) commitMail(ctx context.Context, account string, r *mailRead, read []*MailSet, ops []clientv3.Op) (bool, error) {
	seqCmp := func(account string, rev int64) clientv3.Cmp {
		if rev == 0 {
			return absent(mailSeqKey(account))
		}
		return unchanged(mailSeqKey(account), rev)
	}
	cmps := []clientv3.Cmp{unchanged(accountKey(account), r.arev), seqCmp(account, r.seqRev)}
	for _, o := range read {
		if o.Account.ID != account {
			cmps = append(cmps, seqCmp(o.Account.ID, o.seqRev))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// maxMailRounds bounds how often ChangeMail decides again because what
// it read changed meanwhile.
const maxMailRounds = 50

// ChangeMail applies fn to an account's mail records and commits the specs
// it returns in one transaction with audit, compared against the account
// and its mail sequence key: fn decides on a consistent picture (the plan's
// mailbox count, the forwarders a loop check walks), and a concurrent
// change makes fn run again. On fn's error nothing is written; an empty
// change writes nothing. A spec new to the set drops the old status of a
// deleted namesake in the same transaction.
func (s *Store) ChangeMail(ctx context.Context, account string, fn func(*MailSet) (*MailChange, error), audit AuditEvent) error {
	for round := 0; ; round++ {
		if round == maxMailRounds {
			// Another account it read (a loop check) is that busy.
			return fmt.Errorf("the mail this change depends on kept changing while it was decided; try again: %w", ErrNotYet)
		}
		r, err := s.readMail(ctx, account)
		if err != nil {
			return err
		}
		ch, err := fn(r.set)
		if err != nil {
			return err
		}
		if ch.empty() {
			return nil
		}
		now := time.Now().UTC()
		ops := mailSpecOps(account, r.set, ch, now)
		ops = append(ops, mailSeqPut(account, MailChangedSpec, now))
		if audit.Action != "" {
			ops = append(ops, auditPut(audit))
		}
		if len(ops) > MaxTxnOps {
			return fmt.Errorf("change to the mail of %s needs %d operations; at most %d fit in one transaction", r.set.Account.Username, len(ops), MaxTxnOps)
		}
		ok, err := s.commitMail(ctx, account, r, ch.Read, ops)
		if err != nil {
			return fmt.Errorf("change mail of %s: %w", r.set.Account.Username, err)
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func mailSpecOps(account string, set *MailSet, ch *MailChange, now time.Time) []clientv3.Op {
	var ops []clientv3.Op
	for _, d := range ch.Domains {
		if _, ok := set.Domains[d.Domain]; !ok {
			ops = append(ops, clientv3.OpDelete(mailDomainStateKey(account, d.Domain)))
		}
		d.UpdatedAt = now
		if d.CreatedAt.IsZero() {
			d.CreatedAt = now
		}
		ops = append(ops, clientv3.OpPut(mailDomainKey(account, d.Domain), mustJSON(d)))
	}
	for _, m := range ch.Mailboxes {
		if _, ok := set.Mailboxes[m.Address]; !ok {
			ops = append(ops, clientv3.OpDelete(mailboxStateKey(account, m.Address)))
		}
		m.UpdatedAt = now
		if m.CreatedAt.IsZero() {
			m.CreatedAt = now
		}
		ops = append(ops, clientv3.OpPut(mailboxKey(account, m.Address), mustJSON(m)))
	}
	return ops
}

// removedMailOps are the mail writes of removing domains from account a
// (ChangeSites): a domain that still has live mailboxes or forwarders is
// refused (CONFLICT), else its mail domain is marked deleted so the mail
// controller removes it from the node. The compare on the account's mail
// sequence key keeps a concurrent mail change (a createMailbox) from
// slipping in between.
func (s *Store) removedMailOps(ctx context.Context, a *Account, removed []string, now time.Time) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(removed) == 0 {
		return nil, nil, nil
	}
	r, err := s.readMail(ctx, a.ID)
	if err != nil {
		return nil, nil, err
	}
	cmp := absent(mailSeqKey(a.ID))
	if r.seqRev != 0 {
		cmp = unchanged(mailSeqKey(a.ID), r.seqRev)
	}
	var ops []clientv3.Op
	for _, name := range removed {
		boxes, fwds := 0, 0
		for _, m := range r.set.Mailboxes {
			if m.Domain == name && !m.Deleted {
				boxes++
			}
		}
		d, ok := r.set.Domains[name]
		if !ok || d.Deleted {
			if boxes > 0 {
				return nil, nil, fmt.Errorf("domain %s still has %d mailboxes; delete them first: %w", name, boxes, ErrConflict)
			}
			continue
		}
		fwds = len(d.Aliases)
		if boxes+fwds > 0 {
			return nil, nil, fmt.Errorf("domain %s still has %d mailboxes and %d forwarders; delete them first: %w", name, boxes, fwds, ErrConflict)
		}
		nd := *d
		nd.Aliases, nd.CatchAll, nd.Deleted, nd.UpdatedAt = nil, "", true, now
		nd.DKIM = slices.Clone(d.DKIM)
		nd.Generation++
		ops = append(ops, clientv3.OpPut(mailDomainKey(a.ID, name), mustJSON(&nd)))
	}
	if len(ops) > 0 {
		ops = append(ops, mailSeqPut(a.ID, MailChangedSpec, now))
	}
	return []clientv3.Cmp{cmp}, ops, nil
}

// mailDomainsFree refuses (CONFLICT) adding a domain to account while
// another account still has a mail domain of that name that the mail
// controller has not dropped yet: the node would hold two. It reads the
// keys of every account's mail domains (keys only).
func (s *Store) mailDomainsFree(ctx context.Context, account string, added []string) error {
	if len(added) == 0 {
		return nil
	}
	resp, err := s.cli.Get(ctx, prefixMail, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read mail domains: %w", err)
	}
	for _, kv := range resp.Kvs {
		owner, rest, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), prefixMail), "/")
		name, ok := strings.CutPrefix(rest, "domain/")
		if ok && owner != account && slices.Contains(added, name) {
			return fmt.Errorf("the mail of %s on another account is still being removed; try again shortly: %w", name, ErrNotYet)
		}
	}
	return nil
}
