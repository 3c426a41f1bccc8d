package backup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

const maxProblems = 50

// lsNode is one line of restic ls --json.
type lsNode struct {
	StructType string `json:"struct_type"`
	Type       string `json:"type"`
	Path       string `json:"path"`
	Size       uint64 `json:"size"`
}

// Apply implements actions.Action.
//
// The repository is one account's, so its structure is checked whole
// (restic check, no data read); the data of this backup is read back by
// restoring every snapshot into a scratch area (0700, removed after) with
// restic restore --verify, which re-reads each restored file and compares
// it with the blob hashes the snapshot records. That reads exactly the
// packs the backup uses: a corrupted one fails decryption (its MAC) or
// the comparison. Each restored file's size is then checked against
// restic ls.
func (a *VerifyBackup) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	s, err := a.m.open(ctx, env, a.req.GetRepository(), false)
	if err != nil {
		return nil, err
	}
	defer s.release()
	rr := s.rr
	snaps, err := rr.snapshots(ctx, tagBackup+"="+a.req.GetBackupId())
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	if len(snaps) == 0 {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "backup %s: no snapshots in the repository", a.req.GetBackupId())
	}
	res := &agentpb.VerifyResult{}
	problem := func(format string, args ...any) {
		if len(res.Problems) < maxProblems {
			res.Problems = append(res.Problems, rr.scrub(fmt.Sprintf(format, args...)))
		}
	}
	var unlocked bool
	if err := rr.withUnlockRetry(ctx, &unlocked, func() error {
		_, err := rr.run(ctx, nil, "check")
		return err
	}); err != nil {
		problem("repository check: %v", err)
	}
	if err := os.MkdirAll(a.m.dir(env), 0o700); err != nil {
		return nil, err
	}
	for _, sn := range snaps {
		a.verifySnapshot(ctx, env, rr, sn, res, problem)
	}
	res.Ok = len(res.Problems) == 0
	return res, nil
}

func (a *VerifyBackup) verifySnapshot(ctx context.Context, env *actions.Env, rr *resticRun, sn snapshot, res *agentpb.VerifyResult, problem func(string, ...any)) {
	scratch, err := os.MkdirTemp(a.m.dir(env), "verify-")
	if err != nil {
		problem("snapshot %s: scratch area: %v", sn.ShortID, err)
		return
	}
	defer os.RemoveAll(scratch)
	if _, err := rr.run(ctx, nil, "restore", "--no-lock", "--verify", sn.ID, "--target", scratch); err != nil {
		problem("snapshot %s: restore: %v", sn.ShortID, err)
		return
	}
	out, err := rr.run(ctx, nil, "ls", "--json", "--no-lock", sn.ID)
	if err != nil {
		problem("snapshot %s: list: %v", sn.ShortID, err)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var n lsNode
		if json.Unmarshal(sc.Bytes(), &n) != nil || n.StructType != "node" || n.Type != "file" {
			continue
		}
		p := filepath.Join(scratch, filepath.FromSlash(strings.TrimPrefix(n.Path, "/")))
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			problem("snapshot %s: %s: not restored", sn.ShortID, n.Path)
		case !fi.Mode().IsRegular() || uint64(fi.Size()) != n.Size:
			problem("snapshot %s: %s: restored %d bytes, snapshot records %d", sn.ShortID, n.Path, fi.Size(), n.Size)
		default:
			res.FilesChecked++
			res.BytesChecked += n.Size
		}
	}
}

// resticEntries are what restic init makes in a local repository.
var resticEntries = []string{"config", "data", "index", "keys", "locks", "snapshots"}

// Apply implements actions.Action.
func (a *ForgetBackup) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	s, err := a.m.open(ctx, env, a.req.GetRepository(), false)
	if err != nil {
		return nil, err
	}
	defer s.release()
	rr := s.rr
	res := &agentpb.ForgetResult{}
	repo := rr.repo
	if a.req.GetAll() && repo.localDir != "" {
		// LOCAL: the repository is a directory of the node's backup area.
		if _, err := os.Stat(filepath.Join(repo.localDir, "config")); err == nil {
			if snaps, err := rr.snapshots(ctx); err == nil {
				for _, sn := range snaps {
					res.RemovedSnapshotIds = append(res.RemovedSnapshotIds, sn.ID)
				}
			}
		}
		// Only restic's own entries: the directory is shared with the
		// dumps DropDatabase keeps (BackupDir/<owner>/db).
		for _, e := range resticEntries {
			if err := os.RemoveAll(filepath.Join(repo.localDir, e)); err != nil {
				return nil, err
			}
		}
		a.m.mu.Lock()
		delete(a.m.inited, repo.location)
		a.m.mu.Unlock()
		slices.Sort(res.RemovedSnapshotIds)
		return res, nil
	}
	// S3 and backup nodes: forget every snapshot (all) or the backup's,
	// then prune; the repository's keys and config stay (an empty
	// repository costs a few KB).
	var tags []string
	if !a.req.GetAll() {
		tags = []string{tagBackup + "=" + a.req.GetBackupId()}
	}
	snaps, err := rr.snapshots(ctx, tags...)
	if err != nil {
		if a.req.GetAll() {
			return res, nil // no repository: nothing to remove
		}
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	if len(snaps) == 0 {
		return res, nil // already forgotten: idempotent
	}
	var ids []string
	for _, sn := range snaps {
		ids = append(ids, sn.ID)
	}
	var unlocked bool
	if err := rr.forgetPrune(ctx, &unlocked, ids); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	slices.Sort(ids)
	res.RemovedSnapshotIds = ids
	return res, nil
}
