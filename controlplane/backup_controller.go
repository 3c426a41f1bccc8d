package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// The backup controller (leader only) runs each backup's one-shot tasks
// on the account's node and records their typed results in the backup's
// record (store backups.go: spec and status in one record under
// compare-and-swap, a tracked task written in the transaction that
// starts it), like the certificate controller does for certificates.
//
// Keys: a backup id; "restore:<id>" (backup_restore.go); "target:<name>"
// (backup_targets.go); keyBackupSchedule, the daily schedule's pass
// (backup_schedule.go); keyBackupSweep, the periodic look for lost tasks,
// deletions to retry and deleted accounts' expired backups.
//
// A backup's life: PENDING → (backupAccount task) RUNNING → SUCCEEDED,
// PARTIAL (items failed, the rest kept) or FAILED. verifyBackup and
// deleteBackup add one task each on a finished backup; only one task is
// in flight per backup at a time.
const (
	backupWorkers     = 4
	keyBackupSchedule = "#schedule"
	keyBackupSweep    = "#sweep"
	keyBackupTargets  = "#targets"
	restoreKeyPfx     = "restore:"
	targetKeyPfx      = "target:"

	defaultBackupSchedulePass = time.Minute
	defaultBackupSweep        = 5 * time.Minute
	defaultBackupsPerNode     = 2
)

// Task actions of backups (Task.Action, the oneof's JSON name).
const (
	actionBackupAccount = "backupAccount"
	actionRestoreBackup = "restoreBackup"
	actionVerifyBackup  = "verifyBackup"
	actionForgetBackup  = "forgetBackup"
	actionBackupAccess  = "ensureBackupAccess"
)

// BackupConfig tunes the backup controller; zero values take defaults.
type BackupConfig struct {
	// MaxPerNode caps the scheduled backups in flight on one node
	// (default 2): a node's window is worked through a few at a time.
	MaxPerNode int
	// SchedulePass is how often the schedule looks for due backups
	// (default 1m); Sweep how often lost tasks and expired backups of
	// deleted accounts are looked for (default 5m).
	SchedulePass, Sweep time.Duration
	// Paused runs no backup, restore or schedule: the records wait (a
	// cluster under maintenance; tests of the API that play the
	// controller).
	Paused bool
}

type backupController struct {
	s     *Server
	st    *store.Store
	ctl   *controller.Controller
	index *backupIndex
	cfg   BackupConfig
	// missed remembers the accounts already reported as missing their
	// day, so each is logged once until it succeeds again.
	missed map[string]bool
	// labels are the accounts the last-success metric has a series of.
	labels map[string]bool
	// targetRetries: target name → when a failed access task may be
	// sent again.
	targetRetries sync.Map
}

func newBackupController(s *Server) *backupController {
	cfg := s.cfg.Backup
	if cfg.MaxPerNode <= 0 {
		cfg.MaxPerNode = defaultBackupsPerNode
	}
	if cfg.SchedulePass <= 0 {
		cfg.SchedulePass = defaultBackupSchedulePass
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = defaultBackupSweep
	}
	bc := &backupController{s: s, st: s.store, index: newBackupIndex(), cfg: cfg, missed: map[string]bool{}}
	var m *controller.Metrics
	if s.metrics != nil {
		m = s.metrics.controllers
	}
	bc.ctl = controller.New(controller.Options{
		Name:  "backup",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindBackups, Handle: bc.backupEvent},
			{Kind: store.KindBackupOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindRestores, Handle: bc.restoreEvent, Resync: cfg.Sweep},
			{Kind: store.KindRestoreOutcomes, Handle: restoreOutcomeEvent, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindBackupTargets, Handle: targetEvent},
			{Kind: store.KindBackupTargetOutcomes, Handle: targetEvent, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
			{Kind: store.KindAccounts, Handle: bc.accountEvent},
			{Kind: store.KindNodes, Handle: bc.nodeEvent},
		},
		Ticks: []controller.Tick{
			{Key: keyBackupSchedule, Every: cfg.SchedulePass},
			{Key: keyBackupSweep, Every: cfg.Sweep},
			{Key: keyBackupTargets, Every: cfg.Sweep},
		},
		Sync:    bc.sync,
		Workers: backupWorkers,
		Log:     s.log,
		Metrics: m,
	})
	return bc
}

