package controlplane

import (
	"maps"
	"slices"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// dkimGrace is how long a DKIM selector replaced by a rotation keeps its
// key and TXT record after it stopped signing: messages signed just before
// the rotation are verified by receivers hours or days later.
const dkimGrace = 7 * 24 * time.Hour

// mailCosts are the etcd operations syncMail's writes take (see
// store.SyncMail): a status and its consumed done notice, a task's record
// and queue entry, a drop's spec and status, a spec.
const (
	costStatus = 2
	costTask   = 2
	costDrop   = 2
	costSpec   = 1
)

// dkimRecord is a DKIM TXT record the controller publishes in (or, remove,
// withdraws from) the account's zone before syncMail advances the domain.
type dkimRecord struct {
	Domain, Selector, TXT string
	Remove                bool
}

// dkimRecords returns the TXT records an account's domains need published
// or withdrawn: a selector the node created (its TXT reported) and not yet
// published, and a retired selector past its grace period.
func dkimRecords(set *store.MailSet, now time.Time) []dkimRecord {
	var out []dkimRecord
	for _, name := range slices.Sorted(maps.Keys(set.Domains)) {
		d := set.Domains[name]
		if d.Deleted || d.Status.TaskID != "" {
			continue // a task in flight may report keys: after it
		}
		for _, k := range d.DKIM {
			switch {
			case !k.RetireAt.IsZero() && !now.Before(k.RetireAt):
				out = append(out, dkimRecord{Domain: name, Selector: k.Selector, Remove: true})
			case k.PublishedAt.IsZero():
				if txt := reportedTXT(&d.Status, k.Selector); txt != "" {
					out = append(out, dkimRecord{Domain: name, Selector: k.Selector, TXT: txt})
				}
			}
		}
	}
	return out
}

// unpublished reports whether st holds the TXT of a selector of d not
// published yet.
func unpublished(d *store.MailDomain, st *store.MailStatus) bool {
	for _, k := range d.DKIM {
		if k.PublishedAt.IsZero() && k.RetireAt.IsZero() && reportedTXT(st, k.Selector) != "" {
			return true
		}
	}
	return false
}

func reportedTXT(st *store.MailStatus, selector string) string {
	for _, k := range st.DKIM {
		if k.Selector == selector {
			return k.TXT
		}
	}
	return ""
}

// syncMail is the mail controller's decision for one account, a pure
// function of what the store read: first the outcome of every finished
// task goes into its object's status, then DKIM selectors whose records
// were published (done: "domain/selector" keys of dkimRecords carried out)
// start signing and retired ones go, then every object whose spec the node
// has not answered for gets the task that converges it, within budget
// operations (More says what is left for the next round).
//
// Nothing is sent before the node has applied the account once: a mail
// object needs its Linux user and home, and a refusal then would leave it
// FAILED at that generation (a restored account's mailboxes exist before
// it is placed). One task per object is in flight at most. A mailbox waits for its
// domain's first ensure (the node refuses a mailbox of a domain it does
// not serve); a deleted domain waits until its mailboxes are gone. A
// failed change is not retried at the same generation; a change of the
// account's suspension is sent again to every object.
func syncMail(set *store.MailSet, finished map[string]*store.Task, done map[string]bool, budget int, now time.Time) *store.MailSync {
	sy := &mailSyncer{ch: store.NewMailSync(), finished: finished, budget: budget}
	ch := sy.ch
	a := set.Account
	send := !a.Deleted && a.Node != "" && a.AppliedGeneration > 0

	// domainServed: the node holds the domain (an ensure succeeded there).
	domainServed := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(set.Domains)) {
		d := set.Domains[name]
		st := d.Status
		skip, changed := sy.settle(&st, func(t *store.Task) bool {
			dropped := recordMailDomain(&st, d, t)
			if !dropped && unpublished(d, &st) {
				// The node reported a new key: the next round publishes
				// its record (dkimRecords reads the statuses this round
				// writes).
				ch.More = true
			}
			return dropped
		}, func() {
			ch.Domains[name] = &st
			ch.DroppedDomains = append(ch.DroppedDomains, name)
		})
		if skip {
			domainServed[name] = st.TaskID != "" && st.Served && st.Node == a.Node
			continue
		}
		nd := advanceDKIM(d, done, now)
		if nd == nil {
			nd = dkimDrift(a, d, &st)
		}
		if nd != nil && sy.spend(costSpec) {
			ch.DomainSpecs = append(ch.DomainSpecs, nd)
			d = nd
		}
		domainServed[name] = st.Served && st.Node == a.Node && !d.Deleted
		if send && !(d.Deleted && hasMailboxes(set, name)) && sy.send(&st, nextMailDomainTask(a, d, &st), store.MailTask{Domain: name}) {
			changed = true
		}
		if changed {
			ch.Domains[name] = &st
		}
	}

	for _, addr := range slices.Sorted(maps.Keys(set.Mailboxes)) {
		m := set.Mailboxes[addr]
		st := m.Status
		skip, changed := sy.settle(&st, func(t *store.Task) bool { return recordMailbox(&st, m, t) }, func() {
			ch.Mailboxes[addr] = &st
			ch.DroppedMailboxes = append(ch.DroppedMailboxes, addr)
		})
		if skip {
			continue
		}
		if send && (m.Deleted || domainServed[m.Domain]) && sy.send(&st, nextMailboxTask(a, m, &st), store.MailTask{Mailbox: addr}) {
			changed = true
		}
		if changed {
			ch.Mailboxes[addr] = &st
		}
	}
	return ch
}

