package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// The steps of a migration: what each sends or changes, and what its
// result teaches the record.
const (
	stepInspect      = "inspect"       // source: ensure as it is → uid/gid
	stepPrepare      = "prepare"       // target: the account, suspended
	stepPrepareDB    = "prepare-db:"   // target: one empty database
	stepPrepareMail  = "prepare-mail:" // target: one mail domain
	stepKey          = "key"           // source: the one-time key pair
	stepAuthorize    = "authorize"     // target: let the key in
	stepPresync      = "presync"       // source: rsync + dumps, live
	stepCredentials  = "credentials"   // source: hashes sealed to the target
	stepSuspend      = "suspend"       // source: 503 and 4xx from now
	stepSuspendMail  = "suspend-mail:" // source: one mail domain's mail waits
	stepFinalSync    = "final-sync"    // source: last pass, --delete
	stepSwitch       = "switch"        // store: records to the target
	stepActivate     = "activate"      // wait: the target ACTIVE
	stepProxy        = "proxy"         // source: sites proxy to the target
	stepVerify       = "verify"        // wait: zones served from the target
	stepRevokeSource = "revoke-source"
	stepRevokeTarget = "revoke-target"
	stepBackup       = "backup"  // store: the newest backup (source DOWN)
	stepRestore      = "restore" // store: a restore ALL onto the target

	stepCancelSource = "cancel-source" // source: ensured as it was
	stepCancelMail   = "cancel-mail:"  // source: a suspended mail domain resumed
	stepCancelRevokS = "cancel-revoke-source"
	stepCancelRevokT = "cancel-revoke-target"
	stepCancelRemove = "cancel-remove-target"

	stepRollbackSwitch   = "rollback-switch"
	stepRollbackActivate = "rollback-activate"
	stepRollbackRemove   = "rollback-remove-target"
	stepRollbackRevokS   = "rollback-revoke-source"
	stepRollbackRevokT   = "rollback-revoke-target"

	stepFinalize = "finalize" // source: remove the account's copy
)

func pendingStep(name string) store.MigrationStep {
	return store.MigrationStep{Name: name, Status: store.StepPending}
}

// migrateSteps lists the migrate flow of m for the account's state.
func migrateSteps(m *store.Migration, state *BackupState) []store.MigrationStep {
	if m.Restore {
		return []store.MigrationStep{pendingStep(stepBackup), pendingStep(stepSwitch), pendingStep(stepRestore),
			pendingStep(stepActivate), pendingStep(stepVerify)}
	}
	steps := []store.MigrationStep{pendingStep(stepInspect), pendingStep(stepPrepare)}
	for _, d := range state.Databases {
		steps = append(steps, pendingStep(stepPrepareDB+d.Name))
	}
	for _, d := range state.MailDomains {
		steps = append(steps, pendingStep(stepPrepareMail+d.Domain))
	}
	for _, n := range []string{stepKey, stepAuthorize, stepPresync, stepSuspend} {
		steps = append(steps, pendingStep(n))
	}
	// Mail arriving at the source after the last pass would stay there:
	// from the suspension on, its domains answer 4xx and senders retry
	// until DNS names the target.
	for _, d := range state.MailDomains {
		steps = append(steps, pendingStep(stepSuspendMail+d.Domain))
	}
	// The channel closes right after the last pass: from the switch on,
	// the target's copy is live and nothing may write into it again.
	// The hashes are read once nothing can change them on the source any
	// more (a password set before is in them).
	for _, n := range []string{stepFinalSync, stepCredentials, stepRevokeTarget, stepRevokeSource, stepSwitch, stepActivate, stepProxy, stepVerify} {
		steps = append(steps, pendingStep(n))
	}
	return steps
}

// flowSteps lists the steps of a cancel, rollback or finalize of m.
func flowSteps(m *store.Migration, flow string) []store.MigrationStep {
	var names []string
	switch flow {
	case flowCancel:
		names = []string{stepCancelSource}
		for _, st := range m.Steps {
			if d, ok := strings.CutPrefix(st.Name, stepSuspendMail); ok && st.Status != store.StepPending {
				names = append(names, stepCancelMail+d)
			}
		}
		names = append(names, stepCancelRevokS, stepCancelRevokT, stepCancelRemove)
	case flowRollback:
		names = []string{stepRollbackSwitch, stepRollbackActivate, stepRollbackRemove, stepRollbackRevokS, stepRollbackRevokT}
	case flowFinalize:
		names = []string{stepFinalize}
	}
	out := make([]store.MigrationStep, 0, len(names))
	for _, n := range names {
		out = append(out, pendingStep(n))
	}
	return out
}

// phaseOf is the status a step of the migrate flow puts the migration in.
func phaseOf(name string) store.MigrationStatus {
	if strings.HasPrefix(name, stepSuspendMail) {
		return store.MigrationCutover
	}
	switch name {
	case stepSuspend, stepFinalSync, stepCredentials, stepRevokeTarget, stepRevokeSource, stepSwitch, stepRestore, stepActivate, stepProxy:
		return store.MigrationCutover
	case stepVerify:
		return store.MigrationVerifying
	}
	return store.MigrationPresync
}

// stepEnv is what the steps read from elsewhere, read before the
// compare-and-swap that records them.
type stepEnv struct {
	a         *store.Account
	plan      *store.Plan
	from, to  *store.NodeView
	dbs       *store.DatabaseSet
	mail      *store.MailSet
	databases []*agentpb.BackupDatabase
	mailboxes []string
	dbUsers   []*agentpb.ExportDatabaseUser
}

