package graph

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const (
	// cpanelAnalyzeWait bounds how long analyzeCpanelBackup waits for the
	// node: reading a large archive as a stream takes a while.
	cpanelAnalyzeWait = 2 * time.Minute
	cpanelAnalyzeTTL  = cpanelAnalyzeWait + time.Minute
	maxImportsPage    = 500
)

// cpanelPath checks an archive path as the node's import area takes it
// (validate.CpanelArchivePath, which the agent checks again).
func cpanelPath(p string) (string, error) {
	if err := validate.CpanelArchivePath(p); err != nil {
		return "", err
	}
	return p, nil
}

// cpanelNode checks that node exists.
func (r *Resolver) cpanelNode(ctx context.Context, node string) error {
	if _, err := r.Store.GetNode(ctx, node); err != nil {
		if isNotFound(err) {
			return &validate.Error{Field: "node", Reason: "no node " + quote(node)}
		}
		return err
	}
	return nil
}

// analyzeCpanel sends the node an analysis of the archive and waits for
// its report.
func (r *Resolver) analyzeCpanel(ctx context.Context, p auth.Principal, in model.AnalyzeCpanelBackupInput) (*agentpb.CpanelReport, error) {
	rel, err := cpanelPath(in.Path)
	if err != nil {
		return nil, err
	}
	if err := r.cpanelNode(ctx, in.Node); err != nil {
		return nil, err
	}
	spec := &agentpb.Task{Action: &agentpb.Task_AnalyzeCpanelBackup{AnalyzeCpanelBackup: &agentpb.AnalyzeCpanelBackupAction{Path: rel}}}
	t, err := r.Store.EnqueueQueryTask(ctx, in.Node, spec, "analyzeCpanelBackup", p.Name, cpanelAnalyzeTTL)
	if err != nil {
		return nil, err
	}
	queued := t
	defer func() { _ = r.Store.ForgetTask(context.WithoutCancel(ctx), queued) }()
	t, err = r.Store.WaitTask(ctx, t.ID, cpanelAnalyzeWait)
	if err != nil || t == nil || (t.Status != store.TaskSucceeded && t.Status != store.TaskFailed) {
		return nil, errorf(CodeUnavailable, "node "+in.Node+" did not answer within "+cpanelAnalyzeWait.String())
	}
	res, err := t.AnalyzeCpanelBackupResult()
	if err != nil {
		var te *store.TaskError
		if errors.As(err, &te) && te.Reason == agentpb.ErrorReason_ERROR_REASON_INVALID {
			return nil, &validate.Error{Field: "path", Reason: te.Message}
		}
		return nil, errorf(CodeUnavailable, "node "+in.Node+": "+err.Error())
	}
	return res.GetReport(), nil
}

// importCpanel checks an import request and writes its record; the import
// controller on the leader takes it from there.
func (r *Resolver) importCpanel(ctx context.Context, p auth.Principal, in model.ImportCpanelBackupInput) (*store.Import, error) {
	rel, err := cpanelPath(in.Path)
	if err != nil {
		return nil, err
	}
	if err := r.cpanelNode(ctx, in.Node); err != nil {
		return nil, err
	}
	u, err := r.Store.GetUser(ctx, in.Owner)
	if err != nil {
		if isNotFound(err) {
			return nil, &validate.Error{Field: "owner", Reason: "no user " + quote(in.Owner)}
		}
		return nil, err
	}
	if u.Role == store.RoleUser {
		return nil, &validate.Error{Field: "owner", Reason: "an account owner must be an admin or a reseller"}
	}
	if _, err := r.Store.GetPlan(ctx, in.Plan); err != nil {
		if isNotFound(err) {
			return nil, &validate.Error{Field: "plan", Reason: "no plan " + quote(in.Plan)}
		}
		return nil, err
	}
	username := ""
	if in.Username != nil && *in.Username != "" {
		username = *in.Username
		if err := r.validUsername(username); err != nil {
			return nil, err
		}
		if _, err := r.Store.AccountIDByUsername(ctx, username); err == nil {
			return nil, errorf(CodeConflict, "username "+quote(username)+" is taken")
		}
	}
	now := time.Now().UTC()
	im := &store.Import{ID: store.NewImportID(now), Node: in.Node, Path: rel, Owner: u.Name, Plan: in.Plan,
		Username: username, CreatedBy: p.Name}
	ev := store.NewAuditEvent(p.Name, source(ctx), "importCpanelBackup", in.Node+":"+rel, "ok")
	ev.Detail = map[string]string{"id": im.ID, "owner": im.Owner, "plan": im.Plan, "username": username}
	if err := r.Store.CreateImport(ctx, im, ev); err != nil {
		return nil, err
	}
	return im, nil
}

