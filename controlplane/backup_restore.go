package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Restores. FILES, DATABASE and MAILBOX are one restoreBackup task on the
// account's node. ZONE is one too: the node answers with the state the
// backup recorded, and the control plane writes the zone's records back
// through the zone write path the API uses, so the zone controllers push
// them. ALL on the account's node is the node's restore of everything,
// then the zones from the state.
//
// ALL onto another node (the account's node is gone, or the account was
// deleted) takes steps, recorded in Status.Step:
//
//	state    the state is read from the backup on the new node (a ZONE
//	         restore, which changes nothing on the node);
//	place    the account is placed on the new node through the normal
//	         lifecycle (pinned there; recreated from the state when its
//	         record is gone) and its databases, users and mailboxes are
//	         written back, with random passwords sealed to the new node
//	         until the node's restore puts the original hashes back;
//	wait     until the account controller has ensured it there;
//	restore  the node's ALL restore, in place; then the zones.
//
// Partial is reported as PARTIAL, never as success.
const (
	restoreStepState   = "state"
	restoreStepPlace   = "place"
	restoreStepWait    = "wait"
	restoreStepRestore = "restore"

	// restoreWaitPoll is how often a restore waiting for its account is
	// looked at; restoreWaitMax how long it waits before failing.
	restoreWaitPoll = 3 * time.Second
	restoreWaitMax  = time.Hour
)

// restoreEvent queues a restore with work to do, and keeps the unfinished
// ones for the resync (lost tasks, waits).
func (bc *backupController) restoreEvent(ev store.Event) (string, bool, bool) {
	id := lastSegment(ev.Name)
	key := restoreKeyPfx + id
	if ev.Deleted {
		return key, false, false
	}
	r, err := store.DecodeRestore(ev)
	if err != nil {
		return key, false, false
	}
	open := !restoreFinished(r.Status.State)
	return key, open && r.Status.TaskID == "", open
}

func restoreFinished(s store.BackupState) bool {
	return s == store.BackupSucceeded || s == store.BackupPartial || s == store.BackupFailed
}

// restoreWhat maps the record's What to the action's.
func restoreWhat(w store.RestoreWhat) agentpb.RestoreWhat {
	switch w {
	case store.RestoreAll:
		return agentpb.RestoreWhat_RESTORE_WHAT_ALL
	case store.RestoreFiles:
		return agentpb.RestoreWhat_RESTORE_WHAT_FILES
	case store.RestoreDatabase:
		return agentpb.RestoreWhat_RESTORE_WHAT_DATABASE
	case store.RestoreMailbox:
		return agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX
	case store.RestoreZone:
		return agentpb.RestoreWhat_RESTORE_WHAT_ZONE
	}
	return agentpb.RestoreWhat_RESTORE_WHAT_UNSPECIFIED
}

// restoreAction builds r's restoreBackup action of what.
func restoreAction(r *store.Restore, b *store.Backup, repo *agentpb.BackupRepository, what store.RestoreWhat, inPlace bool, engine string) *agentpb.RestoreBackupAction {
	act := &agentpb.RestoreBackupAction{RestoreId: r.ID, BackupId: b.ID, Repository: repo, What: restoreWhat(what), InPlace: inPlace}
	switch what {
	case store.RestoreAll:
		// Installed certificates' keys come back only where the restore
		// set the account up and held their records: in place, the node
		// serves its own, which may be newer than the backup's.
		act.CertificateSites = r.Status.HeldCertificates
	case store.RestoreFiles:
		act.Path = r.Path
	case store.RestoreDatabase:
		act.Database = &agentpb.BackupDatabase{Name: r.Database, Engine: engine}
		if !inPlace {
			act.DatabaseInto = r.DatabaseInto
		}
	case store.RestoreMailbox:
		act.Mailbox = r.Mailbox
	}
	return act
}

// databaseEngine is the engine of the account's database name as the
// store has it; the backup's contents name databases without their
// engine. MariaDB when the database is gone.
func (bc *backupController) databaseEngine(ctx context.Context, accountID, name string) (string, error) {
	if name == "" || accountID == "" {
		return "", nil
	}
	set, err := bc.st.GetDatabases(ctx, accountID)
	if errors.Is(err, store.ErrNotFound) {
		return validate.EngineMariaDB, nil
	}
	if err != nil {
		return "", err
	}
	if d := set.Databases[name]; d != nil && d.Engine != "" {
		return d.Engine, nil
	}
	return validate.EngineMariaDB, nil
}