func (mc *migrationController) env(ctx context.Context, m *store.Migration) (*stepEnv, error) {
	e := &stepEnv{}
	a, _, err := mc.st.GetAccount(ctx, m.Account)
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", m.Username, err)
	}
	e.a = a
	if p, _, err := mc.st.CachedPlan(ctx, a.Plan); err == nil {
		e.plan = p
	}
	if e.from, err = mc.st.GetNode(ctx, m.FromNode); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if e.to, err = mc.st.GetNode(ctx, m.ToNode); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if e.dbs, err = mc.st.GetDatabases(ctx, a.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if e.dbs != nil {
		for _, name := range sortedKeys(e.dbs.Databases) {
			if d := e.dbs.Databases[name]; !d.Deleted {
				e.databases = append(e.databases, &agentpb.BackupDatabase{Name: d.Name, Engine: d.Engine})
			}
		}
		for _, name := range sortedKeys(e.dbs.Users) {
			if u := e.dbs.Users[name]; !u.Deleted {
				e.dbUsers = append(e.dbUsers, &agentpb.ExportDatabaseUser{Name: u.Name, Engine: agentEngine(u.Engine)})
			}
		}
	}
	if e.mail, err = mc.st.GetMail(ctx, a.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if e.mail != nil {
		for _, addr := range sortedKeys(e.mail.Mailboxes) {
			if mb := e.mail.Mailboxes[addr]; !mb.Deleted {
				e.mailboxes = append(e.mailboxes, addr)
			}
		}
	}
	return e, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ensureAccount is the account's EnsureAccountAction as its controller
// builds it, suspended or proxying as the step needs.
func (e *stepEnv) ensureAccount(suspended bool, proxyTo string) *agentpb.Task {
	web := webSpec(e.a, e.plan)
	web.ProxyTo = proxyTo
	return &agentpb.Task{Generation: e.a.Generation, Action: &agentpb.Task_EnsureAccount{EnsureAccount: &agentpb.EnsureAccountAction{
		Username: e.a.Username, DiskQuotaMb: uint64(e.a.DiskMB), Suspended: suspended, Web: web}}}
}

// httpAddress is where node serves HTTP: its nginx's reported listen
// port on its address (port 80 when it reported none).
func (mc *migrationController) httpAddress(ctx context.Context, nv *store.NodeView) string {
	port := "80"
	if svc, err := mc.st.CachedServices(ctx, nv.Name); err == nil {
		for _, s := range svc.Services {
			if s.Name != "nginx" {
				continue
			}
			for _, l := range s.Listen {
				if _, p, err := net.SplitHostPort(l); err == nil && p != "443" {
					port = p
					break
				}
			}
		}
	}
	return net.JoinHostPort(nv.Address, port)
}

// httpsAddress is where node serves HTTPS: the port of its nginx's
// reported HTTPS listener (the agent reports HTTP then HTTPS; 443 when it
// reported none) on its address.
func (mc *migrationController) httpsAddress(ctx context.Context, nv *store.NodeView) string {
	port := "443"
	if svc, err := mc.st.CachedServices(ctx, nv.Name); err == nil {
		for _, s := range svc.Services {
			if s.Name != "nginx" {
				continue
			}
			var ports []string
			for _, l := range s.Listen {
				if _, p, err := net.SplitHostPort(l); err == nil {
					ports = append(ports, p)
				}
			}
			if len(ports) >= 2 && !slices.Contains(ports, "443") {
				port = ports[1]
			}
		}
	}
	return net.JoinHostPort(nv.Address, port)
}

// proxyTask is the source's ensure once the account serves from the
// target: every site proxied there, HTTP to its HTTP listener and HTTPS
// to its HTTPS listener over TLS. HTTPS must reach the target as HTTPS:
// proxied as plain HTTP, a site with https_redirect (or an application
// checking HTTPS itself) answers with a redirect to https://same-host,
// which DNS still resolves to the source: a loop until DNS moves.
func (mc *migrationController) proxyTask(ctx context.Context, e *stepEnv) *agentpb.Task {
	t := e.ensureAccount(false, mc.httpAddress(ctx, e.to))
	t.GetEnsureAccount().GetWeb().ProxyToHttps = mc.httpsAddress(ctx, e.to)
	return t
}

// stepTask builds step's task and its node; nil: the step has nothing to
// send (skipped).
func (mc *migrationController) stepTask(ctx context.Context, m *store.Migration, e *stepEnv, name string) (*agentpb.Task, string, error) {
	revoke := &agentpb.Task{Action: &agentpb.Task_RevokeMigration{RevokeMigration: &agentpb.RevokeMigrationAction{MigrationId: m.ID}}}
	remove := &agentpb.Task{Action: &agentpb.Task_DeleteAccount{DeleteAccount: &agentpb.DeleteAccountAction{Username: m.Username}}}
	sync := func(final bool) *agentpb.Task {
		return &agentpb.Task{Action: &agentpb.Task_SyncMigration{SyncMigration: &agentpb.SyncMigrationAction{
			MigrationId: m.ID, Username: m.Username, TargetEndpoint: m.TargetEndpoint, TargetHostKey: m.TargetHostKey,
			Files: true, Databases: e.databases, Final: final}}}
	}
	switch {
	case name == stepInspect:
		return e.ensureAccount(e.a.Suspended, ""), m.FromNode, nil
	case name == stepPrepare:
		return e.ensureAccount(true, ""), m.ToNode, nil
	case strings.HasPrefix(name, stepPrepareDB):
		db := strings.TrimPrefix(name, stepPrepareDB)
		if e.dbs == nil || e.dbs.Databases[db] == nil || e.dbs.Databases[db].Deleted {
			return nil, "", nil
		}
		d := e.dbs.Databases[db]
		if d.Node == m.ToNode {
			return nil, "", nil
		}
		return &agentpb.Task{Action: &agentpb.Task_EnsureDatabase{EnsureDatabase: &agentpb.EnsureDatabaseAction{
			Name: d.Name, Owner: m.Username, Engine: agentEngine(d.Engine)}}}, m.ToNode, nil
	case strings.HasPrefix(name, stepPrepareMail):
		dom := strings.TrimPrefix(name, stepPrepareMail)
		if e.mail == nil || e.mail.Domains[dom] == nil || e.mail.Domains[dom].Deleted {
			return nil, "", nil
		}
		return &agentpb.Task{Action: &agentpb.Task_EnsureMailDomain{EnsureMailDomain: &agentpb.EnsureMailDomainAction{
			Username: m.Username, Domain: dom, Suspended: true}}}, m.ToNode, nil
	case name == stepKey:
		return &agentpb.Task{Action: &agentpb.Task_MigrationKey{MigrationKey: &agentpb.MigrationKeyAction{
			MigrationId: m.ID, Username: m.Username}}}, m.FromNode, nil
	case name == stepAuthorize:
		if e.from == nil {
			return nil, "", errors.New("the source node is gone")
		}
		return &agentpb.Task{Action: &agentpb.Task_AuthorizeMigration{AuthorizeMigration: &agentpb.AuthorizeMigrationAction{
			MigrationId: m.ID, Username: m.Username, PublicKey: m.SourcePublicKey, FromAddresses: []string{e.from.Address},
			ExpiresUnix: mc.now().Add(migrationAuthValid).Unix(), Databases: e.databases,
			SourceUid: m.SourceUID, SourceGid: m.SourceGID}}}, m.ToNode, nil
	case name == stepPresync:
		return sync(false), m.FromNode, nil
	case name == stepFinalSync:
		return sync(true), m.FromNode, nil
	case name == stepCredentials:
		certs, err := mc.servedCerts(ctx, m)
		if err != nil {
			return nil, "", err
		}
		if len(e.mailboxes)+len(e.dbUsers)+len(certs) == 0 {
			return nil, "", nil
		}
		if e.to == nil || len(e.to.State.PublicKey) == 0 {
			return nil, "", errors.New("the target node has no public key")
		}
		return &agentpb.Task{Action: &agentpb.Task_ExportCredentials{ExportCredentials: &agentpb.ExportCredentialsAction{
			Username: m.Username, Mailboxes: e.mailboxes, DatabaseUsers: e.dbUsers, SealTo: e.to.State.PublicKey,
			Certificates: certs}}}, m.FromNode, nil
	case name == stepSuspend:
		return e.ensureAccount(true, ""), m.FromNode, nil
	case strings.HasPrefix(name, stepSuspendMail), strings.HasPrefix(name, stepCancelMail):
		dom := strings.TrimPrefix(strings.TrimPrefix(name, stepSuspendMail), stepCancelMail)
		if e.mail == nil || e.mail.Domains[dom] == nil || e.mail.Domains[dom].Deleted {
			return nil, "", nil
		}
		// The domain's ensure as the mail controller builds it, with the
		// account suspended for the cutover or as its spec says after.
		a := *e.a
		a.Suspended = a.Suspended || strings.HasPrefix(name, stepSuspendMail)
		d := e.mail.Domains[dom]
		return &agentpb.Task{Action: &agentpb.Task_EnsureMailDomain{EnsureMailDomain: mailDomainAction(&a, d, &d.Status)}}, m.FromNode, nil
	case name == stepProxy:
		if e.to == nil {
			return nil, "", errors.New("the target node is gone")
		}
		return mc.proxyTask(ctx, e), m.FromNode, nil
	case name == stepRevokeSource, name == stepCancelRevokS, name == stepRollbackRevokS:
		if m.Restore || m.Step(stepKey) == nil || m.Step(stepKey).StartedAt.IsZero() {
			return nil, "", nil
		}
		return revoke, m.FromNode, nil
	case name == stepRevokeTarget, name == stepCancelRevokT, name == stepRollbackRevokT:
		if m.Restore || m.Step(stepAuthorize) == nil || m.Step(stepAuthorize).StartedAt.IsZero() {
			return nil, "", nil
		}
		return revoke, m.ToNode, nil
	case name == stepCancelRemove, name == stepRollbackRemove:
		if m.ToNode == "" {
			return nil, "", nil
		}
		return remove, m.ToNode, nil
	case name == stepFinalize:
		if m.Restore {
			return nil, "", nil // the source was down: fencing removes its copy when it returns
		}
		return remove, m.FromNode, nil
	}
	return nil, "", fmt.Errorf("unknown step %q", name)
}

// isStoreStep: a step the control plane does in the store or waits on.
func isStoreStep(name string) bool {
	switch name {
	case stepSwitch, stepActivate, stepVerify, stepBackup, stepRestore, stepRollbackSwitch, stepRollbackActivate, stepCancelSource:
		return true
	}
	return false
}

// runStep starts step i of m (or, for a store step, does it).
func (mc *migrationController) runStep(ctx context.Context, m *store.Migration, i int, now time.Time) (bool, error) {
	name := m.Steps[i].Name
	e, err := mc.env(ctx, m)
	if err != nil {
		return false, err
	}
	if isStoreStep(name) {
		return mc.storeStep(ctx, m, i, e, now)
	}
	if name == stepSuspend {
		// Held before the suspension is sent: from then on only the
		// migration speaks to the source about the account.
		if err := mc.holdAccount(ctx, m, true); err != nil {
			return false, err
		}
	}
	task, node, err := mc.stepTask(ctx, m, e, name)
	if err != nil {
		return true, mc.failStep(ctx, m.ID, name, err.Error(), now)
	}
	_, err = mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
		st := m.Step(name)
		if st == nil || nextStep(m) < 0 || m.Steps[nextStep(m)].Name != name || st.TaskID != "" {
			return nil, store.ErrUnchanged
		}
		if currentFlow(m) == flowMigrate {
			m.Status = phaseOf(name)
		}
		st.StartedAt, st.Error = now, ""
		if task == nil {
			st.Status, st.FinishedAt = store.StepSkipped, now
			return nil, nil
		}
		st.Status, st.Attempts = store.StepRunning, st.Attempts+1
		return []*store.ObjectTask{{Node: node, Spec: task, CreatedBy: "migration/" + m.ID, Track: true}}, nil
	})
	if errors.Is(err, store.ErrNoNode) {
		return true, mc.failStep(ctx, m.ID, name, "node "+node+" does not exist", now)
	}
	return task == nil, err
}