func dispositionModel(d string) model.ImportDisposition {
	switch d {
	case "IMPORT", "IMPORT_DISPOSITION_IMPORT":
		return model.ImportDispositionImport
	case "ADAPT", "IMPORT_DISPOSITION_ADAPT":
		return model.ImportDispositionAdapt
	case "FAILED":
		return model.ImportDispositionFailed
	}
	return model.ImportDispositionSkip
}

// CpanelDisposition names an agent's disposition as import records keep it.
func CpanelDisposition(d agentpb.ImportDisposition) string {
	switch d {
	case agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT:
		return "IMPORT"
	case agentpb.ImportDisposition_IMPORT_DISPOSITION_ADAPT:
		return "ADAPT"
	}
	return "SKIP"
}

func cpanelItemModel(it *agentpb.CpanelItem) *model.CpanelItem {
	return &model.CpanelItem{Kind: it.GetKind(), Name: it.GetName(), Disposition: dispositionModel(CpanelDisposition(it.GetDisposition())),
		Note: it.GetNote(), Entry: it.GetEntry(), Bytes: int64(it.GetBytes())}
}

func cpanelEngine(e agentpb.DatabaseEngine) model.DatabaseEngine {
	if e == agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL {
		return model.DatabaseEnginePostgresql
	}
	return model.DatabaseEngineMariadb
}

// cpanelReportModel is the report as the API shows it: every secret the
// node found (sealed hashes, sealed keys) is left out.
func cpanelReportModel(rep *agentpb.CpanelReport) *model.CpanelReport {
	out := &model.CpanelReport{Username: rep.GetUsername(), Layout: rep.GetLayout(), MainDomain: rep.GetMainDomain(),
		Plan: rep.GetPlan(), FidelityPercent: int(rep.GetFidelityPercent()), ArchiveBytes: int64(rep.GetArchiveBytes()),
		HomeFiles: int64(rep.GetHomeFiles()), HomeBytes: int64(rep.GetHomeBytes()),
		Items: []*model.CpanelItem{}, Domains: []*model.CpanelDomain{}, Mailboxes: []*model.CpanelMailbox{},
		Databases: []*model.CpanelDatabase{}, DatabaseUsers: []*model.CpanelDatabaseUser{},
		Certificates: []*model.CpanelCertificate{}, Crons: []*model.CpanelCron{}, Forwarders: []*model.CpanelForwarder{},
		Autoresponders: []*model.CpanelAutoresponder{}, Zones: []*model.CpanelZone{}}
	for _, it := range rep.GetItems() {
		out.Items = append(out.Items, cpanelItemModel(it))
	}
	for _, d := range rep.GetDomains() {
		md := &model.CpanelDomain{Domain: d.GetDomain(), Kind: d.GetKind(), Docroot: d.GetDocroot()}
		if d.GetAliasOf() != "" {
			md.AliasOf = new(d.GetAliasOf())
		}
		out.Domains = append(out.Domains, md)
	}
	for _, m := range rep.GetMailboxes() {
		out.Mailboxes = append(out.Mailboxes, &model.CpanelMailbox{Address: m.GetAddress(), QuotaBytes: int64(m.GetQuotaBytes()),
			Bytes: int64(m.GetBytes()), Messages: int64(m.GetMessages())})
	}
	for _, d := range rep.GetDatabases() {
		out.Databases = append(out.Databases, &model.CpanelDatabase{Name: d.GetName(), Engine: cpanelEngine(d.GetEngine()), Bytes: int64(d.GetBytes())})
	}
	for _, u := range rep.GetDatabaseUsers() {
		mu := &model.CpanelDatabaseUser{Name: u.GetName(), Engine: cpanelEngine(u.GetEngine()), Grants: []*model.CpanelGrant{}}
		for _, g := range u.GetGrants() {
			mu.Grants = append(mu.Grants, &model.CpanelGrant{Database: g.GetDatabase(), Privileges: append([]string{}, g.GetPrivileges()...)})
		}
		out.DatabaseUsers = append(out.DatabaseUsers, mu)
	}
	for _, c := range rep.GetCertificates() {
		out.Certificates = append(out.Certificates, &model.CpanelCertificate{Domain: c.GetDomain()})
	}
	for _, c := range rep.GetCrons() {
		out.Crons = append(out.Crons, &model.CpanelCron{Schedule: c.GetSchedule(), Command: c.GetCommand()})
	}
	for _, f := range rep.GetForwarders() {
		out.Forwarders = append(out.Forwarders, &model.CpanelForwarder{Source: f.GetSource(), Destinations: append([]string{}, f.GetDestinations()...)})
	}
	for _, a := range rep.GetAutoresponders() {
		out.Autoresponders = append(out.Autoresponders, &model.CpanelAutoresponder{Address: a.GetAddress(), Subject: a.GetSubject()})
	}
	for _, z := range rep.GetZones() {
		out.Zones = append(out.Zones, &model.CpanelZone{Name: z.GetName()})
	}
	return out
}