// mailSyncer is one sync's writes and what is left of its budget.
type mailSyncer struct {
	ch       *store.MailSync
	finished map[string]*store.Task
	budget   int
}

// spend takes n operations from the budget; false (and More) when they
// are not left.
func (sy *mailSyncer) spend(n int) bool {
	if sy.budget < n {
		sy.ch.More = true
		return false
	}
	sy.budget -= n
	return true
}

// settle records the outcome of the task st waits on once it finished
// (record writes it into st and reports a drop, which drop then writes).
// skip: nothing more for the object in this sync (its task runs, the
// budget is spent, or it was dropped); changed: st holds news to write.
func (sy *mailSyncer) settle(st *store.MailStatus, record func(*store.Task) bool, drop func()) (skip, changed bool) {
	if st.TaskID == "" {
		return false, false
	}
	t, ok := sy.finished[st.TaskID]
	if !ok {
		return true, false // still running
	}
	// The drop's writes are reserved with the status's, and given back
	// when the object stays.
	if !sy.spend(costStatus + costDrop) {
		return true, false
	}
	if t != store.TaskLost {
		sy.ch.Answered = true
		if record(t) {
			drop()
			return true, true
		}
	}
	sy.budget += costDrop
	clearMailTask(st)
	return false, true
}

// send adds spec (nil: none), the task that converges the object whose
// status is st, when no task is in flight and the budget allows; it
// reports whether it did. mt names the object.
func (sy *mailSyncer) send(st *store.MailStatus, spec *agentpb.Task, mt store.MailTask) bool {
	if spec == nil {
		return false
	}
	if !sy.spend(costTask + costStatus) {
		clearMailTask(st)
		return false
	}
	mt.Spec = spec
	sy.ch.Tasks = append(sy.ch.Tasks, mt)
	return true
}

func hasMailboxes(set *store.MailSet, domain string) bool {
	for _, m := range set.Mailboxes {
		if m.Domain == domain {
			return true
		}
	}
	return false
}

func clearMailTask(st *store.MailStatus) {
	st.TaskID, st.TaskAction, st.TaskGeneration, st.TaskPassword, st.TaskSuspended = "", "", 0, 0, false
}

