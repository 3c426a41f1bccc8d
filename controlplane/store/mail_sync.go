package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// The mail controller's side of the records: it reads an account's specs
// with their statuses and the finished tasks they wait on, and writes back
// statuses, the removal of deleted objects, the domain specs it advances
// (DKIM selectors published, retired) and the tasks that converge the
// rest, in one transaction on the account's mail sequence key.

// MailTask is a task the mail controller writes for the account's node;
// Mailbox or Domain names the object whose status waits on it.
type MailTask struct {
	Spec            *agentpb.Task
	Mailbox, Domain string
}

// MailSync is what the mail controller writes for one account.
type MailSync struct {
	// Mailboxes and Domains are status writes, by address and domain.
	Mailboxes map[string]*MailStatus
	Domains   map[string]*MailStatus
	// DroppedMailboxes and DroppedDomains were deleted on the node: their
	// spec and status are removed.
	DroppedMailboxes []string
	DroppedDomains   []string
	// DomainSpecs are domain specs the controller advances (a DKIM
	// selector published and made signing, a retired one removed).
	DomainSpecs []*MailDomain
	Tasks       []MailTask
	// Answered: a node's answer was recorded.
	Answered bool
	// More: the budget left work for another round.
	More bool
}

// NewMailSync returns an empty MailSync.
func NewMailSync() *MailSync {
	return &MailSync{Mailboxes: map[string]*MailStatus{}, Domains: map[string]*MailStatus{}}
}

func (c *MailSync) empty() bool {
	return c == nil || len(c.Mailboxes)+len(c.Domains)+len(c.DroppedMailboxes)+len(c.DroppedDomains)+len(c.DomainSpecs)+len(c.Tasks) == 0
}

// mailOrphanBudget bounds the done notices no object waits on that one
// round consumes.
const mailOrphanBudget = 16