// collect records the result of step i's task once it finished.
func (mc *migrationController) collect(ctx context.Context, m *store.Migration, i int) (bool, error) {
	tid := m.Steps[i].TaskID
	outcomes, err := mc.st.MigrationOutcomes(ctx, m.ID)
	if err != nil {
		return false, err
	}
	var t *store.Task
	if slices.Contains(outcomes, tid) {
		if t, _, err = mc.st.GetTask(ctx, tid); errors.Is(err, store.ErrNotFound) {
			t, err = lostTask(tid), nil
		}
		if err != nil {
			return false, err
		}
	} else if lost, err := mc.st.TaskLost(ctx, tid); err != nil {
		return false, err
	} else if lost {
		t = lostTask(tid)
		t.Error = "the task was lost (its node was removed)"
	}
	if t == nil {
		return false, nil // in flight: its done notice queues the migration
	}
	now := mc.now()
	name := m.Steps[i].Name
	retry := false
	m2, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
		retry = false
		st := m.Step(name)
		if st == nil || st.TaskID != tid || st.Status != store.StepRunning {
			return nil, store.ErrUnchanged
		}
		if err := applyStepResult(m, st, t, now); err != nil {
			st.Error = err.Error()
			if st.Attempts < maxMigrationTries {
				st.Status, st.TaskID = store.StepPending, ""
				retry = true
				return nil, nil
			}
			failRecord(m, st, err.Error(), now)
			return nil, nil
		}
		st.Status, st.FinishedAt = store.StepDone, now
		return nil, nil
	})
	if err != nil {
		return false, err
	}
	for _, o := range outcomes {
		if err := mc.st.ForgetMigrationOutcome(ctx, m.ID, o); err != nil {
			return false, err
		}
	}
	if retry {
		mc.ctl.EnqueueAfter(m2.ID, mc.cfg.Poll)
		return false, nil
	}
	return true, nil
}