func cpanelImportModel(im *store.Import) *model.CpanelImport {
	out := &model.CpanelImport{ID: im.ID, Node: im.Node, Path: im.Path, Owner: im.Owner, Plan: im.Plan,
		Status: model.CpanelImportStatus(im.Status), Items: []*model.CpanelItem{}, CreatedBy: im.CreatedBy,
		CreatedAt: im.CreatedAt, UpdatedAt: im.UpdatedAt}
	if im.Account != "" {
		out.Account = new(im.Account)
	}
	if im.Username != "" {
		out.Username = new(im.Username)
	}
	if im.Error != "" {
		out.Error = new(im.Error)
	}
	if !im.FinishedAt.IsZero() {
		out.FinishedAt = new(im.FinishedAt)
	}
	if rep, err := store.DecodeCpanelReport(im.Report); err == nil && rep != nil {
		out.Report = cpanelReportModel(rep)
		if out.Username == nil && rep.GetUsername() != "" {
			out.Username = new(rep.GetUsername())
		}
		if !im.Status.Finished() {
			out.Items = append(out.Items, out.Report.Items...)
		}
	}
	for _, it := range im.Items {
		out.Items = append(out.Items, &model.CpanelItem{Kind: it.Kind, Name: it.Name, Disposition: dispositionModel(it.Disposition),
			Note: it.Note, Entry: it.Entry, Bytes: int64(it.Bytes)})
	}
	return out
}

func importsPage(first *int) (int, error) {
	n := 50
	if first != nil {
		n = *first
	}
	if n < 1 || n > maxImportsPage {
		return 0, &validate.Error{Field: "first", Reason: fmt.Sprintf("must be 1..%d", maxImportsPage)}
	}
	return n, nil
}

// CpanelImporter runs an import's creation steps through the API's own
// mutations, as the admin who asked for the import: the account, its
// domains, zones, mail and databases are checked (plan limits, quotas,
// names) and audited exactly as if that admin had made each request. The
// import controller (controlplane/cpanel_import.go) drives it. Each step
// finds its work done when repeated after a crash.
type CpanelImporter struct{ r *Resolver }

// NewCpanelImporter returns the importer of r's API.
func NewCpanelImporter(r *Resolver) *CpanelImporter { return &CpanelImporter{r: r} }

// as is ctx for a request of actor (an admin) from the import id.
func as(ctx context.Context, actor, id string) context.Context {
	ctx = auth.WithPrincipal(ctx, auth.Principal{Name: actor, Role: store.RoleAdmin})
	return auth.WithSource(ctx, "import/"+id)
}

// CodeOf returns the API error code err would carry: the controller
// tells an item's refusal (INVALID_INPUT, QUOTA_EXCEEDED, CONFLICT, ...)
// from a failure worth a retry (UNAVAILABLE, INTERNAL).
func CodeOf(err error) string {
	code, _ := classify(err)
	return code
}

// MessageOf is err's message as the API would show it.
func MessageOf(err error) string {
	_, msg := classify(err)
	return msg
}

// CreateAccount creates the account as createAccount does, pinned to node.
func (c *CpanelImporter) CreateAccount(ctx context.Context, actor, id, username, domain, plan, owner, node string) (*store.Account, error) {
	return c.r.createAccount(as(ctx, actor, id), model.CreateAccountInput{Username: username, Domain: domain, Plan: plan,
		Owner: &owner, Node: &node})
}

// AddDomain adds an add-on or sub domain (aliasOf "") or a parked domain
// (aliasOf its target) as addDomain does; a domain the account serves
// already is left as it is.
func (c *CpanelImporter) AddDomain(ctx context.Context, actor, id, account, domain, docroot, aliasOf string) error {
	a, _, err := c.r.Store.GetAccount(ctx, account)
	if err != nil {
		return err
	}
	if d, err := validate.Domain(domain); err == nil && a.SiteIndex(d) >= 0 {
		return nil
	}
	var root, target *string
	if aliasOf != "" {
		target = &aliasOf
	} else if docroot != "" {
		root = &docroot
	}
	_, err = (&mutationResolver{c.r}).AddDomain(as(ctx, actor, id), account, domain, root, target)
	return err
}

