package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// The cPanel import controller (leader only) drives each import record
// (store imports.go) through its steps:
//
//	PENDING   → an analyze_cpanel_backup task on the node (tracked)
//	ANALYZING → its report is kept on the record (hashes stay sealed to the node)
//	CREATING  → the account, its domains, zones, mail and databases are
//	            made through the API's own mutations (graph.CpanelImporter),
//	            as the admin who asked; then it waits until all are ACTIVE
//	FILLING   → an import_cpanel_backup task fills them (files, maildirs,
//	            rows, cron)
//	DONE, PARTIAL (an item failed), FAILED
//
// Every task is written to etcd in the transaction that records it as the
// one in flight, and every creation step is recorded as done once made, a
// step repeated after a crash finding its work there: a new leader resumes
// an import where the old one stopped.
const (
	importWorkers = 2
	// importWait is how often a waiting import looks again (the account's
	// placement, its objects becoming ACTIVE).
	importWait = time.Second
	// importResync queues every unfinished import again, a safety net for
	// a lost done notice.
	importResync = 30 * time.Second
)

// cpanelAPI is what the controller needs of the API: its mutations, run as
// the import's creator (graph.CpanelImporter).
type cpanelAPI interface {
	CreateAccount(ctx context.Context, actor, id, username, domain, plan, owner, node string) (*store.Account, error)
	AddDomain(ctx context.Context, actor, id, account, domain, docroot, aliasOf string) error
	ImportZone(ctx context.Context, actor, id, zone, text string) ([]string, error)
	CreateMailbox(ctx context.Context, actor, id, account, address string, quotaMB int, sealedHash []byte) error
	CreateForwarder(ctx context.Context, actor, id, from string, to []string) error
	SetCatchAll(ctx context.Context, actor, id, domain, target string) error
	SetAutoresponder(ctx context.Context, actor, id, address, subject, body string) error
	CreateDatabase(ctx context.Context, actor, id, account, suffix string, engine agentpb.DatabaseEngine) error
	CreateDatabaseUser(ctx context.Context, actor, id, account, suffix string, engine agentpb.DatabaseEngine, sealedHash []byte) error
	SetDatabasePrivileges(ctx context.Context, actor, id, account, database, user string, privileges []string) error
	InstallSealedCertificate(ctx context.Context, actor, id, account, node, domain, chainPEM string, sealedKey []byte) error
}

type cpanelImportController struct {
	s   *Server
	st  *store.Store
	api cpanelAPI
	ctl *controller.Controller
}

func newCpanelImportController(s *Server) *cpanelImportController {
	r := &graph.Resolver{Store: s.store, Auth: s.auth, Cluster: s,
		Zones: &zoneWriter{store: s.store, views: &s.dnsViews, ctl: &s.zoneCtl}, Log: s.log.With("component", "cpanel-import"),
		AllowTestUsernames: s.cfg.AllowTestUsernames, KEK: s.kek}
	c := &cpanelImportController{s: s, st: s.store, api: graph.NewCpanelImporter(r)}
	var m *controller.Metrics
	if s.metrics != nil {
		m = s.metrics.controllers
	}
	c.ctl = controller.New(controller.Options{
		Name:  "cpanel-import",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindImports, Handle: importEvent, Resync: importResync},
			{Kind: store.KindImportOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		Sync:    c.sync,
		Workers: importWorkers,
		Log:     s.log,
		Metrics: m,
	})
	return c
}

// Run runs the controller for one term as leader.
func (c *cpanelImportController) Run(ctx context.Context) { c.ctl.Run(ctx) }

func importEvent(ev store.Event) (string, bool, bool) {
	if ev.Deleted {
		return ev.Name, false, false
	}
	im, err := store.DecodeImport(ev)
	if err != nil {
		return ev.Name, false, false
	}
	busy := !im.Status.Finished()
	return ev.Name, busy, busy
}