// applyStepResult records what a finished task of step st tells.
func applyStepResult(m *store.Migration, st *store.MigrationStep, t *store.Task, now time.Time) error {
	if err := t.Err(); err != nil {
		return err
	}
	switch name := st.Name; {
	case name == stepInspect:
		r, err := t.AccountResult()
		if err != nil {
			return err
		}
		m.SourceUID, m.SourceGID = r.GetUid(), r.GetGid()
	case name == stepKey:
		r, err := t.MigrationKeyResult()
		if err != nil {
			return err
		}
		m.SourcePublicKey = r.GetPublicKey()
	case name == stepAuthorize:
		r, err := t.AuthorizeMigrationResult()
		if err != nil {
			return err
		}
		m.TargetHostKey, m.TargetEndpoint = r.GetHostKey(), r.GetEndpoint()
	case name == stepPresync, name == stepFinalSync:
		r, err := t.SyncMigrationResult()
		if err != nil {
			return err
		}
		st.Bytes = r.GetFileBytes() + r.GetDatabaseBytes()
		if err := partial("not copied", r.GetFailed()); err != nil {
			return err
		}
	case name == stepCredentials:
		r, err := t.ExportCredentialsResult()
		if err != nil {
			return err
		}
		// A mailbox or user moved without its hash could not log in on
		// the target: a partial export fails the step, as a sync does.
		// A certificate whose key cannot be exported does not: the site
		// moves all the same, and its record says plainly at the switch
		// that the certificate was left behind.
		var failed []*agentpb.BackupItemFailure
		m.CertKeysNotExported = nil
		for _, f := range r.GetFailed() {
			if id, ok := strings.CutPrefix(f.GetItem(), "certificate:"); ok {
				if m.CertKeysNotExported == nil {
					m.CertKeysNotExported = map[string]string{}
				}
				if len(m.CertKeysNotExported) < maxExportedCerts {
					m.CertKeysNotExported[id] = boundedText(f.GetError(), 512)
				}
				continue
			}
			failed = append(failed, f)
		}
		if err := partial("credentials not exported", failed); err != nil {
			return err
		}
		m.SealedMailboxes, m.SealedDBUsers, m.SealedCertKeys = map[string][]byte{}, map[string][]byte{}, map[string][]byte{}
		m.ExportedCertChains = map[string]string{}
		// Each key is the one of the chain the task named: the target
		// installs that chain with it, whatever the record says by then.
		var spec agentpb.Task
		if err := proto.Unmarshal(t.Spec, &spec); err != nil {
			return fmt.Errorf("the export task: %w", err)
		}
		chains := map[string]string{}
		for _, c := range spec.GetExportCredentials().GetCertificates() {
			chains[c.GetId()] = string(c.GetChainPem())
		}
		// The source's word is bounded before it goes into the record:
		// the switch installs only keys of certificates the task named
		// (the account's own), and a sealed key is a few KiB.
		for _, k := range r.GetCertificates() {
			chain := chains[k.GetId()]
			if chain != "" && len(m.SealedCertKeys) < maxExportedCerts && len(k.GetSealedPrivateKey()) <= maxSealedCertKey {
				m.SealedCertKeys[k.GetId()] = k.GetSealedPrivateKey()
				m.ExportedCertChains[k.GetId()] = chain
			}
		}
		for _, h := range r.GetMailboxes() {
			m.SealedMailboxes[h.GetName()] = h.GetSealedHash()
		}
		for _, h := range r.GetDatabaseUsers() {
			m.SealedDBUsers[h.GetName()] = h.GetSealedHash()
		}
	case name == stepSuspend:
		m.SuspendedAt = now
	}
	return nil
}

// partial is the error of a step whose node left items undone; nil when
// it did them all.
func partial(what string, failed []*agentpb.BackupItemFailure) error {
	if len(failed) == 0 {
		return nil
	}
	fs := make([]string, 0, len(failed))
	for _, f := range failed {
		fs = append(fs, f.GetItem()+": "+f.GetError())
	}
	return errors.New(what + ": " + strings.Join(fs, "; "))
}

// failRecord marks st failed: before cutover the migration is undone
// (cancel flow, then FAILED); after it, it waits FAILED for a rollback.
func failRecord(m *store.Migration, st *store.MigrationStep, why string, now time.Time) {
	st.Status, st.Error, st.FinishedAt = store.StepFailed, why, now
	m.Error = st.Name + ": " + why
	switch {
	case currentFlow(m) == flowMigrate && !m.CutOver:
		m.CancelRequested = true
	default:
		// What is left of the flow is not run: the migration waits
		// FAILED for an operator (a rollback after the cutover).
		m.Status = store.MigrationFailed
		// The sealed secrets serve nothing any more (the switch was
		// made, or will not be); what the source served stays for a
		// rollback.
		m.ForgetSecrets(false)
		for i := range m.Steps {
			if m.Steps[i].Status == store.StepPending {
				m.Steps[i].Status = store.StepSkipped
			}
		}
	}
}

