package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// repository is where one account's repository is and how to open it,
// derived by the agent from the task's BackupRepository: no path comes
// from the control plane.
type repository struct {
	kind     agentpb.BackupTargetKind
	location string   // restic's --repo
	options  []string // restic's -o options
	env      []string // S3 credentials: in the short-lived restic's env only
	password []byte
	// localDir is the LOCAL repository's directory.
	localDir string
	// cleanup removes what opening it made (the SFTP known_hosts file).
	cleanup func()
}

// staleLockAge is how long a lock may go without a refresh (restic
// refreshes its locks every 5 minutes) before it is stale anywhere.
const staleLockAge = 30 * time.Minute

// openRepository derives and unseals r's repository. node is this node's
// name (a NODE target keeps each source node's repositories apart).
func (m *Module) openRepository(env *actions.Env, r *agentpb.BackupRepository) (*repository, error) {
	if env.Unseal == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent cannot unseal secrets")
	}
	pw, err := env.Unseal(r.GetSealedPassword(), agentpb.BackupPasswordSealContext(r.GetUsername()))
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "repository password: cannot unseal (sealed to another node or account?)")
	}
	if len(pw) == 0 || strings.ContainsAny(string(pw), "\n\x00") {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "repository password: empty or contains a newline")
	}
	repo := &repository{kind: r.GetKind(), password: pw, cleanup: func() {}}
	switch r.GetKind() {
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL:
		repo.localDir = filepath.Join(env.Profile.BackupDir, r.GetUsername())
		repo.location = repo.localDir
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3:
		secret, err := env.Unseal(r.GetSealedS3SecretKey(), agentpb.BackupS3SecretSealContext(r.GetTarget()))
		if err != nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "s3 secret key: cannot unseal")
		}
		repo.location, repo.options = s3Location(r)
		repo.env = []string{"AWS_ACCESS_KEY_ID=" + r.GetS3AccessKeyId(), "AWS_SECRET_ACCESS_KEY=" + string(secret)}
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE:
		key, err := m.sshKeyPath(env)
		if err != nil {
			return nil, err
		}
		kh, err := os.CreateTemp(m.dir(env), "known_hosts-*")
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		repo.cleanup = func() { os.Remove(kh.Name()) }
		host, port, _ := net.SplitHostPort(r.GetSftpAddress())
		_, werr := fmt.Fprintf(kh, "[%s]:%s %s\n", host, port, r.GetSftpHostKey())
		if err := errors.Join(werr, kh.Close()); err != nil {
			repo.cleanup()
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		repo.location, repo.options = sftpLocation(r, env.Node, key, kh.Name())
	default:
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "repository kind %v", r.GetKind())
	}
	return repo, nil
}

// s3Location is s3:<endpoint>/<bucket>/<prefix>/<username>.
func s3Location(r *agentpb.BackupRepository) (string, []string) {
	parts := []string{strings.TrimSuffix(r.GetS3Endpoint(), "/"), r.GetS3Bucket()}
	if p := r.GetS3Prefix(); p != "" {
		parts = append(parts, p)
	}
	parts = append(parts, r.GetUsername())
	var opts []string
	if reg := r.GetS3Region(); reg != "" {
		opts = append(opts, "-o", "s3.region="+reg)
	}
	// Path-style addressing works with every S3 server; virtual-host style
	// needs DNS for each bucket.
	opts = append(opts, "-o", "s3.bucket-lookup=path")
	return "s3:" + strings.Join(parts, "/"), opts
}