func (c *cpanelImportController) sync(ctx context.Context, id string) (err error) {
	im, err := c.st.GetImport(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	outcomes, err := c.st.ImportOutcomes(ctx, id)
	if err != nil {
		return err
	}
	// A done notice goes once its task's result is recorded: until then
	// it keeps the task's record from the pruner.
	defer func() {
		if err != nil {
			return
		}
		for _, t := range outcomes {
			_ = c.st.ForgetImportOutcome(context.WithoutCancel(ctx), id, t)
		}
	}()
	switch im.Status {
	case store.ImportPending:
		return c.analyze(ctx, im)
	case store.ImportAnalyzing:
		return c.analyzed(ctx, im)
	case store.ImportCreating:
		wait, err := c.create(ctx, im)
		if err != nil || wait {
			c.ctl.EnqueueAfter(id, importWait)
			return err
		}
		return c.fill(ctx, id)
	case store.ImportFilling:
		return c.filled(ctx, im)
	}
	return nil
}

func (c *cpanelImportController) audit(ctx context.Context, im *store.Import, action, result string) store.AuditEvent {
	ev := store.NewAuditEvent("system", c.s.id, action, im.Node+":"+im.Path, result)
	ev.Detail = map[string]string{"id": im.ID}
	return ev
}

// update writes fn's change of import id with its audit event.
func (c *cpanelImportController) update(ctx context.Context, id string, fn func(im *store.Import) ([]*store.ObjectTask, error), ev store.AuditEvent) error {
	_, err := c.st.UpdateImport(ctx, id, fn, ev)
	if errors.Is(err, store.ErrUnchanged) {
		return nil
	}
	return err
}

// finish ends an import with status and error.
func (c *cpanelImportController) finish(ctx context.Context, im *store.Import, status store.ImportStatus, msg string, items []store.ImportItem) error {
	result := "ok: " + string(status)
	if msg != "" {
		result += ": " + msg
	}
	return c.update(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
		if r.Status.Finished() {
			return nil, store.ErrUnchanged
		}
		r.Status, r.Error, r.FinishedAt, r.TaskID = status, msg, time.Now().UTC(), ""
		if items != nil {
			r.Items = items
		}
		return nil, nil
	}, c.audit(ctx, im, "cpanelImport.finish", result))
}

func (c *cpanelImportController) analyze(ctx context.Context, im *store.Import) error {
	return c.update(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
		if r.Status != store.ImportPending {
			return nil, store.ErrUnchanged
		}
		r.Status = store.ImportAnalyzing
		spec := &agentpb.Task{Action: &agentpb.Task_AnalyzeCpanelBackup{AnalyzeCpanelBackup: &agentpb.AnalyzeCpanelBackupAction{Path: r.Path, Username: r.Username}}}
		return []*store.ObjectTask{{Node: r.Node, Spec: spec, CreatedBy: "controller", Track: true}}, nil
	}, c.audit(ctx, im, "cpanelImport.analyze", "ok"))
}

// taskOf reads the import's task in flight; nil while it runs.
func (c *cpanelImportController) taskOf(ctx context.Context, im *store.Import) (*store.Task, error) {
	if im.TaskID == "" {
		return nil, fmt.Errorf("import %s is %s with no task", im.ID, im.Status)
	}
	t, _, err := c.st.GetTask(ctx, im.TaskID)
	if err != nil {
		return nil, err
	}
	if t.Status == store.TaskPending {
		return nil, nil
	}
	return t, nil
}