func (mc *migrationController) failStep(ctx context.Context, id, name, why string, now time.Time) error {
	_, err := mc.update(ctx, id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		st := m.Step(name)
		if st == nil || st.Status == store.StepFailed {
			return nil, store.ErrUnchanged
		}
		if st.StartedAt.IsZero() {
			st.StartedAt = now
		}
		failRecord(m, st, why, now)
		return nil, nil
	})
	return err
}

// storeStep does (or looks whether it is done) a store step; it marks it
// done when it is, and looks again later when it waits.
func (mc *migrationController) storeStep(ctx context.Context, m *store.Migration, i int, e *stepEnv, now time.Time) (bool, error) {
	name := m.Steps[i].Name
	if m.Steps[i].Status == store.StepPending {
		if _, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
			st := m.Step(name)
			if st == nil || st.Status != store.StepPending {
				return nil, store.ErrUnchanged
			}
			if currentFlow(m) == flowMigrate {
				m.Status = phaseOf(name)
			}
			st.Status, st.StartedAt = store.StepRunning, now
			return nil, nil
		}); err != nil {
			return false, err
		}
	}
	var (
		done bool
		err  error
		edit func(m *store.Migration)
	)
	switch name {
	case stepSwitch:
		err = mc.switchRecords(ctx, m, e, m.ToNode, m.FromNode, !m.Restore)
		done, edit = err == nil, func(m *store.Migration) { m.CutOver = true }
	case stepRollbackSwitch:
		err = mc.switchRecords(ctx, m, e, m.FromNode, m.ToNode, !m.Restore)
		done = err == nil
	case stepActivate:
		done, err = mc.activeOn(ctx, m.ToNode, e)
		if done && !m.SuspendedAt.IsZero() {
			downtime := now.Sub(m.SuspendedAt).Milliseconds()
			edit = func(m *store.Migration) { m.DowntimeMs = downtime }
		}
	case stepRollbackActivate:
		done, err = mc.activeOn(ctx, m.FromNode, e)
	case stepCancelSource:
		err = mc.holdAccount(ctx, m, false)
		done = err == nil
	case stepVerify:
		done, err = mc.zonesOn(ctx, e, e.to)
	case stepBackup:
		var id string
		id, err = mc.newestBackup(ctx, m)
		done, edit = err == nil, func(m *store.Migration) { m.BackupID = id }
	case stepRestore:
		done, edit, err = mc.restoreStep(ctx, m, e, now)
	}
	if err != nil {
		var perm permanentErr
		if errors.As(err, &perm) {
			return true, mc.failStep(ctx, m.ID, name, err.Error(), now)
		}
		return false, err
	}
	if !done {
		if edit != nil {
			if _, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) { edit(m); return nil, nil }); err != nil {
				return false, err
			}
		}
		mc.ctl.EnqueueAfter(m.ID, mc.cfg.Poll)
		return false, nil
	}
	_, err = mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
		st := m.Step(name)
		if st == nil || st.Status != store.StepRunning {
			return nil, store.ErrUnchanged
		}
		st.Status, st.FinishedAt = store.StepDone, now
		if edit != nil {
			edit(m)
		}
		return nil, nil
	})
	if err == nil && (name == stepSwitch || name == stepRollbackSwitch) {
		mc.audit(ctx, m, "migration."+name, m.Username+" records now on node "+map[bool]string{true: m.ToNode, false: m.FromNode}[name == stepSwitch])
	}
	return err == nil, err
}

