// Package allowlist maps a task to the action it names. It is the only place
// that does: an action not listed in FromTask cannot run on a node.
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
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/actions/ping"
	"github.com/npanel/npanel/nodeagent/actions/service"
	"github.com/npanel/npanel/protos/agentpb"
)

// ErrNoAction is returned for a task that carries no action this agent
// knows. Such a task fails (and is journaled like any other) instead of being
// retried: resending it to the same agent binary cannot succeed.
var ErrNoAction = errors.New("no known action")

// FromTask returns the typed action carried by t.
func FromTask(t *agentpb.Task) (actions.Action, error) {
	switch a := t.GetAction().(type) {
	case *agentpb.Task_Ping:
		return ping.New(a.Ping), nil
	case *agentpb.Task_EnsureAccount:
		return account.NewEnsure(a.EnsureAccount), nil
	case *agentpb.Task_DeleteAccount:
		return account.NewDelete(a.DeleteAccount), nil
	case *agentpb.Task_RestartService:
		return service.NewRestart(a.RestartService), nil
	case *agentpb.Task_EnsureZone:
		return dns.NewEnsureZone(a.EnsureZone), nil
	case *agentpb.Task_DeleteZone:
		return dns.NewDeleteZone(a.DeleteZone), nil
	case *agentpb.Task_SyncSecondaryZones:
		return dns.NewSyncSecondaryZones(a.SyncSecondaryZones), nil
	case *agentpb.Task_RotateZoneKeys:
		return dns.NewRotateZoneKeys(a.RotateZoneKeys), nil
	case *agentpb.Task_RefreshSecondaryZone:
		return dns.NewRefreshSecondaryZone(a.RefreshSecondaryZone), nil
	case *agentpb.Task_CheckPrimaryZones:
		return dns.NewCheckPrimaryZones(a.CheckPrimaryZones), nil
	case *agentpb.Task_EnsureDatabase:
		return db.NewEnsureDatabase(a.EnsureDatabase), nil
	case *agentpb.Task_DropDatabase:
		return db.NewDropDatabase(a.DropDatabase), nil
	case *agentpb.Task_EnsureDatabaseUser:
		return db.NewEnsureDatabaseUser(a.EnsureDatabaseUser), nil
	case *agentpb.Task_DropDatabaseUser:
		return db.NewDropDatabaseUser(a.DropDatabaseUser), nil
	case *agentpb.Task_OptimizeDatabase:
		return db.NewOptimizeDatabase(a.OptimizeDatabase), nil
	case *agentpb.Task_ListDatabases:
		return db.NewListDatabases(a.ListDatabases), nil
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