func (c *cpanelImportController) analyzed(ctx context.Context, im *store.Import) error {
	t, err := c.taskOf(ctx, im)
	if errors.Is(err, store.ErrNotFound) {
		return c.finish(ctx, im, store.ImportFailed, "the analysis task is lost", nil)
	}
	if err != nil || t == nil {
		return err
	}
	res, err := t.AnalyzeCpanelBackupResult()
	if err != nil {
		return c.finish(ctx, im, store.ImportFailed, "analyze: "+err.Error(), nil)
	}
	rep := res.GetReport()
	if rep.GetUsername() == "" || rep.GetMainDomain() == "" {
		return c.finish(ctx, im, store.ImportFailed, "the archive names no cPanel user or main domain", nil)
	}
	b, err := proto.Marshal(rep)
	if err != nil {
		return err
	}
	return c.update(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
		if r.Status != store.ImportAnalyzing || r.TaskID != t.ID {
			return nil, store.ErrUnchanged
		}
		r.Status, r.Report, r.TaskID = store.ImportCreating, b, ""
		if r.Username == "" {
			r.Username = rep.GetUsername()
		}
		return nil, nil
	}, c.audit(ctx, im, "cpanelImport.analyzed", fmt.Sprintf("ok: %s, fidelity %d%%", rep.GetUsername(), rep.GetFidelityPercent())))
}

// permanent tells a refusal of an item by the API (a name taken, a plan
// limit, an invalid value), reported as the item FAILED, from a failure
// worth retrying.
func permanent(err error) bool {
	switch graph.CodeOf(err) {
	case graph.CodeInvalidInput, graph.CodeForbidden, graph.CodeNotFound, "QUOTA_EXCEEDED":
		return true
	case graph.CodeConflict:
		return !errors.Is(err, store.ErrNotYet)
	}
	return false
}

// step runs one creation step of the import unless it is recorded as
// done, and records it with its report line: a refusal makes the item
// FAILED with the API's message, adapt notes what was changed.
func (c *cpanelImportController) step(ctx context.Context, im *store.Import, key string, item store.ImportItem, run func() (adapt string, err error)) error {
	if slices.Contains(im.Done, key) {
		return nil
	}
	note, err := run()
	switch {
	case err != nil && !permanent(err):
		return err
	case err != nil:
		item.Disposition, item.Note = "FAILED", graph.MessageOf(err)
	case note != "":
		item.Disposition, item.Note = "ADAPT", note
	case item.Disposition == "":
		item.Disposition = "IMPORT"
	}
	im.Done = append(im.Done, key)
	im.Items = append(im.Items, item)
	return c.update(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
		if r.Status != store.ImportCreating || slices.Contains(r.Done, key) {
			return nil, store.ErrUnchanged
		}
		r.Done = append(r.Done, key)
		r.Items = append(r.Items, item)
		return nil, nil
	}, store.AuditEvent{})
}

// dbSuffix is the part of a cPanel database (or user) name after the
// cPanel user's prefix: the import names it <username>_<suffix>.
func dbSuffix(name, cpUser string) (suffix, adapt string) {
	s, _, whole := validate.CpanelDatabaseName(name, cpUser, "")
	if whole {
		adapt = "without the cPanel prefix " + cpUser + "_; named after it whole"
	}
	return s, adapt
}

// renamedNote says what became of a renamed database or user.
func renamedNote(note, old, nu string) string {
	if old != nu {
		note = strings.TrimPrefix(note+"; imported as "+nu, "; ")
	}
	return note
}

// dbNames maps the report's database names to the account's.
func dbNames(rep *agentpb.CpanelReport, username string) map[string]string {
	out := map[string]string{}
	for _, d := range rep.GetDatabases() {
		s, _ := dbSuffix(d.GetName(), rep.GetUsername())
		out[d.GetName()] = username + "_" + s
	}
	return out
}

// mailQuotaMB turns cPanel's quota into the API's (0: the default).
func mailQuotaMB(bytes uint64) (int, string) {
	if bytes == 0 {
		return 0, "unlimited in cPanel; the plan's default quota applies"
	}
	mb := int((bytes + (1<<20 - 1)) >> 20)
	if mb < validate.MinMailQuotaMB {
		return validate.MinMailQuotaMB, fmt.Sprintf("quota raised from %d MB to the minimum %d MB", mb, validate.MinMailQuotaMB)
	}
	if mb > validate.MaxMailQuotaMB {
		return validate.MaxMailQuotaMB, fmt.Sprintf("quota lowered from %d MB to the maximum %d MB", mb, validate.MaxMailQuotaMB)
	}
	return mb, ""
}

