package backup

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

const maxProblems = 50

// verifyMargin is free space verify leaves on the homes' filesystem
// beyond the snapshot's size, so that a verify does not fill it for the
// sites (a variable for tests).
var verifyMargin uint64 = 1 << 30

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
	scratchBase := filepath.Join(env.Profile.HomeBase, scratchDir)
	if err := os.MkdirAll(scratchBase, 0o700); err != nil {
		return nil, err
	}
	for _, sn := range snaps {
		if err := a.verifySnapshot(ctx, rr, scratchBase, sn, res, problem); err != nil {
			return nil, err
		}
	}
	res.Ok = len(res.Problems) == 0
	return res, nil
}

// verifySnapshot restores sn into a scratch directory under scratchBase
// (the homes' filesystem, root's, as restores use) and checks it. Not
// enough free space there is an error, not a problem of the backup.
func (a *VerifyBackup) verifySnapshot(ctx context.Context, rr *resticRun, scratchBase string, sn snapshot, res *agentpb.VerifyResult, problem func(string, ...any)) error {
	size, err := restoreSize(ctx, rr, sn.ID)
	if err != nil {
		problem("snapshot %s: size: %v", sn.ShortID, err)
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(scratchBase, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", scratchBase, err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < size+verifyMargin {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "not enough space to verify snapshot %s: it needs %d bytes plus %d spare in %s, %d are free", sn.ShortID, size, verifyMargin, scratchBase, free)
	}
	scratch, err := os.MkdirTemp(scratchBase, "verify-"+a.req.GetBackupId()+"-")
	if err != nil {
		return fmt.Errorf("scratch area: %w", err)
	}
	defer os.RemoveAll(scratch)
	if _, err := rr.run(ctx, nil, "restore", "--no-lock", "--verify", sn.ID, "--target", scratch); err != nil {
		problem("snapshot %s: restore: %v", sn.ShortID, err)
		return nil
	}
	if err := checkListing(ctx, rr, sn, scratch, res, problem); err != nil {
		problem("snapshot %s: list: %v", sn.ShortID, err)
	}
	return nil
}

// restoreSize is the bytes restoring snapshot id writes.
func restoreSize(ctx context.Context, rr *resticRun, id string) (uint64, error) {
	out, err := rr.run(ctx, nil, "stats", "--no-lock", "--json", "--mode", "restore-size", id)
	if err != nil {
		return 0, err
	}
	var st struct {
		TotalSize uint64 `json:"total_size"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, fmt.Errorf("restic stats: %w", err)
	}
	return st.TotalSize, nil
}

// checkListing streams restic ls --json (one line per node: a snapshot
// of millions of files is never held in memory) and checks each file's
// restored size under scratch.
func checkListing(ctx context.Context, rr *resticRun, sn snapshot, scratch string, res *agentpb.VerifyResult, problem func(string, ...any)) error {
	args := []string{"ls", "--json", "--no-lock", sn.ID}
	c, done, err := rr.cmd(ctx, args...)
	if err != nil {
		return err
	}
	defer done()
	var stderr limitedBuf
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return rr.fail(args, err, nil)
	}
	sc := bufio.NewScanner(out)
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
	serr := sc.Err()
	// Drained so that restic is not blocked writing when a line was too long.
	_, _ = io.Copy(io.Discard, out)
	if err := c.Wait(); err != nil {
		return rr.fail(args, err, stderr.b)
	}
	return serr
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