// restorePlan is what a restore's result asks of the control plane,
// worked out before the record is written.
type restorePlan struct {
	task  *store.Task
	res   *agentpb.RestoreResult
	state *BackupState
	// zoneFailed are zones that could not be written back.
	zoneFailed []store.BackupItemFailure
	zonesDone  []string
	// certsDone and certsFailed: the certificates of an account set up
	// on a node (restoreCertificates).
	certsDone   []string
	certsFailed []store.BackupItemFailure
	placeErr    error
	newAccount  string   // the account id a recreated account got
	heldCerts   []string // the installed certificates held for the restore
}

func (bc *backupController) syncRestore(ctx context.Context, id string) error {
	key := restoreKeyPfx + id
	r, _, err := bc.st.GetRestoreRev(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if restoreFinished(r.Status.State) {
		return nil
	}
	outcomes, err := bc.st.RestoreOutcomes(ctx, id)
	if err != nil {
		return err
	}
	finished, err := bc.finishedTasks(ctx, outcomes, r.Status.TaskID)
	if err != nil {
		return err
	}
	b, err := bc.st.GetBackup(ctx, r.Backup)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	a, err := bc.accountOf(ctx, r.AccountID)
	if err != nil {
		return err
	}
	crossNode, err := bc.crossNode(ctx, r, a)
	if err != nil {
		return err
	}
	engine := ""
	if r.What == store.RestoreDatabase {
		if engine, err = bc.databaseEngine(ctx, r.AccountID, r.Database); err != nil {
			return err
		}
	}
	// The result's side effects on other records (zones, the account)
	// come first: each is idempotent, so a crash before the restore's
	// record is written repeats them harmlessly.
	var plan restorePlan
	if t := finished[r.Status.TaskID]; r.Status.TaskID != "" && t != nil {
		plan.task = t
		if res, err := t.RestoreResult(); err == nil {
			plan.res = res
			if len(res.GetStateJson()) > 0 {
				if plan.state, err = decodeBackupState(res.GetStateJson()); err != nil {
					plan.zoneFailed = append(plan.zoneFailed, store.BackupItemFailure{Item: "state", Error: err.Error()})
				}
			}
		}
		if plan.res != nil && r.What == store.RestoreDatabase && !r.InPlace && len(plan.res.GetFailed()) == 0 {
			if err := bc.adoptRestoredDatabase(ctx, r, a, engine); err != nil {
				return err
			}
		}
		if plan.state != nil {
			switch r.Status.Step {
			case restoreStepState:
				plan.newAccount, plan.heldCerts, plan.placeErr = bc.placeFromState(ctx, r, a, plan.state, plan.res.GetCertificateKeys())
			default:
				if r.What == store.RestoreZone || r.What == store.RestoreAll {
					plan.zonesDone, plan.zoneFailed = bc.applyZones(ctx, r, plan.state, plan.res.GetZoneFiles())
				}
				if r.What == store.RestoreAll && a != nil && !a.Deleted && placedByRestore(r) {
					plan.certsDone, plan.certsFailed = bc.restoreCertificates(ctx, r, a, plan.state, plan.res)
				}
			}
		}
	}
	var before, after []store.BackupEvent
	var waitMore bool
	updated, err := bc.st.UpdateRestore(ctx, id, func(r *store.Restore) ([]*store.ObjectTask, error) {
		snap := mustJSON(r)
		before = slices.Clone(r.Status.Events)
		waitMore = false
		now := time.Now().UTC()
		st := &r.Status
		if t := plan.task; t != nil && st.TaskID == t.ID {
			st.TaskID, st.TaskGeneration, st.Progress = "", 0, nil
			bc.recordRestore(r, &plan, now)
		}
		var task *agentpb.Task
		var node string
		if st.TaskID == "" && !restoreFinished(st.State) {
			var err error
			task, node, waitMore, err = bc.nextRestoreStep(ctx, r, b, a, crossNode, engine, now)
			if err != nil {
				return nil, err
			}
		}
		after = r.Status.Events
		if task == nil {
			if mustJSON(r) == snap {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}
		return []*store.ObjectTask{{Node: node, Spec: task, CreatedBy: "controller", Track: true}}, nil
	}, store.AuditEvent{})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if errors.Is(err, store.ErrNoNode) {
		bc.ctl.EnqueueAfter(key, time.Second)
		return nil
	}
	if err != nil {
		return err
	}
	for _, tid := range outcomes {
		if err := bc.st.ForgetRestoreOutcome(ctx, id, tid); err != nil {
			return err
		}
	}
	bc.auditEvents(ctx, "restore", id, newEvents(before, after))
	if restoreFinished(updated.Status.State) && !restoreFinished(r.Status.State) {
		res := "ok: " + strings.ToLower(string(updated.Status.State))
		if updated.Status.State != store.BackupSucceeded {
			res = "failed: " + strings.ToLower(string(updated.Status.State)) + restoreSummary(updated)
		}
		_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "backup.restore", id, res))
	}
	if waitMore {
		bc.ctl.EnqueueAfter(key, restoreWaitPoll)
	}
	return nil
}