// create makes what the report lists through the API, step by step; wait
// says it must look again later (the account is not placed yet, objects
// are still being applied).
func (c *cpanelImportController) create(ctx context.Context, im *store.Import) (wait bool, err error) {
	rep, err := store.DecodeCpanelReport(im.Report)
	if err != nil || rep == nil {
		return false, c.finish(ctx, im, store.ImportFailed, "the record holds no report", nil)
	}
	actor := im.CreatedBy
	// 1. The account, pinned to the import's node.
	if im.Account == "" {
		a, err := c.adoptOrCreate(ctx, im, rep)
		if err != nil {
			if permanent(err) {
				return false, c.finish(ctx, im, store.ImportFailed, "create the account: "+graph.MessageOf(err), nil)
			}
			return false, err
		}
		if err := c.update(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
			r.Account = a.ID
			return nil, nil
		}, c.audit(ctx, im, "cpanelImport.account", "ok: "+a.Username+" ("+a.ID+")")); err != nil {
			return false, err
		}
		im.Account = a.ID
	}
	a, _, err := c.st.GetAccount(ctx, im.Account)
	if errors.Is(err, store.ErrNotFound) {
		return false, c.finish(ctx, im, store.ImportFailed, "the account was deleted during the import", nil)
	}
	if err != nil {
		return false, err
	}
	if a.Status == store.AccountFailed {
		return false, c.finish(ctx, im, store.ImportFailed, "the account failed: "+a.Reason, nil)
	}
	if a.Node == "" {
		return true, nil // placement pending; mail and databases need the node
	}
	if a.Node != im.Node {
		return false, c.finish(ctx, im, store.ImportFailed, "the account was placed on "+a.Node+", not "+im.Node+": the archive's hashes are sealed to "+im.Node, nil)
	}
	// 2. Add-on and sub domains as sites, parked domains as aliases.
	for _, d := range rep.GetDomains() {
		kind := d.GetKind()
		if kind == "main" {
			continue
		}
		item := store.ImportItem{Kind: kind + "_domain", Name: d.GetDomain()}
		err := c.step(ctx, im, "domain:"+d.GetDomain(), item, func() (string, error) {
			if kind == "parked" {
				target := d.GetAliasOf()
				if target == "" {
					target = a.Domain
				}
				return "", c.api.AddDomain(ctx, actor, im.ID, a.ID, d.GetDomain(), "", target)
			}
			return "", c.api.AddDomain(ctx, actor, im.ID, a.ID, d.GetDomain(), d.GetDocroot(), "")
		})
		if err != nil {
			return false, err
		}
	}
	// 3. Zones, into the account's zones by the zone importer, the old
	// server's address replaced by the node's.
	nodeAddr := ""
	if nv, err := c.st.GetNode(ctx, im.Node); err == nil {
		nodeAddr = nv.Address
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	for _, z := range rep.GetZones() {
		err := c.step(ctx, im, "zone:"+z.GetName(), store.ImportItem{Kind: "zone", Name: z.GetName()}, func() (string, error) {
			text, note := rehomeZoneText(z.GetName(), z.GetText(), nodeAddr)
			refused, err := c.api.ImportZone(ctx, actor, im.ID, z.GetName(), text)
			if err != nil {
				return "", err
			}
			if len(refused) > 0 {
				note = strings.TrimPrefix(note+"; records not taken: "+strings.Join(firstN(refused, 10), "; "), "; ")
			}
			return note, nil
		})
		if err != nil {
			return false, err
		}
	}
	// 4. Mail: mailboxes with their cPanel hash, forwarders, catch-alls,
	// autoresponders.
	plan, err := c.st.GetPlan(ctx, a.Plan)
	if err != nil {
		return false, err
	}
	boxes := map[string]bool{}
	for _, m := range rep.GetMailboxes() {
		boxes[m.GetAddress()] = true
		err := c.step(ctx, im, "mailbox:"+m.GetAddress(), store.ImportItem{Kind: "mailbox", Name: m.GetAddress(), Bytes: m.GetBytes()}, func() (string, error) {
			quota, note := mailQuotaMB(m.GetQuotaBytes())
			if plan.DiskMB > 0 && int64(quota) > plan.DiskMB {
				quota, note = 0, fmt.Sprintf("quota of %d MB above the plan's %d MB of disk; the plan's default quota applies", quota, plan.DiskMB)
			}
			if len(m.GetSealedPasswordHash()) == 0 {
				note = strings.TrimPrefix(note+"; no password hash in the archive: set one with setMailboxPassword", "; ")
			}
			return note, c.api.CreateMailbox(ctx, actor, im.ID, a.ID, m.GetAddress(), quota, m.GetSealedPasswordHash())
		})
		if err != nil {
			return false, err
		}
	}
	for _, f := range rep.GetForwarders() {
		src := f.GetSource()
		err := c.step(ctx, im, "forwarder:"+src, store.ImportItem{Kind: "forwarder", Name: src}, func() (string, error) {
			if domain, ok := strings.CutPrefix(src, "*@"); ok {
				return c.catchAll(ctx, actor, im, domain, f.GetDestinations(), boxes)
			}
			return "", c.api.CreateForwarder(ctx, actor, im.ID, src, f.GetDestinations())
		})
		if err != nil {
			return false, err
		}
	}
	for _, ar := range rep.GetAutoresponders() {
		err := c.step(ctx, im, "autoresponder:"+ar.GetAddress(), store.ImportItem{Kind: "autoresponder", Name: ar.GetAddress()}, func() (string, error) {
			if !boxes[ar.GetAddress()] {
				return "", fmt.Errorf("%s is not a mailbox of the archive: %w", ar.GetAddress(), store.ErrNotFound)
			}
			return "", c.api.SetAutoresponder(ctx, actor, im.ID, ar.GetAddress(), ar.GetSubject(), ar.GetBody())
		})
		if err != nil {
			return false, err
		}
	}
	// 5. Databases and users under the account's prefix, users with their
	// cPanel hash.
	names := dbNames(rep, a.Username)
	for _, d := range rep.GetDatabases() {
		suffix, note := dbSuffix(d.GetName(), rep.GetUsername())
		err := c.step(ctx, im, "database:"+d.GetName(), store.ImportItem{Kind: "database", Name: d.GetName(), Bytes: d.GetBytes()}, func() (string, error) {
			return renamedNote(note, d.GetName(), names[d.GetName()]), c.api.CreateDatabase(ctx, actor, im.ID, a.ID, suffix, d.GetEngine())
		})
		if err != nil {
			return false, err
		}
	}
	for _, u := range rep.GetDatabaseUsers() {
		suffix, note := dbSuffix(u.GetName(), rep.GetUsername())
		full := a.Username + "_" + suffix
		err := c.step(ctx, im, "dbuser:"+u.GetName(), store.ImportItem{Kind: "database_user", Name: u.GetName()}, func() (string, error) {
			// The node sealed the hash under the name the user takes
			// here (the analysis task names the account).
			return renamedNote(note, u.GetName(), full), c.api.CreateDatabaseUser(ctx, actor, im.ID, a.ID, suffix, u.GetEngine(), u.GetSealedPasswordHash())
		})
		if err != nil {
			return false, err
		}
	}
	// 6. Certificates: checked by the node as installCertificate checks
	// one, their keys sealed by it to itself for installCertificate's
	// context (the account is on that node: checked above), installed
	// through installCertificate's record path. The node reported only
	// trusted ones; an untrusted one was skipped in its report (the site
	// gets an ACME certificate, as any new site does). Rather than expire,
	// an imported certificate is taken over by ACME at its renewal time.
	for _, crt := range rep.GetCertificates() {
		dom := crt.GetDomain()
		item := store.ImportItem{Kind: "certificate", Name: dom, Disposition: "IMPORT", Note: "ACME takes over its renewal: a third of its" +
			" lifetime before it expires, the site's certificate is ordered from the ACME server (setAutoRenew false keeps this one until it expires)"}
		err := c.step(ctx, im, "certificate:"+dom, item, func() (string, error) {
			return "", c.api.InstallSealedCertificate(ctx, actor, im.ID, a.ID, im.Node, dom, crt.GetCertificatePem(), crt.GetSealedPrivateKey())
		})
		if err != nil {
			return false, err
		}
	}
	// 7. Grants, once the users are applied (a user still pending refuses
	// a change of its privileges).
	if settled, err := c.settled(ctx, a, false); err != nil || !settled {
		return true, err
	}
	for _, u := range rep.GetDatabaseUsers() {
		suffix, _ := dbSuffix(u.GetName(), rep.GetUsername())
		user := a.Username + "_" + suffix
		for _, g := range u.GetGrants() {
			item := store.ImportItem{Kind: "grant", Name: u.GetName() + "@" + g.GetDatabase()}
			err := c.step(ctx, im, "grant:"+u.GetName()+"@"+g.GetDatabase(), item, func() (string, error) {
				db, ok := names[g.GetDatabase()]
				if !ok {
					return "", &validate.Error{Field: "grant", Reason: "database " + g.GetDatabase() + " is not in the archive (a wildcard grant?); grant it with setDatabasePrivileges"}
				}
				return "", c.api.SetDatabasePrivileges(ctx, actor, im.ID, a.ID, db, user, g.GetPrivileges())
			})
			if err != nil {
				return false, err
			}
		}
	}
	// 8. Everything ACTIVE before the node fills it.
	settled, err := c.settled(ctx, a, true)
	return !settled, err
}