// ImportZone imports a zone file as importZone does; refused names the
// lines it did not take.
func (c *CpanelImporter) ImportZone(ctx context.Context, actor, id, zone, text string) (refused []string, err error) {
	out, err := (&mutationResolver{c.r}).ImportZone(as(ctx, actor, id), zone, text)
	if err != nil {
		return nil, err
	}
	for _, l := range out.Refused {
		reason := ""
		if l.Reason != nil {
			reason = ": " + *l.Reason
		}
		refused = append(refused, fmt.Sprintf("line %d%s", l.Line, reason))
	}
	return refused, nil
}

// CreateMailbox creates the mailbox as createMailbox does, then makes the
// archive's hash (sealed to the account's node) its password: the node
// installs the hash as it is, so the cPanel password keeps working. The
// password createMailbox generates is never shown. A mailbox that exists
// already only gets the hash.
func (c *CpanelImporter) CreateMailbox(ctx context.Context, actor, id, account, address string, quotaMB int, sealedHash []byte) error {
	ctx = as(ctx, actor, id)
	mail, err := c.r.Store.GetMail(ctx, account)
	if err != nil && !isNotFound(err) {
		return err
	}
	if mail == nil || mail.Mailboxes[address] == nil || mail.Mailboxes[address].Deleted {
		in := model.CreateMailboxInput{Account: account, Address: address}
		if quotaMB > 0 {
			in.QuotaMb = &quotaMB
		}
		if _, err := (&mutationResolver{c.r}).CreateMailbox(ctx, in); err != nil {
			return err
		}
	} else if m := mail.Mailboxes[address]; len(sealedHash) == 0 || string(m.SealedPasswordHash) == string(sealedHash) {
		return nil
	}
	if len(sealedHash) == 0 {
		return nil
	}
	_, err = c.r.mailboxMutation(ctx, "importMailboxPassword", address, func(_ *store.MailSet, _ *mailChange, m *store.Mailbox) error {
		m.SealedPassword, m.SealedPasswordHash, m.PasswordGeneration = nil, sealedHash, m.Generation
		return nil
	})
	return err
}

// CreateForwarder adds a forwarder as createForwarder does; one already
// there is replaced.
func (c *CpanelImporter) CreateForwarder(ctx context.Context, actor, id, from string, to []string) error {
	_, err := (&mutationResolver{c.r}).CreateForwarder(as(ctx, actor, id), from, to)
	if err != nil && CodeOf(err) == CodeConflict && strings.Contains(err.Error(), "exists") {
		return nil
	}
	return err
}

// SetCatchAll sets a domain's catch-all as setCatchAll does.
func (c *CpanelImporter) SetCatchAll(ctx context.Context, actor, id, domain, target string) error {
	_, err := (&mutationResolver{c.r}).SetCatchAll(as(ctx, actor, id), domain, target)
	return err
}

// SetAutoresponder sets a mailbox's autoresponder as setAutoresponder does.
func (c *CpanelImporter) SetAutoresponder(ctx context.Context, actor, id, address, subject, body string) error {
	_, err := (&mutationResolver{c.r}).SetAutoresponder(as(ctx, actor, id), address, model.AutoresponderInput{Subject: subject, Body: body})
	return err
}

func engineArg(e agentpb.DatabaseEngine) *model.DatabaseEngine {
	m := cpanelEngine(e)
	return &m
}

// CreateDatabase creates <account's username>_<suffix> as createDatabase
// does, without waiting for the node; one that exists is left as it is.
func (c *CpanelImporter) CreateDatabase(ctx context.Context, actor, id, account, suffix string, engine agentpb.DatabaseEngine) error {
	a, _, err := c.r.Store.GetAccount(ctx, account)
	if err != nil {
		return err
	}
	if set, err := c.r.Store.GetDatabases(ctx, account); err == nil {
		if d := set.Databases[a.Username+"_"+suffix]; d != nil && !d.Deleted {
			return nil
		}
	}
	var wait time.Duration
	_, err = (&mutationResolver{c.r}).CreateDatabase(as(ctx, actor, id), account, suffix, engineArg(engine), &wait)
	return err
}