func restoreSummary(r *store.Restore) string {
	if r.Status.Error != "" {
		return ": " + r.Status.Error
	}
	if len(r.Status.Failed) > 0 {
		return ": failed " + failedItems(r.Status.Failed)
	}
	return ""
}

// crossNode: r restores ALL onto a node other than the account's, or the
// account (or its node) is gone.
func (bc *backupController) crossNode(ctx context.Context, r *store.Restore, a *store.Account) (bool, error) {
	if r.What != store.RestoreAll {
		return false, nil
	}
	if a == nil || a.Deleted || a.Node == "" {
		return true, nil
	}
	if r.Node != "" && r.Node != a.Node {
		return true, nil
	}
	ok, err := bc.nodeExists(ctx, a.Node)
	return !ok, err
}

// placedByRestore: r set its account up on a node (recreated it, or moved
// it off a node that is gone), so what lived only on the old node, the
// certificates, must be brought back or reported.
func placedByRestore(r *store.Restore) bool {
	return slices.ContainsFunc(r.Status.Events, func(ev store.BackupEvent) bool { return ev.Kind == "placed" })
}

// recordRestore writes a finished task's outcome on r.
func (bc *backupController) recordRestore(r *store.Restore, p *restorePlan, now time.Time) {
	st := &r.Status
	res, err := p.task.RestoreResult()
	if err != nil {
		st.State, st.Error, st.FinishedAt = store.BackupFailed, taskFailure(p.task, err), now
		st.AddEvent(now, "failed", st.Error)
		return
	}
	if st.Step == restoreStepState {
		switch {
		case p.state == nil:
			st.State, st.Error, st.FinishedAt = store.BackupFailed, "the backup holds no readable account state", now
			st.AddEvent(now, "failed", st.Error)
		case p.placeErr != nil:
			st.State, st.Error, st.FinishedAt = store.BackupFailed, "place the account on "+r.Node+": "+p.placeErr.Error(), now
			st.AddEvent(now, "failed", st.Error)
		default:
			if p.newAccount != "" {
				r.AccountID = p.newAccount
			}
			st.HeldCertificates = p.heldCerts
			st.Step = restoreStepWait
			st.StartedAt = now
			st.AddEvent(now, "placed", "the account is being set up on node "+r.Node)
		}
		return
	}
	st.Restored = appendNew(st.Restored, res.GetRestored()...)
	st.Restored = appendNew(st.Restored, p.zonesDone...)
	st.Restored = appendNew(st.Restored, p.certsDone...)
	st.Failed = appendFailures(st.Failed, itemFailures(res.GetFailed())...)
	st.Failed = appendFailures(st.Failed, p.zoneFailed...)
	st.Failed = appendFailures(st.Failed, p.certsFailed...)
	st.FinishedAt = now
	msg := fmt.Sprintf("%d files, %d bytes", res.GetFiles(), res.GetBytes())
	if into := res.GetIntoPath(); into != "" {
		msg += " into " + into
	}
	if len(st.Failed) > 0 {
		st.State = store.BackupPartial
		st.AddEvent(now, "partial", msg+"; failed: "+failedItems(st.Failed))
		return
	}
	st.State = store.BackupSucceeded
	st.AddEvent(now, "succeeded", msg)
}

// appendFailures adds the failures of items not failed yet: the node and
// the controller may both report one (a zone file the node could not
// read, whose records the controller then cannot write).
func appendFailures(s []store.BackupItemFailure, add ...store.BackupItemFailure) []store.BackupItemFailure {
	for _, f := range add {
		if !slices.ContainsFunc(s, func(g store.BackupItemFailure) bool { return g.Item == f.Item }) {
			s = append(s, f)
		}
	}
	return s
}