// catchAll sets a domain's catch-all from a cPanel "*@domain" forwarder.
func (c *cpanelImportController) catchAll(ctx context.Context, actor string, im *store.Import, domain string, to []string, boxes map[string]bool) (string, error) {
	if len(to) != 1 {
		return "", &validate.Error{Field: "catchAll", Reason: "a catch-all to several destinations; nPanel's goes to one mailbox of the domain"}
	}
	t := to[0]
	switch {
	case t == validate.CatchAllFail || t == validate.CatchAllBlackhole:
	case boxes[t] && strings.HasSuffix(t, "@"+domain):
		t = strings.TrimSuffix(t, "@"+domain)
	case strings.HasPrefix(t, ":fail:"):
		t = validate.CatchAllFail
	default:
		return "", &validate.Error{Field: "catchAll", Reason: "the catch-all goes to " + t + ", which is not a mailbox of " + domain + "; nPanel's goes to one"}
	}
	return "", c.api.SetCatchAll(ctx, actor, im.ID, domain, t)
}

// settled reports whether the account's databases and users (and, with
// all, the account itself and its mailboxes) have been applied by the
// node: ACTIVE, or FAILED (the fill reports what it could not do).
func (c *cpanelImportController) settled(ctx context.Context, a *store.Account, all bool) (bool, error) {
	if all {
		cur, _, err := c.st.GetAccount(ctx, a.ID)
		if err != nil {
			return false, err
		}
		if cur.Status != store.AccountActive || cur.AppliedGeneration < cur.Generation {
			return false, nil
		}
	}
	dbs, err := c.st.GetDatabases(ctx, a.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if dbs != nil {
		for _, d := range dbs.Databases {
			if st, _ := d.State(); st == store.DatabasePending {
				return false, nil
			}
		}
		for _, u := range dbs.Users {
			st, _ := u.State()
			if st == store.DatabasePending || (st == store.DatabaseActive && u.Status.PasswordGeneration < u.PasswordGeneration) {
				return false, nil
			}
		}
	}
	if !all {
		return true, nil
	}
	mail, err := c.st.GetMail(ctx, a.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if mail != nil {
		for _, d := range mail.Domains {
			if st, _ := d.State(); st == store.MailPending {
				return false, nil
			}
		}
		for _, m := range mail.Mailboxes {
			st, _ := m.State()
			if st == store.MailPending || ((st == store.MailActive || st == store.MailDisabled) && m.Status.PasswordGeneration < m.PasswordGeneration) {
				return false, nil
			}
		}
	}
	return true, nil
}

// adoptOrCreate creates the import's account, or finds the one an earlier
// try of this step created (the crash fell between the account's creation
// and the import's record of it).
func (c *cpanelImportController) adoptOrCreate(ctx context.Context, im *store.Import, rep *agentpb.CpanelReport) (*store.Account, error) {
	username := im.Username
	if username == "" {
		username = rep.GetUsername()
	}
	if id, err := c.st.AccountIDByUsername(ctx, username); err == nil {
		a, _, err := c.st.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		if a.PinnedNode == im.Node && a.Domain == rep.GetMainDomain() && a.Owner == im.Owner && !a.CreatedAt.Before(im.CreatedAt) {
			return a, nil
		}
		return nil, fmt.Errorf("username %s is taken: %w", username, store.ErrConflict)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return c.api.CreateAccount(ctx, im.CreatedBy, im.ID, username, rep.GetMainDomain(), im.Plan, im.Owner, im.Node)
}

// fill sends the node the import of the archive's data into what was made.
func (c *cpanelImportController) fill(ctx context.Context, id string) error {
	return c.update(ctx, id, func(r *store.Import) ([]*store.ObjectTask, error) {
		if r.Status != store.ImportCreating {
			return nil, store.ErrUnchanged
		}
		rep, err := store.DecodeCpanelReport(r.Report)
		if err != nil {
			return nil, err
		}
		a, _, err := c.st.GetAccount(ctx, r.Account)
		if err != nil {
			return nil, err
		}
		failed := map[string]bool{}
		for _, it := range r.Items {
			if it.Disposition == "FAILED" {
				failed[it.Kind+"\x00"+it.Name] = true
			}
		}
		act := &agentpb.ImportCpanelBackupAction{Path: r.Path, Username: a.Username, Files: true, Cron: true, Databases: map[string]string{}}
		for _, m := range rep.GetMailboxes() {
			if !failed["mailbox\x00"+m.GetAddress()] {
				act.Mailboxes = append(act.Mailboxes, m.GetAddress())
			}
		}
		for old, nu := range dbNames(rep, a.Username) {
			if !failed["database\x00"+old] {
				act.Databases[old] = nu
			}
		}
		r.Status = store.ImportFilling
		spec := &agentpb.Task{Action: &agentpb.Task_ImportCpanelBackup{ImportCpanelBackup: act}}
		return []*store.ObjectTask{{Node: r.Node, Spec: spec, CreatedBy: "controller", Track: true}}, nil
	}, store.NewAuditEvent("system", c.s.id, "cpanelImport.fill", id, "ok"))
}

func (c *cpanelImportController) filled(ctx context.Context, im *store.Import) error {
	t, err := c.taskOf(ctx, im)
	if errors.Is(err, store.ErrNotFound) {
		return c.finish(ctx, im, store.ImportFailed, "the import task is lost", nil)
	}
	if err != nil || t == nil {
		return err
	}
	res, err := t.ImportCpanelBackupResult()
	if err != nil {
		return c.finish(ctx, im, store.ImportFailed, "fill the account: "+err.Error(), finalItems(im, nil))
	}
	items := finalItems(im, res)
	status := store.ImportDone
	msg := ""
	if n := countFailed(items); n > 0 {
		status, msg = store.ImportPartial, fmt.Sprintf("%d items failed", n)
	}
	return c.finish(ctx, im, status, msg, items)
}

func countFailed(items []store.ImportItem) int {
	n := 0
	for _, it := range items {
		if it.Disposition == "FAILED" {
			n++
		}
	}
	return n
}

// finalItems is the import's report: the analysis' items, each replaced
// by what the import did with it where it did something (the creation
// steps, then the node's fill), and the fill's failures.
func finalItems(im *store.Import, res *agentpb.ImportCpanelBackupResult) []store.ImportItem {
	var out []store.ImportItem
	at := map[string]int{}
	put := func(it store.ImportItem) {
		k := it.Kind + "\x00" + it.Name
		if i, ok := at[k]; ok {
			prev := out[i]
			if it.Entry == "" {
				it.Entry = prev.Entry
			}
			if it.Bytes == 0 {
				it.Bytes = prev.Bytes
			}
			if prev.Disposition == "FAILED" && it.Disposition != "FAILED" {
				return // a failure stays one
			}
			if prev.Note != "" && it.Note != "" && prev.Note != it.Note && it.Disposition != "FAILED" {
				it.Note = prev.Note + "; " + it.Note
			} else if it.Note == "" {
				it.Note = prev.Note
			}
			if it.Disposition == "IMPORT" && prev.Disposition == "ADAPT" {
				it.Disposition = "ADAPT"
			}
			out[i] = it
			return
		}
		at[k] = len(out)
		out = append(out, it)
	}
	if rep, err := store.DecodeCpanelReport(im.Report); err == nil && rep != nil {
		for _, it := range rep.GetItems() {
			put(store.ImportItem{Kind: it.GetKind(), Name: it.GetName(), Disposition: graph.CpanelDisposition(it.GetDisposition()),
				Note: it.GetNote(), Entry: it.GetEntry(), Bytes: it.GetBytes()})
		}
	}
	for _, it := range im.Items {
		put(it)
	}
	for _, it := range res.GetItems() {
		put(store.ImportItem{Kind: it.GetKind(), Name: it.GetName(), Disposition: graph.CpanelDisposition(it.GetDisposition()),
			Note: it.GetNote(), Entry: it.GetEntry(), Bytes: it.GetBytes()})
	}
	for _, f := range res.GetFailed() {
		kind, name, ok := strings.Cut(f.GetItem(), ":")
		if !ok {
			kind, name = "other", f.GetItem()
		}
		put(store.ImportItem{Kind: kind, Name: name, Disposition: "FAILED", Note: f.GetError()})
	}
	return out
}

// rehomeZoneText points the zone's A (or AAAA) records that name the old
// cPanel server, the address of the zone's apex, at the node's address
// instead: imported as they are, the site and mail would go on resolving
// to the server being left. Other addresses (a CDN, another host) stay.
func rehomeZoneText(zone, text, nodeAddr string) (string, string) {
	ip, err := netip.ParseAddr(nodeAddr)
	if err != nil {
		return text, ""
	}
	typ := "A"
	if ip.Is6() && !ip.Is4In6() {
		typ = "AAAA"
	}
	imp, err := dnszone.ParseZone(zone, text)
	if err != nil {
		return text, ""
	}
	apex := ""
	for _, r := range imp.Records {
		if r.Type == typ && strings.TrimSuffix(r.Name, ".") == strings.TrimSuffix(imp.Zone, ".") {
			apex = r.Content
			break
		}
	}
	if apex == "" || apex == ip.String() {
		return text, ""
	}
	lines := strings.Split(text, "\n")
	n := 0
	for i, line := range lines {
		body, comment, _ := strings.Cut(line, ";")
		f := strings.Fields(body)
		for j := 0; j+1 < len(f); j++ {
			if strings.EqualFold(f[j], typ) && f[j+1] == apex {
				f[j+1] = ip.String()
				// An owner left out (the previous record's) is kept so:
				// the line starts with blank space then.
				lead := ""
				if line != "" && (line[0] == ' ' || line[0] == '\t') {
					lead = "\t"
				}
				lines[i] = lead + strings.Join(f, "\t")
				if comment != "" {
					lines[i] += " ;" + comment
				}
				n++
				break
			}
		}
	}
	if n == 0 {
		return text, ""
	}
	return strings.Join(lines, "\n"), fmt.Sprintf("%d %s records to the cPanel server's %s point at the node's %s", n, typ, apex, ip)
}