// behind reports whether the node has not answered for the spec's
// generation or for the account's suspension, or the account has moved
// to another node since it did.
func behind(gen int64, st *store.MailStatus, a *store.Account) bool {
	return st.ObservedGeneration < gen || st.State == "" || st.Suspended != a.Suspended || st.Node != "" && st.Node != a.Node
}

// recordMailFailure records a failed task as FAILED with what it attempted
// (the suspension it carried, the node it ran on), so that behind() is
// false until the next change: a failed object is retried only when its
// spec changes (a new generation: any mutation of it, or a retry the API
// offers by bumping it) or the account's suspension or node changes, never
// in a loop at the same generation (the resync does not retry it either).
// A node other than the one that applied the object holds nothing of it:
// the domain is not served there, the mailbox has no password there.
func recordMailFailure(st *store.MailStatus, t *store.Task) {
	st.State, st.Reason = store.MailFailed, t.Error
	if st.TaskAction == store.MailTaskEnsure {
		st.Suspended = st.TaskSuspended
	}
	if t.Node != "" && st.Node != t.Node {
		st.Served, st.PasswordGeneration, st.Node = false, 0, t.Node
	}
}

// recordMailDomain writes a finished task's outcome into st; it reports
// whether the domain is gone (a successful delete of a deleted spec).
func recordMailDomain(st *store.MailStatus, d *store.MailDomain, t *store.Task) (dropped bool) {
	defer clearMailTask(st)
	st.ObservedGeneration = st.TaskGeneration
	if t.Status != store.TaskSucceeded {
		recordMailFailure(st, t)
		return false
	}
	if st.TaskAction == store.MailTaskDelete {
		st.State, st.Reason = store.MailDeleted, ""
		return d.Deleted && st.TaskGeneration == d.Generation
	}
	st.State, st.Reason, st.Suspended, st.Served, st.Node = store.MailActive, "", st.TaskSuspended, true, t.Node
	res, err := t.MailDomainResult()
	if err != nil {
		st.Reason = err.Error()
		return false
	}
	st.DKIM = st.DKIM[:0]
	for _, k := range res.GetDkimKeys() {
		st.DKIM = append(st.DKIM, store.MailDKIMKey{Selector: k.GetSelector(), TXT: k.GetTxt(), Signing: k.GetSigning()})
	}
	return false
}

// recordMailbox writes a finished task's outcome into st; it reports
// whether the mailbox is gone.
func recordMailbox(st *store.MailStatus, m *store.Mailbox, t *store.Task) (dropped bool) {
	defer clearMailTask(st)
	st.ObservedGeneration = st.TaskGeneration
	if t.Status != store.TaskSucceeded {
		recordMailFailure(st, t)
		return false
	}
	if st.TaskAction == store.MailTaskDelete {
		st.State, st.Reason = store.MailDeleted, ""
		return m.Deleted && st.TaskGeneration == m.Generation
	}
	st.State, st.Reason, st.Suspended = store.MailActive, "", st.TaskSuspended
	if st.Node != t.Node {
		// A new node holds only the password this task carried.
		st.PasswordGeneration = st.TaskPassword
	} else {
		st.PasswordGeneration = max(st.PasswordGeneration, st.TaskPassword)
	}
	st.Node = t.Node
	if res, err := t.MailboxResult(); err == nil {
		st.UsedBytes, st.Messages, st.MeasuredAt = res.GetUsedBytes(), res.GetMessages(), t.FinishedAt
	}
	return false
}