func appendNew(s []string, add ...string) []string {
	for _, v := range add {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

// nextRestoreStep decides r's next task (nil: none; r may have changed).
// wait: look again after restoreWaitPoll.
func (bc *backupController) nextRestoreStep(ctx context.Context, r *store.Restore, b *store.Backup, a *store.Account, crossNode bool, engine string, now time.Time) (task *agentpb.Task, node string, wait bool, err error) {
	st := &r.Status
	fail := func(why string) (*agentpb.Task, string, bool, error) {
		st.State, st.Error, st.FinishedAt = store.BackupFailed, why, now
		st.AddEvent(now, "failed", why)
		return nil, "", false, nil
	}
	switch {
	case b == nil:
		return fail("backup " + r.Backup + " does not exist")
	case !finishedOK(b.Status.State) || b.Deleting:
		return fail("backup " + b.ID + " is " + strings.ToLower(string(b.Status.State)) + ": only a finished backup restores")
	}
	send := func(on string, what store.RestoreWhat, inPlace bool) (*agentpb.Task, string, bool, error) {
		repo, err := bc.repository(ctx, b.Target, on, b.Account)
		if err != nil {
			if errors.Is(err, errBackupSetup) {
				return fail(err.Error())
			}
			return nil, "", false, err
		}
		if st.StartedAt.IsZero() {
			st.StartedAt = now
		}
		st.State = store.BackupRunning
		st.AddEvent(now, "started", fmt.Sprintf("%s from backup %s on node %s", strings.ToLower(string(what)), b.ID, on))
		return &agentpb.Task{Generation: r.Generation, Action: &agentpb.Task_RestoreBackup{
			RestoreBackup: restoreAction(r, b, repo, what, inPlace, engine)}}, on, false, nil
	}
	if !crossNode || st.Step == restoreStepWait || st.Step == restoreStepRestore {
		if st.Step == restoreStepWait {
			return bc.waitForAccount(ctx, r, send, fail, now)
		}
		if a == nil || a.Deleted {
			return fail("the account was deleted: restore it with restoreAccount")
		}
		if a.Node == "" {
			return fail("the account is not placed on a node")
		}
		st.Step = restoreStepRestore
		inPlace := r.InPlace || r.What == store.RestoreAll || r.What == store.RestoreZone
		return send(a.Node, r.What, inPlace)
	}
	// ALL onto another node: read the state first, on the node it goes to.
	target := r.Node
	if target == "" {
		if ok, err := bc.nodeExists(ctx, b.Node); err != nil {
			return nil, "", false, err
		} else if ok && (a == nil || a.Deleted) {
			target = b.Node
		}
	}
	if target == "" {
		return fail("the account's node is gone: name the node to restore onto")
	}
	if ok, err := bc.nodeExists(ctx, target); err != nil {
		return nil, "", false, err
	} else if !ok {
		return fail("node " + target + " does not exist")
	}
	r.Node = target
	st.Step = restoreStepState
	return send(target, store.RestoreZone, false)
}

// waitForAccount sends the ALL restore once the account is ensured on the
// restore's node.
func (bc *backupController) waitForAccount(ctx context.Context, r *store.Restore,
	send func(string, store.RestoreWhat, bool) (*agentpb.Task, string, bool, error),
	fail func(string) (*agentpb.Task, string, bool, error), now time.Time) (*agentpb.Task, string, bool, error) {
	a, err := bc.accountOf(ctx, r.AccountID)
	if err != nil {
		return nil, "", false, err
	}
	switch {
	case a == nil || a.Deleted:
		return fail("the account went away while it was being restored")
	case a.Status == store.AccountFailed:
		return fail("the account could not be set up on node " + r.Node + ": " + a.Reason)
	case now.Sub(r.Status.StartedAt) > restoreWaitMax:
		why := ""
		if a.Reason != "" {
			why = " (" + a.Reason + ")"
		}
		return fail("the account was not ready on node " + r.Node + " within " + restoreWaitMax.String() + why)
	case a.Node == r.Node && a.AppliedGeneration > 0 && a.AppliedGeneration >= a.Generation:
		if !slices.ContainsFunc(r.Status.Events, func(ev store.BackupEvent) bool { return ev.Kind == "recreated" }) {
			if err := bc.kickRecreated(ctx, a.ID); err != nil {
				return nil, "", false, err
			}
			r.Status.AddEvent(now, "recreated", "the account is on node "+r.Node+"; its databases and mail are being set up there")
			return nil, "", true, nil
		}
		settled, err := bc.recreatedSettled(ctx, a.ID)
		if err != nil || !settled {
			return nil, "", err == nil, err
		}
		r.Status.Step = restoreStepRestore
		return send(r.Node, store.RestoreAll, true)
	}
	return nil, "", true, nil
}

// applyZones writes every zone of state back,
// through the zone write path the API uses: each zone's records become
// the backup's, with a new generation, and the zone controller pushes
// them. The records come from the zone's BIND file in files when the
// backup has one (older backups: from the state). A zone that is not the
// account's any more is reported, not taken.
func (bc *backupController) applyZones(ctx context.Context, r *store.Restore, state *BackupState, files []*agentpb.BackupZoneFile) (done []string, failed []store.BackupItemFailure) {
	zones := &zoneWriter{store: bc.st, views: &bc.s.dnsViews, ctl: &bc.s.zoneCtl}
	text := map[string]string{}
	for _, f := range files {
		text[f.GetName()] = f.GetText()
	}
	for _, zs := range state.Zones {
		item := "zone:" + zs.Name
		t, ok := text[zs.Name]
		switch {
		case ok:
			var err error
			if zs, err = zoneFromFile(zs, t); err != nil {
				failed = append(failed, store.BackupItemFailure{Item: item, Error: err.Error()})
				continue
			}
		case zs.RecordsInFile:
			// Never an empty zone for records that could not be read.
			failed = append(failed, store.BackupItemFailure{Item: item, Error: "the zone's file could not be read from the backup: its records are not restored"})
			continue
		}
		ev := store.NewAuditEvent("system", bc.s.id, "zone.restore", zs.Name, "ok: from backup "+r.Backup+" (restore "+r.ID+")")
		_, err := zones.ChangeZone(ctx, zs.Name, ev, func(z *store.Zone) error {
			if z.Account != r.AccountID {
				return fmt.Errorf("zone %s belongs to another account now", zs.Name)
			}
			if z.Deleted {
				return fmt.Errorf("zone %s is being deleted", zs.Name)
			}
			z.Records = restoredRecords(zs, z.Address)
			for _, rec := range z.Records {
				if n, err := strconv.ParseInt(strings.TrimPrefix(rec.ID, "r"), 10, 64); err == nil && n > z.NextID {
					z.NextID = n
				}
			}
			for i := range z.Records {
				if z.Records[i].ID == "" { // from the zone file only
					z.Records[i].ID = z.NewRecordID()
				}
			}
			z.DNSSEC = zs.DNSSEC
			z.Generation++
			z.Attempts = 0
			if z.Status == store.ZoneFailed {
				z.Status, z.Reason = store.ZonePending, ""
			}
			z.UpdatedAt = time.Now().UTC()
			return nil
		})
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				err = fmt.Errorf("zone %s does not exist", zs.Name)
			}
			failed = append(failed, store.BackupItemFailure{Item: item, Error: err.Error()})
			continue
		}
		done = append(done, item)
	}
	return done, failed
}