// sftpLocation is sftp:<user>@<host>:/<node>/<username>, with ssh run
// from a fixed path with the node's key, the pinned host key and no
// prompts. restic splits sftp.command on spaces (no shell is involved),
// so none of its words may contain one: every word is validated or made
// by the agent.
func sftpLocation(r *agentpb.BackupRepository, node, keyFile, knownHosts string) (string, []string) {
	host, port, _ := net.SplitHostPort(r.GetSftpAddress())
	target := r.GetSftpUser() + "@" + host
	cmd := strings.Join([]string{"/usr/bin/ssh", "-i", keyFile, "-p", port,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, target, "-s", "sftp"}, " ")
	h := host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return "sftp:" + r.GetSftpUser() + "@" + h + ":/" + node + "/" + r.GetUsername(), []string{"-o", "sftp.command=" + cmd}
}

// ensureInit runs restic init once per repository (idempotent: an
// existing repository is fine).
func (m *Module) ensureInit(ctx context.Context, rr *resticRun) error {
	key := rr.repo.location
	m.mu.Lock()
	done := m.inited[key]
	m.mu.Unlock()
	if done {
		return nil
	}
	if rr.repo.localDir != "" {
		if _, err := os.Stat(filepath.Join(rr.repo.localDir, "config")); err == nil {
			m.markInit(key)
			return nil
		}
		// The backup area and the repository are root's alone.
		if err := os.MkdirAll(filepath.Dir(rr.repo.localDir), 0o700); err != nil {
			return err
		}
	}
	_, err := rr.run(ctx, nil, "init")
	var re *resticError
	if err != nil && errors.As(err, &re) && (strings.Contains(re.Stderr, "already exists") || strings.Contains(re.Stderr, "already initialized")) {
		err = nil
	}
	if err != nil {
		return err
	}
	if rr.repo.localDir != "" {
		_ = os.Chmod(rr.repo.localDir, 0o700)
	}
	m.markInit(key)
	return nil
}

func (m *Module) markInit(key string) {
	m.mu.Lock()
	m.inited[key] = true
	m.mu.Unlock()
}

// lockInfo is restic cat lock's JSON.
type lockInfo struct {
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
}

// stale says whether a lock's holder is gone: a process of this host that
// no longer exists, or no refresh for staleLockAge.
func (l lockInfo) stale(host string, now time.Time) bool {
	if now.Sub(l.Time) > staleLockAge {
		return true
	}
	if l.Hostname != host || l.PID <= 0 {
		return false
	}
	_, err := os.Stat("/proc/" + strconv.Itoa(l.PID))
	return errors.Is(err, fs.ErrNotExist)
}

// unlockStale removes stale locks (restic#1450: a killed run leaves its
// lock, and an exclusive operation then refuses the repository). It
// reports whether it found and removed any. Live locks are left: restic
// unlock itself removes only stale ones, by the same rule.
func (rr *resticRun) unlockStale(ctx context.Context) (bool, error) {
	if rr.repo.localDir != "" {
		// Each restic run costs its key derivation (~0.5 s): a local
		// repository's locks are looked at directly first.
		ents, err := os.ReadDir(filepath.Join(rr.repo.localDir, "locks"))
		if err == nil && len(ents) == 0 {
			return false, nil
		}
	}
	out, err := rr.run(ctx, nil, "list", "locks", "--no-lock")
	if err != nil {
		return false, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	found := false
	for _, id := range strings.Fields(string(out)) {
		b, err := rr.run(ctx, nil, "cat", "lock", id, "--no-lock")
		if err != nil {
			continue // removed meanwhile
		}
		var l lockInfo
		if json.Unmarshal(b, &l) != nil {
			continue
		}
		if l.stale(host, now) {
			found = true
		}
	}
	if !found {
		return false, nil
	}
	if _, err := rr.run(ctx, nil, "unlock"); err != nil {
		return false, err
	}
	return true, nil
}

// withUnlockRetry runs op; when restic refuses a locked repository it
// removes stale locks and retries once.
func (rr *resticRun) withUnlockRetry(ctx context.Context, unlocked *bool, op func() error) error {
	err := op()
	if err == nil || !locked(err) {
		return err
	}
	ok, uerr := rr.unlockStale(ctx)
	if uerr != nil || !ok {
		return err
	}
	*unlocked = true
	return op()
}