// advanceDKIM returns d's spec with the selectors in done (published, or
// withdrawn after retirement) advanced, nil when none is. A published
// selector signs from the new generation on, and the one that signed
// before stops and is retired after dkimGrace: the new key's record is
// in DNS before any message carries its signature.
func advanceDKIM(d *store.MailDomain, done map[string]bool, now time.Time) *store.MailDomain {
	if d.Deleted {
		return nil
	}
	nd := *d
	nd.DKIM = nil
	changed := false
	for _, k := range d.DKIM {
		if !done[d.Domain+"/"+k.Selector] {
			nd.DKIM = append(nd.DKIM, k)
			continue
		}
		changed = true
		if !k.RetireAt.IsZero() {
			continue // withdrawn: the key goes with the next ensure
		}
		for i := range nd.DKIM {
			if nd.DKIM[i].Signing {
				nd.DKIM[i].Signing, nd.DKIM[i].RetireAt = false, now.Add(dkimGrace)
			}
		}
		k.PublishedAt, k.Signing, k.TXT = now, true, reportedTXT(&d.Status, k.Selector)
		nd.DKIM = append(nd.DKIM, k)
	}
	if !changed {
		return nil
	}
	// A selector published after another in the list: the earlier ones
	// appended before it still sign; only the newest signs.
	last := -1
	for i, k := range nd.DKIM {
		if k.Signing {
			last = i
		}
	}
	for i := range nd.DKIM {
		if nd.DKIM[i].Signing && i != last {
			nd.DKIM[i].Signing, nd.DKIM[i].RetireAt = false, now.Add(dkimGrace)
		}
	}
	nd.Generation++
	return &nd
}

// dkimDrift returns d's spec with every published selector whose key the
// node does not hold as published unpublished and not signing, nil when
// there is none: the node reported another TXT for it (the account moved
// to a node with other keys, the node lost its key) or does not sign with
// it (it was sent non-signing before it reported the key). The next ensure
// sends the selector non-signing, its reported TXT is published again, and
// it signs from then on (advanceDKIM). Only a status of the current spec
// on the account's node is compared.
func dkimDrift(a *store.Account, d *store.MailDomain, st *store.MailStatus) *store.MailDomain {
	if d.Deleted || st.TaskID != "" || st.State != store.MailActive || st.ObservedGeneration != d.Generation || st.Node != a.Node {
		return nil
	}
	nd := *d
	nd.DKIM = slices.Clone(d.DKIM)
	changed := false
	for i, k := range nd.DKIM {
		if k.PublishedAt.IsZero() || !k.RetireAt.IsZero() {
			continue
		}
		for _, rk := range st.DKIM {
			if rk.Selector == k.Selector && rk.TXT != "" && (rk.TXT != k.TXT || k.Signing && !rk.Signing) {
				nd.DKIM[i].PublishedAt, nd.DKIM[i].Signing, nd.DKIM[i].TXT = time.Time{}, false, ""
				changed = true
			}
		}
	}
	if !changed {
		return nil
	}
	nd.Generation++
	return &nd
}

// nextMailTask is the step both kinds of mail object take: nothing for
// an unversioned record or one the node is not behind on; else the delete
// or the ensure (built by the caller), marked in flight in st.
func nextMailTask(gen int64, deleted bool, st *store.MailStatus, a *store.Account, del, ensure func() *agentpb.Task) *agentpb.Task {
	if gen == 0 {
		return nil
	}
	if deleted {
		if st.ObservedGeneration >= gen && st.State != "" {
			return nil
		}
		st.TaskAction, st.TaskGeneration = store.MailTaskDelete, gen
		t := del()
		t.Generation = gen
		return t
	}
	if !behind(gen, st, a) {
		return nil
	}
	st.TaskAction, st.TaskGeneration, st.TaskSuspended = store.MailTaskEnsure, gen, a.Suspended
	t := ensure()
	t.Generation = gen
	return t
}

// nextMailDomainTask returns the task that converges d and marks it in
// flight in st; nil when nothing is to do.
func nextMailDomainTask(a *store.Account, d *store.MailDomain, st *store.MailStatus) *agentpb.Task {
	return nextMailTask(d.Generation, d.Deleted, st, a,
		func() *agentpb.Task {
			return &agentpb.Task{Action: &agentpb.Task_DeleteMailDomain{DeleteMailDomain: &agentpb.DeleteMailDomainAction{Username: a.Username, Domain: d.Domain}}}
		},
		func() *agentpb.Task {
			return &agentpb.Task{Action: &agentpb.Task_EnsureMailDomain{EnsureMailDomain: mailDomainAction(a, d, st)}}
		})
}