// restoredRecords are zone zs's records for a zone served at address now:
// records that pointed at the address the backup's zone had (the old
// node's) point at the new one.
func restoredRecords(zs BackupStateZone, address string) []store.ZoneRecord {
	out := slices.Clone(zs.Records)
	if zs.Address == "" || address == "" || zs.Address == address {
		return out
	}
	for i := range out {
		if (out[i].Type == "A" || out[i].Type == "AAAA") && out[i].Content == zs.Address {
			out[i].Content = address
		}
	}
	return out
}

// adoptRestoredDatabase records the database a side-by-side restore
// created on the node, so that it is the account's like any other (listed,
// counted against the plan, dumped and dropped with it). Its controller
// then finds it existing on the node. Idempotent.
func (bc *backupController) adoptRestoredDatabase(ctx context.Context, r *store.Restore, a *store.Account, engine string) error {
	if a == nil || a.Node == "" || r.DatabaseInto == "" {
		return nil
	}
	err := bc.st.ChangeDatabases(ctx, a.ID, "controller", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		if d := set.Databases[r.DatabaseInto]; d != nil && !d.Deleted {
			return nil, nil
		}
		now := time.Now().UTC()
		return &store.DatabaseChange{Databases: []*store.Database{{Account: a.ID, Name: r.DatabaseInto, Owner: a.Username,
			Engine: engine, Node: a.Node, Generation: 1, CreatedAt: now, UpdatedAt: now}}}, nil
	}, store.NewAuditEvent("system", bc.s.id, "backup.restoreDatabase", r.DatabaseInto, "ok: restored from "+r.Backup))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