// holdAccount makes the account controller leave the account alone
// during the cutover (hold), or gives it back; given back after the
// source was suspended, it is ensured there again as its spec says.
func (mc *migrationController) holdAccount(ctx context.Context, m *store.Migration, hold bool) error {
	_, err := mc.st.UpdateAccount(ctx, m.Account, func(a *store.Account) error {
		switch {
		case hold && a.Migrating == m.ID, !hold && a.Migrating != m.ID:
			return store.ErrUnchanged
		case hold:
			a.Migrating = m.ID
		default:
			a.Migrating, a.TaskID = "", ""
			a.Generation++
		}
		return nil
	})
	if errors.Is(err, store.ErrUnchanged) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// permanentErr fails a store step instead of retrying it.
type permanentErr struct{ msg string }

func (e permanentErr) Error() string { return e.msg }

// switchRecords points the account at node to (from from): the account
// (its controller ensures it there), its zones' primary and address,
// and, with data, its databases, users and mailboxes, users and
// mailboxes with the hashes exported from the source when moving away
// (sealed to the target). Moving back, the source still holds its own
// hashes: nothing is sent. Each part is skipped when it points at to
// already, so the step may run again after a crash.
func (mc *migrationController) switchRecords(ctx context.Context, m *store.Migration, e *stepEnv, to, from string, data bool) error {
	tv, err := mc.st.GetNode(ctx, to)
	if err != nil {
		return permanentErr{fmt.Sprintf("node %s: %v", to, err)}
	}
	forward := to == m.ToNode
	if forward {
		if err := mc.keepCertsAtSource(ctx, m); err != nil {
			return err
		}
	}
	ev := store.NewAuditEvent("system", mc.s.id, "migration.switch", m.Username, "ok: onto node "+to+" (migration "+m.ID+")")
	_, err = mc.st.MoveAccount(ctx, m.Account, func(a *store.Account) error {
		if a.Deleted {
			return permanentErr{"the account is being deleted"}
		}
		if a.Node == to {
			if a.Migrating == m.ID {
				a.Migrating = ""
				return nil
			}
			return store.ErrUnchanged
		}
		a.Migrating = ""
		now := mc.now()
		a.Node = to
		if a.PinnedNode == from {
			a.PinnedNode = to
		}
		a.AppliedGeneration, a.TaskID, a.Attempts = 0, "", 0
		a.Generation++
		a.SetStatus(store.AccountProvisioning, "migration "+m.ID+" onto node "+to, now)
		return nil
	}, ev)
	if err != nil && !errors.Is(err, store.ErrUnchanged) {
		return err
	}
	zones := &zoneWriter{store: mc.st, views: &mc.s.dnsViews, ctl: &mc.s.zoneCtl}
	view, err := mc.s.dnsViews.get(ctx, mc.st)
	if err != nil {
		return err
	}
	fv, err := mc.st.GetNode(ctx, from)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, site := range e.a.AllSites() {
		z, _, err := mc.st.GetZone(ctx, site.Domain)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		_, toServes := view.servers[to]
		if z.Account != m.Account || z.Deleted || z.Address == tv.Address && !(toServes && z.Node == from) {
			continue // moved already, or nothing to move
		}
		_, err = zones.ChangeZone(ctx, z.Name, ev, func(z *store.Zone) error {
			// The zone follows the account when the new node serves DNS
			// and the zone lived on the old one; its records that
			// pointed at the old node's address point at the new one.
			if _, ok := view.servers[to]; ok && z.Node == from {
				z.Node = to
				z.AppliedGeneration, z.TaskID, z.Attempts = 0, "", 0
				z.Status, z.Reason = store.ZonePending, "migrating onto node "+to
			}
			if fv != nil && fv.Address != tv.Address {
				for i := range z.Records {
					if r := &z.Records[i]; (r.Type == "A" || r.Type == "AAAA") && r.Content == fv.Address {
						r.Content = tv.Address
					}
				}
			}
			z.Address = tv.Address
			z.Generation++
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if err := mc.moveCerts(ctx, m, to, from, forward); err != nil {
		return err
	}
	if !data {
		return nil
	}
	err = mc.st.ChangeDatabases(ctx, m.Account, "migration/"+m.ID, func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		ch := &store.DatabaseChange{}
		for _, d := range set.Databases {
			if d.Deleted || d.Node == to {
				continue
			}
			d.Node = to
			d.Generation++
			ch.Databases = append(ch.Databases, d)
		}
		for _, u := range set.Users {
			if u.Deleted || u.Node == to {
				continue
			}
			u.Node = to
			u.Generation++
			if h := m.SealedDBUsers[u.Name]; forward && len(h) > 0 {
				u.SealedPasswordHash, u.SealedPassword = h, nil
				u.PasswordGeneration++
			} else {
				u.SealedPasswordHash = nil
			}
			ch.Users = append(ch.Users, u)
		}
		return ch, nil
	}, ev)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	err = mc.st.ChangeMail(ctx, m.Account, func(set *store.MailSet) (*store.MailChange, error) {
		ch := &store.MailChange{}
		moved := false
		for _, mb := range set.Mailboxes {
			if mb.Deleted || mb.Node == to {
				continue
			}
			moved = true
			mb.Node = to
			mb.Generation++
			if h := m.SealedMailboxes[mb.Address]; forward && len(h) > 0 {
				mb.SealedPasswordHash, mb.SealedPassword = h, nil
				mb.PasswordGeneration++
			} else {
				mb.SealedPasswordHash = nil
			}
			ch.Mailboxes = append(ch.Mailboxes, mb)
		}
		if moved {
			// The domains follow the account's node: written again,
			// their controller ensures them there.
			for _, d := range set.Domains {
				if !d.Deleted {
					d.Generation++
					ch.Domains = append(ch.Domains, d)
				}
			}
		}
		return ch, nil
	}, ev)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// accountCerts reads the certificates of the account's sites that are the
// account's: a certificate's id is its site's name, so the sites name
// every certificate the account can have, and nothing else is read.
func (mc *migrationController) accountCerts(ctx context.Context, account string) ([]*store.Certificate, error) {
	a, _, err := mc.st.GetAccount(ctx, account)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range a.AllSites() {
		ids = append(ids, s.Domain)
	}
	certs, err := mc.st.GetCertificates(ctx, ids)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(certs, func(c *store.Certificate) bool { return c.Account != account }), nil
}

// servedCerts lists the account's certificates that its source node
// serves, installed and ordered alike: their keys are exported sealed to
// the target with the password hashes, each only if it is the key of the
// chain named here.
func (mc *migrationController) servedCerts(ctx context.Context, m *store.Migration) ([]*agentpb.ExportCertificate, error) {
	all, err := mc.accountCerts(ctx, m.Account)
	if err != nil {
		return nil, err
	}
	var out []*agentpb.ExportCertificate
	for _, c := range all {
		if c.Account == m.Account && c.Node == m.FromNode && !c.Deleting && !c.Revoke && c.Status.ChainPEM != "" {
			out = append(out, &agentpb.ExportCertificate{Id: c.ID, ChainPem: []byte(c.Status.ChainPEM)})
		}
	}
	return out, nil
}

// keepCertsAtSource records, before the switch moves them, what the
// source serves of the account's certificates: a rollback gives it back.
// What an earlier pass recorded stays (the step may run again).
func (mc *migrationController) keepCertsAtSource(ctx context.Context, m *store.Migration) error {
	all, err := mc.accountCerts(ctx, m.Account)
	if err != nil {
		return err
	}
	snap := map[string]store.CertAtSource{}
	for _, c := range all {
		st := &c.Status
		if c.Account != m.Account || c.Node != m.FromNode || c.Deleting || st.ChainPEM == "" || len(snap) >= maxExportedCerts {
			continue
		}
		snap[c.ID] = store.CertAtSource{State: st.State, ChainPEM: st.ChainPEM, Serial: st.Serial, Issuer: st.Issuer,
			NotBefore: st.NotBefore, NotAfter: st.NotAfter, RenewAt: st.RenewAt, IssuedDomains: slices.Clone(st.IssuedDomains)}
	}
	if len(snap) == 0 {
		return nil
	}
	_, err = mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
		changed := false
		for id, s := range snap {
			if _, ok := m.CertsAtSource[id]; !ok {
				if m.CertsAtSource == nil {
					m.CertsAtSource = map[string]store.CertAtSource{}
				}
				m.CertsAtSource[id], changed = s, true
			}
		}
		if !changed {
			return nil, store.ErrUnchanged
		}
		return nil, nil
	})
	return err
}

// moveCerts points the account's certificates on node from at node to.
//
// Forward, a certificate whose served key the source exported (sealed to
// the target) moves with it, with the chain of that key. An installed
// one takes the sealed key into its record and the certificate
// controller installs it (InstallCertificateAction); an ordered one is
// installed by the task written here with its record, and keeps its
// renewal schedule (the same validity gives the same renewal time). If
// that install fails, the record's bumped generation makes the
// controller order it again on the target.
//
// Without its key (the source was down, the key could not be read), an
// installed certificate is not left looking ISSUED with nobody serving
// it: its record says where the key stayed and that it must be installed
// again. An ordered one is ordered again on the target. Either way with
// an event and an audit entry, never silently.
//
// Moving back (rollback), the source still serves what it served at the
// switch: the record gets that state back (CertsAtSource) and nothing is
// sent. A record already on to is left alone, so the step may run again
// after a crash.
func (mc *migrationController) moveCerts(ctx context.Context, m *store.Migration, to, from string, forward bool) error {
	all, err := mc.accountCerts(ctx, m.Account)
	if err != nil {
		return err
	}
	now := mc.now()
	for _, c := range all {
		if c.Account != m.Account || c.Node != from || c.Deleting {
			continue
		}
		var kind, msg string
		_, err := mc.st.UpdateCertificate(ctx, c.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
			if c.Account != m.Account || c.Node != from || c.Deleting {
				return nil, store.ErrUnchanged
			}
			var task *agentpb.Task
			if forward {
				kind, msg, task = moveCertForward(c, m, to, from, now)
			} else {
				kind, msg = moveCertBack(c, m, to)
			}
			if kind == "" {
				return nil, store.ErrUnchanged
			}
			c.AddEvent(now, kind, msg)
			if kind == "unserved" {
				c.Status.LastError = msg
			}
			if task == nil {
				return nil, nil
			}
			return []*store.CertTask{{Node: to, Spec: task, CreatedBy: "migration/" + m.ID, Track: true}}, nil
		}, store.AuditEvent{})
		if err != nil && !errors.Is(err, store.ErrUnchanged) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("certificate %s: %w", c.ID, err)
		}
		if err == nil {
			// As the certificate controller's own events do.
			result := "ok: " + msg
			if kind == "unserved" {
				result = "failed: " + msg
			}
			_ = mc.st.AppendAudit(ctx, store.NewAuditEvent("system", mc.s.id, "certificate."+kind, c.ID, result))
		}
	}
	return nil
}