// Run runs the controller for one term as leader, with a fresh index.
func (bc *backupController) Run(ctx context.Context) {
	bc.index.reset()
	defer bc.index.reset()
	bc.ctl.Run(ctx)
}

// backupEvent indexes a backup and queues it when it has work to do now.
// Its finish also queues the schedule: a place on its node is free.
func (bc *backupController) backupEvent(ev store.Event) (string, bool, bool) {
	id := lastSegment(ev.Name)
	if ev.Deleted {
		bc.index.dropBackup(id)
		return id, false, false
	}
	b, err := store.DecodeBackup(ev)
	if err != nil {
		return id, false, false
	}
	prev := bc.index.putBackup(b)
	if prev != nil && prev.inFlight() && !backupInFlight(b) {
		bc.ctl.Enqueue(keyBackupSchedule)
	}
	return b.ID, backupNeedsWork(b), false
}

// backupNeedsWork: a backup the controller must act on now, judged from
// its record alone. A task in flight is brought back by its done notice.
func backupNeedsWork(b *store.Backup) bool {
	if b.Status.TaskID != "" {
		return false
	}
	switch {
	case b.Deleting:
		// A failed forget is retried by the sweep, not at once.
		return lastEventKind(b.Status.Events) != "forget-failed"
	case b.Status.State == store.BackupPending:
		return true
	case verifyDue(b):
		return true
	}
	return false
}

func verifyDue(b *store.Backup) bool {
	return b.VerifyRequested > b.Status.VerifiedGeneration && finishedOK(b.Status.State) &&
		lastEventKind(b.Status.Events) != "verify-failed"
}

func finishedOK(s store.BackupState) bool {
	return s == store.BackupSucceeded || s == store.BackupPartial
}

func backupInFlight(b *store.Backup) bool {
	return b.Status.TaskID != "" || b.Status.State == store.BackupPending || b.Status.State == store.BackupRunning
}

func lastEventKind(evs []store.BackupEvent) string {
	if len(evs) == 0 {
		return ""
	}
	return evs[len(evs)-1].Kind
}

func lastSegment(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// accountEvent keeps what the schedule needs of every account.
func (bc *backupController) accountEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		bc.index.dropAccount(ev.Name)
		return "", false, false
	}
	a, err := store.DecodeAccountEvent(ev)
	if err != nil {
		return "", false, false
	}
	bc.index.putAccount(a)
	// A backup waiting for its account to be placed goes on now.
	if a.Node != "" {
		for _, id := range bc.index.pendingOf(a.Username) {
			bc.ctl.Enqueue(id)
		}
	}
	return "", false, false
}

// nodeEvent: a removed node loses its queue; the tasks of its backups and
// restores are lost (recorded as failed by their sync), and the backup
// nodes' access lists follow the set of nodes.
func (bc *backupController) nodeEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		bc.ctl.Enqueue(bc.index.inFlightOn(ev.Name)...)
	}
	bc.ctl.Enqueue(keyBackupTargets)
	return "", false, false
}

func (bc *backupController) sync(ctx context.Context, key string) error {
	switch {
	case key == "":
		return nil
	case key == keyBackupSchedule:
		return bc.schedulePass(ctx, time.Now().UTC())
	case key == keyBackupSweep:
		return bc.sweep(ctx, time.Now().UTC())
	case key == keyBackupTargets:
		return bc.queueTargets(ctx)
	case strings.HasPrefix(key, restoreKeyPfx):
		return bc.syncRestore(ctx, strings.TrimPrefix(key, restoreKeyPfx))
	case strings.HasPrefix(key, targetKeyPfx):
		return bc.syncTarget(ctx, strings.TrimPrefix(key, targetKeyPfx))
	}
	return bc.syncBackup(ctx, key)
}