// mailDomainAction is d's ensure. A selector signs only on a node that
// reported the key published for it (st): a node that has not (a new node
// after a move) is sent it non-signing, and dkimDrift sees to the rest.
func mailDomainAction(a *store.Account, d *store.MailDomain, st *store.MailStatus) *agentpb.EnsureMailDomainAction {
	act := &agentpb.EnsureMailDomainAction{
		Username:  a.Username,
		Domain:    d.Domain,
		Suspended: a.Suspended,
		CatchAll:  d.CatchAll,
		Webmail:   d.Webmail,
		Spam: &agentpb.MailSpamSettings{
			Enabled:     d.Spam.Enabled,
			ScoreTenths: uint32(max(d.Spam.ScoreTenths, 0)),
			Action:      spamAction(d.Spam.Action),
		},
	}
	for _, local := range slices.Sorted(maps.Keys(d.Aliases)) {
		act.Aliases = append(act.Aliases, &agentpb.MailAlias{LocalPart: local, Targets: slices.Clone(d.Aliases[local])})
	}
	for _, k := range d.DKIM {
		held := st.Node == a.Node && k.TXT != "" && reportedTXT(st, k.Selector) == k.TXT
		act.DkimSelectors = append(act.DkimSelectors, &agentpb.MailDKIMSelector{Selector: k.Selector, Signing: k.Signing && held})
	}
	return act
}

func spamAction(s string) agentpb.MailSpamAction {
	switch s {
	case "JUNK_FOLDER":
		return agentpb.MailSpamAction_MAIL_SPAM_ACTION_JUNK_FOLDER
	case "REJECT":
		return agentpb.MailSpamAction_MAIL_SPAM_ACTION_REJECT
	}
	return agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG
}

// nextMailboxTask returns the task that converges m and marks it in flight
// in st: an ensure carries the sealed password only while the node has
// not applied its generation.
func nextMailboxTask(a *store.Account, m *store.Mailbox, st *store.MailStatus) *agentpb.Task {
	return nextMailTask(m.Generation, m.Deleted, st, a,
		func() *agentpb.Task {
			return &agentpb.Task{Action: &agentpb.Task_DeleteMailbox{DeleteMailbox: &agentpb.DeleteMailboxAction{Username: a.Username, Address: m.Address}}}
		},
		func() *agentpb.Task {
			return &agentpb.Task{Action: &agentpb.Task_EnsureMailbox{EnsureMailbox: mailboxAction(a, m, st)}}
		})
}

func mailboxAction(a *store.Account, m *store.Mailbox, st *store.MailStatus) *agentpb.EnsureMailboxAction {
	act := &agentpb.EnsureMailboxAction{
		Username:  a.Username,
		Address:   m.Address,
		QuotaMb:   uint32(max(m.QuotaMB, 0)),
		Disabled:  m.Disabled,
		Suspended: a.Suspended,
	}
	applied := st.PasswordGeneration
	if st.Node != a.Node {
		applied = 0 // a node that has not applied the mailbox holds no password
	}
	if m.PasswordGeneration > applied && m.Node == a.Node {
		switch {
		case len(m.SealedPassword) > 0:
			act.SealedPassword = slices.Clone(m.SealedPassword)
			st.TaskPassword = m.PasswordGeneration
		case len(m.SealedPasswordHash) > 0:
			act.SealedPasswordHash = slices.Clone(m.SealedPasswordHash)
			st.TaskPassword = m.PasswordGeneration
		}
	}
	if r := m.Autoresponder; r != nil {
		act.Autoresponder = &agentpb.MailAutoresponder{Subject: r.Subject, Body: r.Body, From: r.From}
		if !r.Until.IsZero() {
			act.Autoresponder.UntilUnix = r.Until.Unix()
		}
	}
	return act
}