// CreateDatabaseUser creates <account's username>_<suffix> as
// createDatabaseUser does, then makes the archive's hash (sealed to the
// node) its password, as CreateMailbox does for mailboxes.
func (c *CpanelImporter) CreateDatabaseUser(ctx context.Context, actor, id, account, suffix string, engine agentpb.DatabaseEngine, sealedHash []byte) error {
	ctx = as(ctx, actor, id)
	p, a, err := c.r.webAccount(ctx, account)
	if err != nil {
		return err
	}
	full := a.Username + "_" + suffix
	var wait time.Duration
	set, err := c.r.Store.GetDatabases(ctx, account)
	if err != nil && !isNotFound(err) {
		return err
	}
	var u *store.DatabaseUser
	if set != nil {
		u = set.Users[full]
	}
	if u == nil || u.Deleted {
		if _, err := (&mutationResolver{c.r}).CreateDatabaseUser(ctx, account, suffix, nil, engineArg(engine), &wait); err != nil {
			return err
		}
	} else if len(sealedHash) == 0 || string(u.SealedPasswordHash) == string(sealedHash) {
		return nil
	}
	if len(sealedHash) == 0 {
		return nil
	}
	return c.r.changeDatabases(ctx, p, a, "importDatabaseUserPassword", full, nil, func(set *store.DatabaseSet, ch *dbChange) error {
		if err := stillOn(set, a); err != nil {
			return err
		}
		old, ok := set.Users[full]
		if !ok || old.Deleted {
			return errorf(CodeNotFound, "account "+set.Account.Username+" has no database user "+quote(full))
		}
		u := cloneUser(old)
		ch.putUser(u)
		u.SealedPassword, u.SealedPasswordHash, u.PasswordGeneration = nil, sealedHash, u.Generation
		return nil
	})
}

// SetDatabasePrivileges sets a user's privileges on a database (full
// names) as setDatabasePrivileges does, without waiting for the node.
func (c *CpanelImporter) SetDatabasePrivileges(ctx context.Context, actor, id, account, database, user string, privileges []string) error {
	var wait time.Duration
	_, err := (&mutationResolver{c.r}).SetDatabasePrivileges(as(ctx, actor, id), account, database, user, privileges, &wait)
	return err
}

// InstallSealedCertificate installs a certificate of the archive on site
// domain as installCertificate does, as the importing admin: the same
// checks of the site (the account's, not an alias, not being deleted) and
// of the chain (covers the domain, valid now, verifies to the API's roots:
// installCertificate's check without the key), the same record and audit
// event (installCertificate), so the node serves it at once; ACME takes
// over its renewal (putInstalledCert says how an imported certificate
// differs). The key is
// the one thing not checked here: only the node can open it, and it
// matched it to the leaf before sealing it to itself for this domain
// (CertificateKeySealContext); node is that node, which must be the
// site's. An untrusted certificate is refused: the node skips those (the
// site gets one from ACME), so one here means the roots differ. The site
// must be account's, the import's own: an archive's certificate for a
// domain another account serves is refused.
func (c *CpanelImporter) InstallSealedCertificate(ctx context.Context, actor, id, account, node, domain, chainPEM string, sealedKey []byte) (err error) {
	r := c.r
	ctx = as(ctx, actor, id)
	defer func() { r.auditFailure(ctx, "", "installCertificate", domain, err) }()
	p, err := requireUser(ctx)
	if err != nil {
		return err
	}
	d, err := canonicalDomain(domain)
	if err != nil {
		return err
	}
	if d != domain {
		// The key is sealed under the name as the archive gave it.
		return &validate.Error{Field: "domain", Reason: quote(domain) + " is not in canonical form (" + d + ")"}
	}
	if len(sealedKey) == 0 {
		return &validate.Error{Field: "privateKey", Reason: "the archive's certificate has no sealed key"}
	}
	a, site, err := r.siteOf(ctx, p, "installCertificate", d)
	if err != nil {
		return err
	}
	if a.ID != account {
		return errorf(CodeConflict, d+" is served by another account, not the one this import made")
	}
	if err = notAlias(site); err != nil {
		return err
	}
	if err = accountLive(a); err != nil {
		return err
	}
	if a.Node != node {
		return errorf(CodeConflict, "the key of "+d+"'s certificate is sealed to node "+node+", but account "+a.Username+" is on "+orNone(a.Node))
	}
	roots, err := certRoots()
	if err != nil {
		return err
	}
	ch, err := validate.CheckCertificateChain(d, chainPEM, "", false, roots, time.Now())
	if err != nil {
		return err
	}
	_, err = r.putInstalledCert(ctx, p, a, d, ch, sealedKey, false, true)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "no node yet"
	}
	return s
}