// moveCertForward points c at the target: the event to record (kind ""
// leaves c as it is) and, for an ordered certificate whose key came, the
// install to send there.
func moveCertForward(c *store.Certificate, m *store.Migration, to, from string, now time.Time) (kind, msg string, task *agentpb.Task) {
	st := &c.Status
	sealed, chain := m.SealedCertKeys[c.ID], m.ExportedCertChains[c.ID]
	if !c.Custom && st.TaskID != "" {
		// An order or renewal in flight on the source: its key is not
		// the exported one. The controller orders the certificate again
		// on the target once the task is done.
		msg = "a task was in flight on node " + from + " at the switch (migration " + m.ID + "): ordered again on node " + to + " once it is done"
		if n := len(st.Events); n > 0 && st.Events[n-1].Message == msg {
			return "", "", nil
		}
		return "placed", msg, nil
	}
	why := "the source node was not reachable"
	if r := m.CertKeysNotExported[c.ID]; r != "" {
		why = r
	} else if !m.Restore {
		why = "its key was not exported"
	}
	c.Node = to
	c.Generation++
	c.SealedKey = nil
	switch {
	case c.Custom && len(sealed) > 0:
		c.SealedKey = sealed
		msg = "the installed certificate moves with the account onto node " + to + " (migration " + m.ID + ")"
		if chain != "" && chain != c.CustomChainPEM {
			// The chain last installed is not the one served: its key
			// was sealed to the source and cannot move. The served one
			// does, with its own key; a pair the target would refuse
			// is never sent.
			c.CustomChainPEM = chain
			msg += "; the certificate installed last was not served yet on node " + from + " and stays there: install it again"
		}
		return "moved", msg, nil
	case c.Custom && st.ChainPEM == "":
		return "moved", "onto node " + to + "; nothing was served (migration " + m.ID + ")", nil
	case c.Custom:
		return "unserved", keyLeftBehind(c, from, why), nil
	case len(sealed) > 0 && chain != "":
		serial := st.Serial
		// Served again once the target has installed it: the result
		// gives the chain, validity and renewal time back.
		clearServed(c)
		// The chain is one this control plane's ACME server issued and
		// the source served: the target does not hold it to the system
		// roots (a private or staging CA is no reason to order again).
		task = &agentpb.Task{Generation: c.Generation, Action: &agentpb.Task_InstallCertificate{InstallCertificate: &agentpb.InstallCertificateAction{
			Id: c.ID, Username: m.Username, Site: c.ID, ChainPem: []byte(chain), SealedPrivateKey: sealed, Mail: c.Mail, AllowUntrusted: true}}}
		return "moved", "serial " + serial + " moves with the account onto node " + to + ": its key, exported from node " + from +
			", is sent there to be installed (migration " + m.ID + ")", task
	case st.ChainPEM == "":
		return "placed", "onto node " + to + " with the account; nothing was served (migration " + m.ID + ")", nil
	}
	msg = "serial " + st.Serial + " is not served on node " + to + ": its key stayed on node " + from + " (" + why + "); it is ordered again on node " + to
	clearServed(c)
	return "unserved", msg, nil
}

