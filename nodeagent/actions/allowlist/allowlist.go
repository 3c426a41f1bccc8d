// Package allowlist maps a task to the action it names. It is the only place
// that does: an action not listed in List.FromTask cannot run on a node.
//
// It is a package of its own, rather than part of package actions, because
// it must import every action package while every action package imports
// package actions for the Action and Env types.
package allowlist

import (
	"errors"
	"fmt"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/actions/backup"
	"github.com/npanel/npanel/nodeagent/actions/backupnode"
	"github.com/npanel/npanel/nodeagent/actions/cpanel"
	"github.com/npanel/npanel/nodeagent/actions/credentials"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/actions/migrate"
	"github.com/npanel/npanel/nodeagent/actions/observe"
	"github.com/npanel/npanel/nodeagent/actions/ping"
	"github.com/npanel/npanel/nodeagent/actions/service"
	"github.com/npanel/npanel/nodeagent/actions/tls"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// ErrNoAction is returned for a task that carries no action this agent
// knows. Such a task fails (and is journaled like any other) instead of being
// retried: resending it to the same agent binary cannot succeed.
var ErrNoAction = errors.New("no known action")

// List is the allow-list of one agent. It builds every action from the
// agent's own modules, which hold the per-node state the actions share
// (locks, caches, the web committer), so that two agents in one process
// never share any of it.
type List struct {
	web     *web.Module
	dns     *dns.Module
	db      *db.Module
	mail    *mail.Module
	account *account.Module
	tls     *tls.Module
	backup  *backup.Module
	// backupNode serves other nodes' repositories (role backup).
	backupNode *backupnode.Module
	// credentials exports mailbox and database user hashes (migrations).
	credentials *credentials.Module
	// migrate is both ends of live migrations (the endpoint and the keys).
	migrate *migrate.Module
	cpanel  *cpanel.Module
}

// New returns the allow-list of an agent that runs mods (the modules the
// agent sets up). A service whose module is not among them gets a module
// of its own that is never set up: its actions still exist, and fail as
// they do on a node without the service's daemon.
func New(mods ...actions.Module) *List {
	l := &List{}
	for _, m := range mods {
		switch m := m.(type) {
		case *web.Module:
			l.web = m
		case *dns.Module:
			l.dns = m
		case *db.Module:
			l.db = m
		case *mail.Module:
			l.mail = m
		case *backupnode.Module:
			l.backupNode = m
		}
	}
	webRuns := l.web != nil
	if l.web == nil {
		l.web = web.NewModule()
	}
	if l.dns == nil {
		l.dns = dns.NewModule()
	}
	if l.db == nil {
		l.db = db.NewModule()
	}
	if l.mail == nil {
		l.mail = mail.NewModule()
	}
	if l.backupNode == nil {
		l.backupNode = backupnode.NewModule()
	}
	// Webmail is served by the node's nginx, through the web module: only
	// on a node that runs it (elsewhere webmail is UNSUPPORTED).
	if webRuns {
		l.mail.UseWeb(l.web)
	}
	// An account's sites, databases and mail are the web, db and mail
	// modules'.
	l.account = account.NewModule(l.web, l.db, l.mail)
	// Certificates are served by the web module and, for mail hosts, by
	// the mail module once it can install them.
	var mailCerts tls.Installer
	if mi, ok := any(l.mail).(tls.Installer); ok {
		mailCerts = mi
	}
	l.tls = tls.NewModule(l.web, mailCerts)
	// Backups: on every node that hosts accounts; databases and mailbox
	// hashes through the db and mail modules.
	l.backup = backup.NewModule(l.db, l.mail, l.tls, backup.DefaultConcurrency)
	l.credentials = credentials.NewModule(l.mail, l.db, l.tls)
	// Migrations: on every node; databases through the db module.
	l.migrate = migrate.NewModule(l.db)
	// cPanel imports: dumps through the db module, maildirs the mail module's.
	l.cpanel = cpanel.NewModule(l.db, l.mail)
	return l
}

// Backup returns the agent's backup module (the agent wires its Progress
// hook into its stream).
func (l *List) Backup() *backup.Module { return l.backup }

// Cpanel returns the agent's cPanel import module (the agent forwards
// the progress of its fetches).
func (l *List) Cpanel() *cpanel.Module { return l.cpanel }

// Migrate returns the agent's migration module (the agent runs its
// endpoint).
func (l *List) Migrate() *migrate.Module { return l.migrate }

// FromTask returns the typed action carried by t.
func (l *List) FromTask(t *agentpb.Task) (actions.Action, error) {
	switch a := t.GetAction().(type) {
	case *agentpb.Task_Ping:
		return ping.New(a.Ping), nil
	case *agentpb.Task_EnsureAccount:
		return l.account.NewEnsure(a.EnsureAccount), nil
	case *agentpb.Task_DeleteAccount:
		return l.account.NewDelete(a.DeleteAccount), nil
	case *agentpb.Task_RestartService:
		return service.NewRestart(a.RestartService), nil
	case *agentpb.Task_EnsureZone:
		return l.dns.NewEnsureZone(a.EnsureZone), nil
	case *agentpb.Task_DeleteZone:
		return l.dns.NewDeleteZone(a.DeleteZone), nil
	case *agentpb.Task_SyncSecondaryZones:
		return l.dns.NewSyncSecondaryZones(a.SyncSecondaryZones), nil
	case *agentpb.Task_RotateZoneKeys:
		return l.dns.NewRotateZoneKeys(a.RotateZoneKeys), nil
	case *agentpb.Task_RefreshSecondaryZone:
		return l.dns.NewRefreshSecondaryZone(a.RefreshSecondaryZone), nil
	case *agentpb.Task_CheckPrimaryZones:
		return l.dns.NewCheckPrimaryZones(a.CheckPrimaryZones), nil
	case *agentpb.Task_EnsureDatabase:
		return l.db.NewEnsureDatabase(a.EnsureDatabase), nil
	case *agentpb.Task_DropDatabase:
		return l.db.NewDropDatabase(a.DropDatabase), nil
	case *agentpb.Task_EnsureDatabaseUser:
		return l.db.NewEnsureDatabaseUser(a.EnsureDatabaseUser), nil
	case *agentpb.Task_DropDatabaseUser:
		return l.db.NewDropDatabaseUser(a.DropDatabaseUser), nil
	case *agentpb.Task_OptimizeDatabase:
		return l.db.NewOptimizeDatabase(a.OptimizeDatabase), nil
	case *agentpb.Task_ListDatabases:
		return l.db.NewListDatabases(a.ListDatabases), nil
	case *agentpb.Task_ReadDomainLog:
		return l.web.NewReadDomainLog(a.ReadDomainLog), nil
	case *agentpb.Task_ReadTraffic:
		return l.web.NewReadTraffic(a.ReadTraffic), nil
	case *agentpb.Task_ReadServiceLog:
		return observe.NewReadServiceLog(a.ReadServiceLog), nil
	case *agentpb.Task_EnsureMailDomain:
		return l.mail.NewEnsureMailDomain(a.EnsureMailDomain), nil
	case *agentpb.Task_DeleteMailDomain:
		return l.mail.NewDeleteMailDomain(a.DeleteMailDomain), nil
	case *agentpb.Task_EnsureMailbox:
		return l.mail.NewEnsureMailbox(a.EnsureMailbox), nil
	case *agentpb.Task_DeleteMailbox:
		return l.mail.NewDeleteMailbox(a.DeleteMailbox), nil
	case *agentpb.Task_MailUsage:
		return l.mail.NewMailUsage(a.MailUsage), nil
	case *agentpb.Task_ReadMailLog:
		return l.mail.NewReadMailLog(a.ReadMailLog), nil
	case *agentpb.Task_ScanMailbox:
		return l.mail.NewScanMailbox(a.ScanMailbox), nil
	case *agentpb.Task_MailQueue:
		return l.mail.NewMailQueue(a.MailQueue), nil
	case *agentpb.Task_FlushMailQueue:
		return l.mail.NewFlushMailQueue(a.FlushMailQueue), nil
	case *agentpb.Task_TrainMail:
		return l.mail.NewTrainMail(a.TrainMail), nil
	case *agentpb.Task_IssueCertificate:
		return l.tls.NewIssue(a.IssueCertificate), nil
	case *agentpb.Task_InstallCertificate:
		return l.tls.NewInstall(a.InstallCertificate), nil
	case *agentpb.Task_RevokeCertificate:
		return l.tls.NewRevoke(a.RevokeCertificate), nil
	case *agentpb.Task_RemoveCertificate:
		return l.tls.NewRemove(a.RemoveCertificate), nil
	case *agentpb.Task_BackupAccount:
		return l.backup.NewBackupAccount(a.BackupAccount), nil
	case *agentpb.Task_RestoreBackup:
		return l.backup.NewRestoreBackup(a.RestoreBackup), nil
	case *agentpb.Task_VerifyBackup:
		return l.backup.NewVerifyBackup(a.VerifyBackup), nil
	case *agentpb.Task_ForgetBackup:
		return l.backup.NewForgetBackup(a.ForgetBackup), nil
	case *agentpb.Task_AnalyzeCpanelBackup:
		return l.cpanel.NewAnalyze(a.AnalyzeCpanelBackup), nil
	case *agentpb.Task_ImportCpanelBackup:
		return l.cpanel.NewImport(a.ImportCpanelBackup), nil
	case *agentpb.Task_ScanCpanelServer:
		return l.cpanel.NewScan(a.ScanCpanelServer), nil
	case *agentpb.Task_FetchCpanelBackup:
		return l.cpanel.NewFetch(a.FetchCpanelBackup), nil
	case *agentpb.Task_EnsureBackupAccess:
		return l.backupNode.NewEnsureAccess(a.EnsureBackupAccess), nil
	case *agentpb.Task_ExportCredentials:
		return l.credentials.NewExport(a.ExportCredentials), nil
	case *agentpb.Task_MigrationKey:
		return l.migrate.NewMigrationKey(a.MigrationKey), nil
	case *agentpb.Task_AuthorizeMigration:
		return l.migrate.NewAuthorizeMigration(a.AuthorizeMigration), nil
	case *agentpb.Task_SyncMigration:
		return l.migrate.NewSyncMigration(a.SyncMigration), nil
	case *agentpb.Task_RevokeMigration:
		return l.migrate.NewRevokeMigration(a.RevokeMigration), nil
	case *agentpb.Task_NodeMetrics:
		return observe.NewNodeMetrics(a.NodeMetrics), nil
	case nil:
		// An action added to the protocol after this agent was built decodes
		// as an unknown field with the oneof left empty.
		if len(t.ProtoReflect().GetUnknown()) > 0 {
			return nil, fmt.Errorf("%w: task carries an action unknown to this agent version (upgrade the agent)", ErrNoAction)
		}
		return nil, fmt.Errorf("%w: task carries no action", ErrNoAction)
	default:
		return nil, fmt.Errorf("%w: action %T is not allow-listed", ErrNoAction, a)
	}
}
