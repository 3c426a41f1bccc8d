package controlplane

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// Backup nodes: a NODE target's node lets the other nodes in over SFTP,
// each with the SSH key its agent reports (NodeFacts.BackupSSHPublicKey).
// When the set of keys differs from what the backup node last accepted,
// or its host key is not known yet, EnsureBackupAccessAction goes to it
// and its answer (host key, SFTP address and user) is recorded on the
// target, for the source nodes to pin.

// targetRetry is how long a failed access task waits before the next.
const targetRetry = time.Minute

// queueTargets queues every NODE target.
func (bc *backupController) queueTargets(ctx context.Context) error {
	ts, err := bc.st.ListBackupTargets(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.Kind == store.TargetNode {
			bc.ctl.Enqueue(targetKeyPfx + t.Name)
		}
	}
	return nil
}

// wantedAccessKeys is the keys backup node may accept: every other node's
// that reported one.
func wantedAccessKeys(nodes []store.NodeView, backupNode string) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		if n.Name == backupNode || n.State.Facts.BackupSSHPublicKey == "" {
			continue
		}
		out[n.Name] = n.State.Facts.BackupSSHPublicKey
	}
	return out
}

// accessTask builds the access task for keys, in node order.
func accessTask(keys map[string]string) *agentpb.Task {
	a := &agentpb.EnsureBackupAccessAction{}
	for _, n := range slices.Sorted(maps.Keys(keys)) {
		a.Keys = append(a.Keys, &agentpb.BackupAccessKey{Node: n, PublicKey: keys[n]})
	}
	return &agentpb.Task{Action: &agentpb.Task_EnsureBackupAccess{EnsureBackupAccess: a}}
}

// sentKeys returns the keys task t carried.
func sentKeys(t *store.Task) map[string]string {
	var spec agentpb.Task
	if err := proto.Unmarshal(t.Spec, &spec); err != nil {
		return nil
	}
	out := map[string]string{}
	for _, k := range spec.GetEnsureBackupAccess().GetKeys() {
		out[k.GetNode()] = k.GetPublicKey()
	}
	return out
}

// applyAccessResult records a finished access task on t.
func applyAccessResult(t *store.BackupTarget, task *store.Task) (failed bool) {
	res, err := task.BackupAccessResult()
	if err != nil {
		t.AccessErr = taskFailure(task, err)
		return true
	}
	t.HostKey, t.SFTPAddress, t.SFTPUser = res.GetHostKey(), res.GetSftpAddress(), res.GetSftpUser()
	t.AccessKeys = sentKeys(task)
	t.AccessErr = ""
	return false
}

func (bc *backupController) syncTarget(ctx context.Context, name string) error {
	t, err := bc.st.GetBackupTarget(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		bc.targetRetries.Delete(name)
		return nil
	}
	if err != nil || t.Kind != store.TargetNode {
		return err
	}
	outcomes, err := bc.st.BackupTargetOutcomes(ctx, name)
	if err != nil {
		return err
	}
	finished, err := bc.finishedTasks(ctx, outcomes, t.AccessTaskID)
	if err != nil {
		return err
	}
	nodes, err := bc.st.ListNodes(ctx)
	if err != nil {
		return err
	}
	backupNodeExists := slices.ContainsFunc(nodes, func(n store.NodeView) bool { return n.Name == t.Node })
	want := wantedAccessKeys(nodes, t.Node)
	now := time.Now().UTC()
	_, err = bc.st.UpdateBackupTargetAccess(ctx, name, func(t *store.BackupTarget) ([]*store.ObjectTask, error) {
		before := mustJSON(t)
		if task := finished[t.AccessTaskID]; t.AccessTaskID != "" && task != nil {
			t.AccessTaskID = ""
			if applyAccessResult(t, task) {
				bc.targetRetries.Store(name, now.Add(targetRetry))
			}
		}
		var tasks []*store.ObjectTask
		switch {
		case t.AccessTaskID != "":
		case !backupNodeExists:
			t.AccessErr = "backup node " + t.Node + " does not exist"
		case t.HostKey == "" || !maps.Equal(t.AccessKeys, want):
			if at, ok := bc.targetRetries.Load(name); ok && now.Before(at.(time.Time)) {
				break
			}
			bc.targetRetries.Delete(name)
			tasks = []*store.ObjectTask{{Node: t.Node, Spec: accessTask(want), CreatedBy: "controller", Track: true}}
		}
		if tasks == nil && mustJSON(t) == before {
			return nil, store.ErrUnchanged
		}
		return tasks, nil
	}, store.AuditEvent{})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, tid := range outcomes {
		if err := bc.st.ForgetBackupTargetOutcome(ctx, name, tid); err != nil {
			return err
		}
	}
	if at, ok := bc.targetRetries.Load(name); ok && time.Now().Before(at.(time.Time)) {
		bc.ctl.EnqueueAfter(targetKeyPfx+name, time.Until(at.(time.Time))+10*time.Millisecond)
	}
	return nil
}