// moveCertBack points c back at the source, which kept its key and
// chain: the record gets back what the source served at the switch.
func moveCertBack(c *store.Certificate, m *store.Migration, to string) (kind, msg string) {
	st := &c.Status
	src, ok := m.CertsAtSource[c.ID]
	// Not over a task in flight (its result would overwrite it), nor
	// over a revocation asked for since (the serial may be the same).
	if !ok || st.TaskID != "" || c.Revoke {
		if !c.Custom && (st.TaskID != "" || !c.Revoke) {
			// Left to the controller: ordered again on the source
			// once its task is done.
			return "", ""
		}
		c.Node = to
		c.Generation++
		c.SealedKey = nil
		if c.Revoke {
			return "moved", "back onto node " + to + ", where the revocation asked for is made (migration " + m.ID + ")"
		}
		return "moved", "back onto node " + to + ", which kept its key (migration " + m.ID + ")"
	}
	c.Node = to
	c.SealedKey = nil
	st.State, st.ChainPEM, st.Serial, st.Issuer = src.State, src.ChainPEM, src.Serial, src.Issuer
	st.NotBefore, st.NotAfter, st.RenewAt, st.IssuedDomains = src.NotBefore, src.NotAfter, src.RenewAt, slices.Clone(src.IssuedDomains)
	st.LastError, st.Failures, st.NextAttempt = "", 0, time.Time{}
	st.PartialOrders, st.PartialRetryAt = 0, time.Time{}
	// What the source serves is what was asked for: nothing to send.
	st.ObservedGeneration = c.Generation
	return "moved", "back onto node " + to + ", which still serves serial " + src.Serial + " (migration " + m.ID + ")"
}

// activeOn: the account is ensured on node (its newest generation
// applied there) and its databases and mailboxes there are settled.
func (mc *migrationController) activeOn(ctx context.Context, node string, e *stepEnv) (bool, error) {
	a := e.a
	if a.Node == node && a.TaskID == "" && a.Status == store.AccountFailed {
		return false, permanentErr{"the account failed on node " + node + ": " + a.Reason}
	}
	if a.Node != node || a.TaskID != "" || a.AppliedGeneration != a.Generation {
		return false, nil
	}
	if e.dbs != nil {
		for _, d := range e.dbs.Databases {
			if st, _ := d.State(); !d.Deleted && d.Node == node && st == store.DatabasePending {
				return false, nil
			}
		}
		for _, u := range e.dbs.Users {
			if st, _ := u.State(); !u.Deleted && u.Node == node && st == store.DatabasePending {
				return false, nil
			}
		}
	}
	if e.mail != nil {
		for _, mb := range e.mail.Mailboxes {
			if st, _ := mb.State(); !mb.Deleted && mb.Node == node && st == store.MailPending {
				return false, nil
			}
		}
	}
	return true, nil
}

// zonesOn: every zone of the account has the node's address, and is
// served at its newest generation wherever it lives (a zone never served,
// in a cluster without DNS servers, has nothing to wait for).
func (mc *migrationController) zonesOn(ctx context.Context, e *stepEnv, nv *store.NodeView) (bool, error) {
	if nv == nil {
		return false, permanentErr{"the target node is gone"}
	}
	view, err := mc.s.dnsViews.get(ctx, mc.st)
	if err != nil {
		return false, err
	}
	for _, s := range e.a.AllSites() {
		z, _, err := mc.st.GetZone(ctx, s.Domain)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if z.Account != e.a.ID || z.Deleted {
			continue
		}
		if z.Address != nv.Address {
			return false, nil
		}
		if _, served := view.servers[z.Node]; served && (z.AppliedGeneration != z.Generation || z.Status != store.ZoneActive) {
			return false, nil
		}
	}
	return true, nil
}

// newestBackup is the id of the account's newest backup that holds
// something to restore.
func (mc *migrationController) newestBackup(ctx context.Context, m *store.Migration) (string, error) {
	if m.BackupID != "" {
		return m.BackupID, nil
	}
	bs, _, err := mc.st.ListBackups(ctx, m.Username, "", 0)
	if err != nil {
		return "", err
	}
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].AccountID == m.Account && finishedOK(bs[i].Status.State) {
			return bs[i].ID, nil
		}
	}
	return "", permanentErr{"node " + m.FromNode + " is down and the account has no backup to restore from"}
}

// restoreStep creates the restore of the newest backup onto the target
// (the backup controller's ALL onto another node) and waits for it.
func (mc *migrationController) restoreStep(ctx context.Context, m *store.Migration, e *stepEnv, now time.Time) (bool, func(*store.Migration), error) {
	if m.RestoreID == "" {
		id := store.NewRestoreID(m.Username, now)
		// The id is recorded before the restore is created: a crash in
		// between leaves an id whose restore is created on the next pass.
		_, err := mc.update(ctx, m.ID, func(m *store.Migration) ([]*store.ObjectTask, error) {
			if m.RestoreID != "" {
				return nil, store.ErrUnchanged
			}
			m.RestoreID = id
			return nil, nil
		})
		mc.ctl.Enqueue(m.ID)
		return false, nil, err
	}
	r, _, err := mc.st.GetRestoreRev(ctx, m.RestoreID)
	if errors.Is(err, store.ErrNotFound) {
		r = &store.Restore{ID: m.RestoreID, Backup: m.BackupID, Account: m.Username, AccountID: m.Account, Owner: m.Owner,
			What: store.RestoreAll, Node: m.ToNode, Requester: "migration/" + m.ID}
		err = mc.st.CreateRestore(ctx, r, store.NewAuditEvent("system", mc.s.id, "createRestore", r.ID,
			"ok: migration "+m.ID+" of "+m.Username+" from a down node"))
		if errors.Is(err, store.ErrConflict) {
			err = nil
		}
		return false, nil, err
	}
	if err != nil {
		return false, nil, err
	}
	if !restoreFinished(r.Status.State) {
		return false, nil, nil
	}
	if r.Status.State == store.BackupFailed {
		return false, nil, permanentErr{"restore " + r.ID + " failed: " + r.Status.Error}
	}
	return true, nil, nil
}

// Bounds on what a source node's credential export may put in the
// migration record.
const (
	maxExportedCerts = 1000
	maxSealedCertKey = 64 << 10
)

// boundedText is s cut to at most n bytes, on a rune boundary, with
// control characters replaced: a node's error text shown to tenants.
func boundedText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