// finishedTasks reads the tasks of outcomes, and takes the task in flight
// for lost when its node was removed (its queue went with it).
func (bc *backupController) finishedTasks(ctx context.Context, outcomes []string, inFlight string) (map[string]*store.Task, error) {
	finished := map[string]*store.Task{}
	for _, tid := range outcomes {
		t, _, err := bc.st.GetTask(ctx, tid)
		switch {
		case errors.Is(err, store.ErrNotFound):
			finished[tid] = lostTask(tid)
		case err != nil:
			return nil, err
		default:
			finished[tid] = t
		}
	}
	if inFlight != "" && finished[inFlight] == nil {
		lost, err := bc.st.TaskLost(ctx, inFlight)
		if err != nil {
			return nil, err
		}
		if lost {
			t := lostTask(inFlight)
			t.Error = "the task was lost (its node was removed)"
			finished[inFlight] = t
		}
	}
	return finished, nil
}

// syncBackup converges one backup: records the task it waited on, then
// sends the next one, in one compare-and-swap.
func (bc *backupController) syncBackup(ctx context.Context, id string) error {
	b, err := bc.st.GetBackup(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		bc.index.dropBackup(id)
		return nil
	}
	if err != nil {
		return err
	}
	outcomes, err := bc.st.BackupOutcomes(ctx, id)
	if err != nil {
		return err
	}
	finished, err := bc.finishedTasks(ctx, outcomes, b.Status.TaskID)
	if err != nil {
		return err
	}
	// The backups the node's retention forgot go before this one shows as
	// finished, so whoever sees it finished sees the list it left.
	if t := finished[b.Status.TaskID]; t != nil && b.Status.State == store.BackupRunning && !b.Deleting {
		for _, fid := range retentionForgot(b, t) {
			bc.removeForgotten(ctx, b, fid)
		}
	}
	// What the next step needs from elsewhere is read before the
	// compare-and-swap; the step itself is decided inside it, on the
	// record as it stands.
	a, err := bc.accountOf(ctx, b.AccountID)
	if err != nil {
		return err
	}
	var (
		deleteNow bool
		result    store.BackupState
		before    []store.BackupEvent
		after     []store.BackupEvent
	)
	updated, err := bc.st.UpdateBackup(ctx, id, func(b *store.Backup) ([]*store.ObjectTask, error) {
		deleteNow, result = false, ""
		before = slices.Clone(b.Status.Events)
		snap := mustJSON(b)
		now := time.Now().UTC()
		changed := false
		if t := finished[b.Status.TaskID]; b.Status.TaskID != "" && t != nil {
			gen := b.Status.TaskGeneration
			b.Status.TaskID, b.Status.TaskGeneration = "", 0
			changed = true
			action := t.Action
			if action == "" {
				// A lost task: which one it was follows from the record.
				switch {
				case b.Deleting:
					action = actionForgetBackup
				case b.Status.State == store.BackupRunning:
					action = actionBackupAccount
				default:
					action = actionVerifyBackup
				}
			}
			switch action {
			case actionVerifyBackup:
				applyVerifyResult(b, t, gen, now)
			case actionForgetBackup:
				deleteNow = applyForgetResult(b, t, now)
			default: // backupAccount, or a lost task of unknown action
				applyBackupResult(b, t, now)
				result = b.Status.State
			}
		}
		after = b.Status.Events
		if deleteNow || b.Status.TaskID != "" {
			if !changed {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}
		task, node, err := bc.nextBackupStep(ctx, b, a, now)
		after = b.Status.Events
		if errors.Is(err, errForget) {
			deleteNow = true
			err = nil
		}
		if err != nil {
			return nil, err
		}
		if task == nil {
			if !changed && mustJSON(b) == snap {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}
		return []*store.ObjectTask{{Node: node, Spec: task, CreatedBy: "controller", Track: true}}, nil
	}, store.AuditEvent{})
	if errors.Is(err, store.ErrNotFound) {
		bc.index.dropBackup(id)
		return nil
	}
	if errors.Is(err, store.ErrNoNode) {
		bc.ctl.EnqueueAfter(id, time.Second)
		return nil
	}
	if err != nil {
		return err
	}
	for _, tid := range outcomes {
		if err := bc.st.ForgetBackupOutcome(ctx, id, tid); err != nil {
			return err
		}
	}
	bc.index.putBackup(updated)
	bc.auditEvents(ctx, "backup", id, newEvents(before, after))
	if result != "" {
		bc.countResult(updated)
	}
	if deleteNow {
		return bc.deleteRecord(ctx, updated, "its snapshots were removed")
	}
	return nil
}

// accountOf reads an account by id; nil when it is gone.
func (bc *backupController) accountOf(ctx context.Context, id string) (*store.Account, error) {
	if id == "" {
		return nil, nil
	}
	a, _, err := bc.st.GetAccount(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return a, err
}

// nextBackupStep decides what b needs next and returns its task and node
// (nil: none; b may have changed all the same). errForget: delete the
// record now.
func (bc *backupController) nextBackupStep(ctx context.Context, b *store.Backup, a *store.Account, now time.Time) (*agentpb.Task, string, error) {
	st := &b.Status
	switch {
	case b.Deleting:
		if len(st.SnapshotIDs) == 0 && !finishedOK(st.State) {
			return nil, "", errForget // nothing was stored
		}
		node, err := bc.repositoryNode(ctx, b, a)
		if err != nil {
			return nil, "", err
		}
		if node == "" {
			// No node can reach the repository any more (a LOCAL target
			// on a removed node): the data went with it.
			return nil, "", errForget
		}
		repo, err := bc.repository(ctx, b.Target, node, b.Account)
		if err != nil {
			st.AddEvent(now, "forget-failed", err.Error())
			return nil, "", nil
		}
		st.State = store.BackupDeleting
		st.AddEvent(now, "deleting", "removing its snapshots on node "+node)
		return &agentpb.Task{Generation: b.Generation, Action: &agentpb.Task_ForgetBackup{ForgetBackup: &agentpb.ForgetBackupAction{
			BackupId: b.ID, Repository: repo}}}, node, nil
	case st.State == store.BackupPending:
		return bc.startBackup(ctx, b, a, now)
	case verifyDue(b):
		node, err := bc.repositoryNode(ctx, b, a)
		if err != nil {
			return nil, "", err
		}
		if node == "" {
			st.VerifiedGeneration = b.VerifyRequested
			st.VerifiedAt, st.VerifyOK, st.VerifyProblems = now, false, []string{"no node can reach the repository"}
			st.AddEvent(now, "verify-failed", "no node can reach the repository")
			return nil, "", nil
		}
		repo, err := bc.repository(ctx, b.Target, node, b.Account)
		if err != nil {
			st.VerifiedGeneration = b.VerifyRequested
			st.AddEvent(now, "verify-failed", err.Error())
			return nil, "", nil
		}
		st.AddEvent(now, "verifying", "on node "+node)
		return &agentpb.Task{Generation: b.VerifyRequested, Action: &agentpb.Task_VerifyBackup{VerifyBackup: &agentpb.VerifyBackupAction{
			BackupId: b.ID, Repository: repo}}}, node, nil
	}
	return nil, "", nil
}

// startBackup builds the backupAccount task of a PENDING backup, or fails
// it with a reason that says what is missing.
func (bc *backupController) startBackup(ctx context.Context, b *store.Backup, a *store.Account, now time.Time) (*agentpb.Task, string, error) {
	st := &b.Status
	fail := func(why string) (*agentpb.Task, string, error) {
		st.State, st.Error, st.FinishedAt = store.BackupFailed, why, now
		st.AddEvent(now, "failed", why)
		return nil, "", nil
	}
	switch {
	case a == nil || a.Deleted:
		return fail("the account was deleted")
	case a.Node == "":
		if lastEventKind(st.Events) != "waiting" {
			st.AddEvent(now, "waiting", "the account is not placed on a node yet")
		}
		return nil, "", nil
	}
	b.Node = a.Node
	repo, err := bc.repository(ctx, b.Target, a.Node, a.Username)
	if err != nil {
		if errors.Is(err, errBackupSetup) {
			return fail(err.Error())
		}
		return nil, "", err
	}
	state, err := accountState(ctx, bc.st, a)
	if err != nil {
		return nil, "", err
	}
	zoneFiles, err := bc.backupZoneFiles(ctx, state)
	if err != nil {
		return nil, "", err
	}
	// A zone's records travel once: in its file when it has one.
	for _, f := range zoneFiles {
		if i := slices.IndexFunc(state.Zones, func(z BackupStateZone) bool { return z.Name == f.GetName() }); i >= 0 && f.GetText() != "" {
			state.Zones[i].Records, state.Zones[i].RecordsInFile = nil, true
		}
	}
	stateJSON := mustJSON(state)
	action := &agentpb.BackupAccountAction{BackupId: b.ID, Repository: repo, StateJson: []byte(stateJSON), ZoneFiles: zoneFiles}
	for _, d := range state.Databases {
		action.Databases = append(action.Databases, &agentpb.BackupDatabase{Name: d.Name, Engine: d.Engine})
	}
	for _, c := range state.Certificates {
		// An installed certificate's key is kept by the node: bought
		// elsewhere, it cannot be ordered again after a restore.
		if c.Custom && c.Served {
			action.Certificates = append(action.Certificates, &agentpb.BackupCertificate{Site: c.ID, ChainPem: []byte(c.ChainPEM), Mail: c.Mail})
		}
	}
	if b.Retention == nil {
		// A backup a user asked for keeps the plan's retention, like the
		// schedule's: restic forget then keeps the policy's backups.
		if plan, _, err := bc.st.CachedPlan(ctx, a.Plan); err == nil && plan.Backup != nil {
			pol := *plan.Backup
			b.Retention = &pol
		}
	}
	if p := b.Retention; p != nil && p.KeepDaily+p.KeepWeekly+p.KeepMonthly > 0 {
		action.Retention = &agentpb.BackupRetention{Daily: uint32(max(p.KeepDaily, 0)), Weekly: uint32(max(p.KeepWeekly, 0)), Monthly: uint32(max(p.KeepMonthly, 0))}
	}
	st.State, st.StartedAt, st.Error = store.BackupRunning, now, ""
	// The zones are in the backup once the state snapshot and their
	// files are (recordBackup takes out those that failed).
	st.Contents.Zones = st.Contents.Zones[:0]
	for _, z := range state.Zones {
		st.Contents.Zones = append(st.Contents.Zones, z.Name)
	}
	st.AddEvent(now, "started", fmt.Sprintf("on node %s to target %s", a.Node, b.Target))
	return &agentpb.Task{Generation: b.Generation, Action: &agentpb.Task_BackupAccount{BackupAccount: action}}, a.Node, nil
}

// errBackupSetup: a backup cannot run as configured (a target or node
// not ready); the backup fails with the message, nothing is retried at
// once.
var errBackupSetup = errors.New("backup setup")

type setupError struct{ msg string }

func (e *setupError) Error() string { return e.msg }
func (e *setupError) Is(t error) bool {
	return t == errBackupSetup
}

func setupErr(format string, args ...any) error {
	return &setupError{msg: fmt.Sprintf(format, args...)}
}

// repositoryNode is the node a task on b's repository runs on: b's node
// while it exists; else, for a target every node reaches (NODE, S3), the
// account's node. "" when none is left.
func (bc *backupController) repositoryNode(ctx context.Context, b *store.Backup, a *store.Account) (string, error) {
	ok, err := bc.nodeExists(ctx, b.Node)
	if err != nil || ok {
		return b.Node, err
	}
	t, err := bc.st.GetBackupTarget(ctx, b.Target)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if t == nil || t.Kind == store.TargetLocal || a == nil || a.Node == "" {
		return "", nil
	}
	ok, err = bc.nodeExists(ctx, a.Node)
	if err != nil || !ok {
		return "", err
	}
	return a.Node, nil
}

func (bc *backupController) nodeExists(ctx context.Context, node string) (bool, error) {
	if node == "" {
		return false, nil
	}
	_, err := bc.st.GetNode(ctx, node)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// repository builds the repository of username's backups on target for a
// task on node: the secrets sealed to that node only. Errors never carry
// a secret.
func (bc *backupController) repository(ctx context.Context, target, node, username string) (*agentpb.BackupRepository, error) {
	t, err := bc.st.GetBackupTarget(ctx, target)
	if errors.Is(err, store.ErrNotFound) {
		return nil, setupErr("backup target %q does not exist", target)
	}
	if err != nil {
		return nil, err
	}
	n, err := bc.st.GetNode(ctx, node)
	if errors.Is(err, store.ErrNotFound) {
		return nil, setupErr("node %s was removed", node)
	}
	if err != nil {
		return nil, err
	}
	if len(n.State.PublicKey) == 0 {
		return nil, setupErr("node %s has not enrolled: nothing can be sealed to it", node)
	}
	repo := &agentpb.BackupRepository{Target: t.Name, Username: username}
	switch t.Kind {
	case store.TargetLocal:
		repo.Kind = agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL
	case store.TargetNode:
		repo.Kind = agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE
		if t.HostKey == "" || t.SFTPAddress == "" {
			why := "backup node " + t.Node + " has not reported its SFTP access yet"
			if t.AccessErr != "" {
				why += ": " + t.AccessErr
			}
			return nil, setupErr("%s", why)
		}
		if _, ok := t.AccessKeys[node]; !ok {
			return nil, setupErr("backup node %s does not accept node %s yet", t.Node, node)
		}
		repo.SftpAddress, repo.SftpUser, repo.SftpHostKey = t.SFTPAddress, t.SFTPUser, t.HostKey
	case store.TargetS3:
		repo.Kind = agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3
		repo.S3Endpoint, repo.S3Bucket, repo.S3Prefix, repo.S3Region, repo.S3AccessKeyId = t.Endpoint, t.Bucket, t.Prefix, t.Region, t.AccessKeyID
		secret, err := store.OpenBackupTargetSecret(bc.s.kek, t)
		if err != nil {
			return nil, fmt.Errorf("open the secret key of target %s: %w", t.Name, errSealed)
		}
		if len(secret) > 0 {
			if repo.SealedS3SecretKey, err = pki.SealDER(n.State.PublicKey, secret, agentpb.BackupS3SecretSealContext(t.Name)); err != nil {
				return nil, fmt.Errorf("seal the secret key of target %s to %s: %w", t.Name, node, errSealed)
			}
		}
		clear(secret)
	default:
		return nil, setupErr("backup target %q has unknown kind %q", t.Name, t.Kind)
	}
	pw, err := bc.st.BackupPassword(ctx, bc.s.kek, username)
	if err != nil {
		return nil, fmt.Errorf("repository password of %s: %w", username, errSealed)
	}
	repo.SealedPassword, err = pki.SealDER(n.State.PublicKey, pw, agentpb.BackupPasswordSealContext(username))
	clear(pw)
	if err != nil {
		return nil, fmt.Errorf("seal the repository password of %s to %s: %w", username, node, errSealed)
	}
	return repo, nil
}

// errSealed stands in for the cause of a failure to open or seal a
// secret: the underlying error might quote what it failed on.
var errSealed = errors.New("sealing failed")

// applyBackupResult records a finished backupAccount task on b: its
// status from the typed result, or the failure.
func applyBackupResult(b *store.Backup, t *store.Task, now time.Time) {
	st := &b.Status
	st.FinishedAt, st.Progress = now, nil
	res, err := t.BackupResult()
	if err != nil {
		st.State, st.Error = store.BackupFailed, taskFailure(t, err)
		st.AddEvent(now, "failed", st.Error)
		return
	}
	st.SnapshotIDs = slices.Clone(res.GetSnapshotIds())
	st.SizeBytes, st.AddedBytes, st.FileCount = res.GetSizeBytes(), res.GetAddedBytes(), res.GetFileCount()
	c := res.GetContents()
	zones := st.Contents.Zones
	st.Failed = itemFailures(res.GetFailed())
	if slices.ContainsFunc(st.Failed, func(f store.BackupItemFailure) bool { return f.Item == "state" }) {
		zones = nil
	}
	zones = slices.DeleteFunc(slices.Clone(zones), func(z string) bool {
		return slices.ContainsFunc(st.Failed, func(f store.BackupItemFailure) bool { return f.Item == "zone:"+z })
	})
	st.Contents = store.BackupContents{Files: c.GetFiles(), Databases: slices.Clone(c.GetDatabases()),
		Mailboxes: slices.Clone(c.GetMailboxes()), Zones: zones}
	st.Error = ""
	if res.GetUnlockedStale() {
		st.AddEvent(now, "unlocked", "a stale repository lock of a killed run was removed")
	}
	msg := fmt.Sprintf("%d files, %d bytes (%d added)", st.FileCount, st.SizeBytes, st.AddedBytes)
	if len(st.Failed) > 0 {
		st.State = store.BackupPartial
		st.AddEvent(now, "partial", msg+"; failed: "+failedItems(st.Failed))
	} else {
		st.State = store.BackupSucceeded
		st.AddEvent(now, "succeeded", msg)
	}
}

// retentionForgot is the backups, other than b, that the node's
// retention forgot in the backupAccount task t.
func retentionForgot(b *store.Backup, t *store.Task) (forgotten []string) {
	res, err := t.BackupResult()
	if err != nil {
		return nil
	}
	for _, id := range res.GetForgottenBackupIds() {
		if id != b.ID {
			forgotten = append(forgotten, id)
		}
	}
	return forgotten
}

// applyVerifyResult records a finished verifyBackup task (of verify
// request gen) on b.
func applyVerifyResult(b *store.Backup, t *store.Task, gen int64, now time.Time) {
	st := &b.Status
	st.Progress = nil
	st.VerifiedGeneration = max(st.VerifiedGeneration, gen)
	res, err := t.VerifyResult()
	if err != nil {
		// Not the backup's fault as far as anyone knows: it is left as
		// it was and the request counts as answered.
		st.AddEvent(now, "verify-failed", taskFailure(t, err))
		return
	}
	st.VerifiedAt, st.VerifyOK, st.VerifyProblems = now, res.GetOk(), slices.Clone(res.GetProblems())
	if res.GetOk() {
		st.AddEvent(now, "verified", fmt.Sprintf("%d files, %d bytes read back intact", res.GetFilesChecked(), res.GetBytesChecked()))
	} else {
		st.AddEvent(now, "verify-problems", strings.Join(firstN(res.GetProblems(), 5), "; "))
	}
}

// applyForgetResult records a finished forgetBackup task; done: the
// snapshots are gone and the record may go too.
func applyForgetResult(b *store.Backup, t *store.Task, now time.Time) (done bool) {
	if _, err := t.ForgetResult(); err != nil {
		b.Status.AddEvent(now, "forget-failed", taskFailure(t, err))
		return false
	}
	b.Status.AddEvent(now, "deleted", "snapshots removed")
	return true
}

func taskFailure(t *store.Task, err error) string {
	if t.Node != "" {
		return "node " + t.Node + ": " + err.Error()
	}
	return err.Error()
}

func itemFailures(fs []*agentpb.BackupItemFailure) []store.BackupItemFailure {
	if len(fs) == 0 {
		return nil
	}
	out := make([]store.BackupItemFailure, 0, len(fs))
	for _, f := range fs {
		out = append(out, store.BackupItemFailure{Item: f.GetItem(), Error: f.GetError()})
	}
	return out
}

func failedItems(fs []store.BackupItemFailure) string {
	names := make([]string, 0, len(fs))
	for _, f := range fs {
		names = append(names, f.Item)
	}
	return strings.Join(names, ", ")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// auditEvents writes a backup's or restore's new events to the audit log
// (kind "backup" or "restore": actions backup.started, restore.succeeded...).
func (bc *backupController) auditEvents(ctx context.Context, kind, id string, evs []store.BackupEvent) {
	for _, ev := range evs {
		if ev.Kind == "progress" || ev.Kind == "waiting" {
			continue
		}
		result := "ok"
		if strings.Contains(ev.Kind, "failed") {
			result = "failed"
		}
		if ev.Message != "" {
			result += ": " + ev.Message
		}
		if err := bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, kind+"."+ev.Kind, id, result)); err != nil {
			bc.s.log.Warn("audit backup event", "id", id, "err", err)
		}
	}
}

// countResult feeds the metrics with a finished backup.
func (bc *backupController) countResult(b *store.Backup) {
	m := bc.s.metrics
	if m == nil {
		return
	}
	st := &b.Status
	m.backupsTotal.WithLabelValues(strings.ToLower(string(st.State))).Inc()
	if !st.StartedAt.IsZero() && !st.FinishedAt.IsZero() {
		m.backupDuration.Observe(st.FinishedAt.Sub(st.StartedAt).Seconds())
	}
	if finishedOK(st.State) {
		m.backupLastSuccess.WithLabelValues(b.Account).Set(float64(st.FinishedAt.Unix()))
	}
}

// removeForgotten deletes the record of a backup the node's retention
// removed from the repository. Only a finished backup of the same account
// goes: an id the node names wrongly deletes nothing else.
func (bc *backupController) removeForgotten(ctx context.Context, by *store.Backup, id string) {
	acct, ok := store.AccountOfBackupID(id)
	if !ok || acct != by.Account {
		bc.s.log.Warn("retention named a backup of another account", "backup", by.ID, "forgotten", id)
		return
	}
	old, err := bc.st.GetBackup(ctx, id)
	if err != nil {
		return // gone already
	}
	if backupInFlight(old) || old.Status.TaskID != "" {
		return
	}
	ev := store.NewAuditEvent("system", bc.s.id, "backup.expired", id, "ok: removed by the retention of backup "+by.ID)
	if err := bc.st.DeleteBackup(ctx, id, ev); err != nil && !errors.Is(err, store.ErrNotFound) {
		bc.s.log.Warn("delete expired backup", "backup", id, "err", err)
		return
	}
	bc.index.dropBackup(id)
}

// deleteRecord removes b's record; the repository password goes with the
// last backup of an account that no longer exists.
func (bc *backupController) deleteRecord(ctx context.Context, b *store.Backup, why string) error {
	ev := store.NewAuditEvent("system", bc.s.id, "backup.deleted", b.ID, "ok: "+why)
	if err := bc.st.DeleteBackup(ctx, b.ID, ev); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	bc.index.dropBackup(b.ID)
	return bc.dropPasswordIfOrphan(ctx, b.Account, b.AccountID)
}

// dropPasswordIfOrphan forgets username's repository password once the
// account is gone and none of its backups is left.
func (bc *backupController) dropPasswordIfOrphan(ctx context.Context, username, accountID string) error {
	a, err := bc.accountOf(ctx, accountID)
	if err != nil || (a != nil && !a.Deleted) {
		return err
	}
	if id, err := bc.st.AccountIDByUsername(ctx, username); err == nil && id != accountID {
		return nil // the name is someone's again: the password is theirs
	}
	left, _, err := bc.st.ListBackups(ctx, username, "", 1)
	if err != nil || len(left) > 0 {
		return err
	}
	return bc.st.DeleteBackupPassword(ctx, username)
}