// SyncMail runs the mail controller's fn on an account's set, on the
// finished tasks its statuses wait on (by id; TaskLost for a record that
// is gone) and on the number of operations it may write (each status 1,
// its done notice 1, each task 2, each drop or spec 1), and commits what
// fn returns with the done notices of the outcomes it recorded. A change
// made meanwhile makes fn run again; fn setting More runs another round.
// An account that is gone is not an error: its late notices are deleted.
func (s *Store) SyncMail(ctx context.Context, account string, fn func(set *MailSet, finished map[string]*Task, budget int) (*MailSync, error)) error {
	for rounds := 0; ; rounds++ {
		if rounds > 1000 {
			return fmt.Errorf("sync of the mail of %s makes no progress", account)
		}
		r, err := s.readMail(ctx, account)
		if errors.Is(err, ErrNotFound) {
			if _, err := s.cli.Delete(ctx, mailDonePrefix(account), clientv3.WithPrefix()); err != nil {
				return fmt.Errorf("forget mail outcomes of %s: %w", account, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		waitedBy := map[string]bool{} // task id -> some status waits on it
		for _, m := range r.set.Mailboxes {
			waitedBy[m.Status.TaskID] = m.Status.TaskID != ""
		}
		for _, d := range r.set.Domains {
			waitedBy[d.Status.TaskID] = d.Status.TaskID != ""
		}
		delete(waitedBy, "")
		finished, err := s.finishedTasks(ctx, waitedBy)
		if err != nil {
			return err
		}
		notice := map[string]string{} // task id -> notice key
		var orphans []string
		for _, k := range r.done {
			id := k[strings.LastIndexByte(k, '/')+1:]
			if waitedBy[id] {
				notice[id] = k
			} else if len(orphans) < mailOrphanBudget {
				orphans = append(orphans, k)
			}
		}
		ch, err := fn(r.set, finished, MaxTxnOps-1-len(orphans))
		if err != nil {
			return err
		}
		ops, err := s.mailSyncOps(r.set, account, ch, notice)
		if err != nil {
			return err
		}
		for _, k := range orphans {
			ops = append(ops, clientv3.OpDelete(k))
		}
		if len(ops) == 0 {
			return nil
		}
		if !ch.empty() || len(orphans) > 0 {
			change := MailChangedTasks
			if ch != nil && ch.Answered {
				change = MailChangedStatus
			}
			ops = append(ops, mailSeqPut(account, change, time.Now().UTC()))
		}
		if len(ops) > MaxTxnOps {
			return fmt.Errorf("sync of the mail of %s needs %d operations; at most %d fit in one transaction", account, len(ops), MaxTxnOps)
		}
		ok, err := s.commitMail(ctx, account, r, nil, ops)
		if err != nil {
			return fmt.Errorf("sync mail of %s: %w", account, err)
		}
		if ok && !ch.More && len(r.done) <= len(notice)+len(orphans) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// finishedTasks reads the tasks of ids (a set) in transactions of at most
// MaxTxnOps reads and returns those that are no longer pending, by id, with
// TaskLost for a record that is gone: a controller's statuses wait on
// them.
func (s *Store) finishedTasks(ctx context.Context, ids map[string]bool) (map[string]*Task, error) {
	all := slices.Sorted(maps.Keys(ids))
	finished := map[string]*Task{}
	for len(all) > 0 {
		part := all[:min(len(all), MaxTxnOps)]
		all = all[len(part):]
		ops := make([]clientv3.Op, len(part))
		for i, id := range part {
			ops[i] = clientv3.OpGet(taskKey(id))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
		for i, id := range part {
			kvs := resp.Responses[i].GetResponseRange().Kvs
			if len(kvs) == 0 {
				finished[id] = TaskLost
				continue
			}
			t, err := decodeJSON[Task](kvs[0].Key, kvs[0].Value)
			if err != nil {
				return nil, err
			}
			if t.Status != TaskPending {
				finished[id] = t
			}
		}
	}
	return finished, nil
}

// mailSyncOps turns a MailSync into writes, with the deletion of the done
// notice of every task whose outcome it records (a status written that
// waited on a task in notice and no longer does).
func (s *Store) mailSyncOps(set *MailSet, account string, ch *MailSync, notice map[string]string) ([]clientv3.Op, error) {
	if ch.empty() {
		return nil, nil
	}
	now := time.Now().UTC()
	if len(ch.Tasks) > 0 && set.Account.Node == "" {
		return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, ErrNotYet)
	}
	var ops []clientv3.Op
	for _, mt := range ch.Tasks {
		t, tops, err := taskOps(set.Account.Node, mt.Spec, MailObject(account), "system", nil, now)
		if err != nil {
			return nil, err
		}
		ops = append(ops, tops...)
		var st *MailStatus
		switch {
		case mt.Mailbox != "":
			st = ch.Mailboxes[mt.Mailbox]
		case mt.Domain != "":
			st = ch.Domains[mt.Domain]
		}
		if st == nil {
			return nil, fmt.Errorf("mail task %s names no status of this sync", t.Action)
		}
		st.TaskID = t.ID
	}
	// put writes the statuses of one kind, consuming the done notice of
	// each outcome recorded; a dropped object's status goes with it.
	put := func(statuses map[string]*MailStatus, old func(string) *MailStatus, dropped []string, key func(string) string) {
		for name, st := range statuses {
			if o := old(name); o != nil {
				if k, ok := notice[o.TaskID]; ok && st.TaskID != o.TaskID {
					ops = append(ops, clientv3.OpDelete(k))
				}
			}
			if slices.Contains(dropped, name) {
				continue
			}
			st.UpdatedAt = now
			ops = append(ops, clientv3.OpPut(key(name), mustJSON(st)))
		}
	}
	put(ch.Mailboxes, func(addr string) *MailStatus {
		if m := set.Mailboxes[addr]; m != nil {
			return &m.Status
		}
		return nil
	}, ch.DroppedMailboxes, func(addr string) string { return mailboxStateKey(account, addr) })
	put(ch.Domains, func(name string) *MailStatus {
		if d := set.Domains[name]; d != nil {
			return &d.Status
		}
		return nil
	}, ch.DroppedDomains, func(name string) string { return mailDomainStateKey(account, name) })
	for _, addr := range ch.DroppedMailboxes {
		ops = append(ops, clientv3.OpDelete(mailboxKey(account, addr)), clientv3.OpDelete(mailboxStateKey(account, addr)))
	}
	for _, name := range ch.DroppedDomains {
		ops = append(ops, clientv3.OpDelete(mailDomainKey(account, name)), clientv3.OpDelete(mailDomainStateKey(account, name)))
	}
	for _, d := range ch.DomainSpecs {
		d.UpdatedAt = now
		ops = append(ops, clientv3.OpPut(mailDomainKey(account, d.Domain), mustJSON(d)))
	}
	return ops, nil
}

// MailUsageResult, MailLogResult, ScanMailboxResult, MailQueueResult and
// TrainMailResult are the typed results of the mail query tasks;
// MailDomainResult and MailboxResult those of the ensures and deletes.

func (t *Task) MailDomainResult() (*agentpb.MailDomainResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMailDomain)
}

func (t *Task) MailboxResult() (*agentpb.MailboxResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMailbox)
}

func (t *Task) MailUsageResult() (*agentpb.MailUsageResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMailUsage)
}

func (t *Task) MailLogResult() (*agentpb.MailLogResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMailLog)
}

func (t *Task) ScanMailboxResult() (*agentpb.ScanMailboxResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetScanMailbox)
}

func (t *Task) MailQueueResult() (*agentpb.MailQueueResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetMailQueue)
}

func (t *Task) TrainMailResult() (*agentpb.TrainMailResult, error) {
	return typedResult(t, (*agentpb.TaskResult).GetTrainMail)
}
