package backupnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// EnsureAccessName is the action's name in metrics and logs.
const EnsureAccessName = "ensure_backup_access"

// EnsureAccess sets the source nodes' keys: the list is the whole desired
// set, so a node not listed can no longer log in. Its directory, with its
// repositories, is kept: removing a key must not delete backups.
type EnsureAccess struct {
	m   *Module
	req *agentpb.EnsureBackupAccessAction
}

// NewEnsureAccess builds the action of one task.
func (m *Module) NewEnsureAccess(req *agentpb.EnsureBackupAccessAction) *EnsureAccess {
	return &EnsureAccess{m: m, req: req}
}

// Name implements actions.Action.
func (*EnsureAccess) Name() string { return EnsureAccessName }

// Validate implements actions.Action.
func (a *EnsureAccess) Validate() error { return validateAccess(a.req) }

// Apply implements actions.Action. sshd reads authorized_keys at every
// login, so the new set holds from the next login on without a reload.
func (a *EnsureAccess) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	p := env.Profile.BackupNode()
	if _, err := os.Stat(p.Sshd); err != nil {
		return nil, unavailable("backup access: sshd is not installed on this node (%s)", p.Sshd)
	}
	if !slices.Contains(env.Modules, a.m.Name()) {
		return nil, unavailable("backup access: the backup module does not run on this node (--modules backup)")
	}
	host, err := readHostKey(env.DataDir, p.HostKeyFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, unavailable("backup access: no host key: the backup module is not set up on this node")
		}
		return nil, fmt.Errorf("backup access: %w", err)
	}
	uid, gid, err := lookupIDs(p.User)
	if err != nil {
		return nil, unavailable("backup access: backup user: %v", err)
	}
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	keys := slices.Clone(a.req.GetKeys())
	slices.SortFunc(keys, func(x, y *agentpb.BackupAccessKey) int { return strings.Compare(x.GetNode(), y.GetNode()) })
	area, err := os.OpenRoot(p.Area)
	if err != nil {
		return nil, unavailable("backup access: backup area: %v", err)
	}
	defer area.Close()
	var buf bytes.Buffer
	buf.WriteString("# Written by the npanel agent; changes are overwritten.\n")
	for _, k := range keys {
		// Validate parsed every key already.
		pub, _ := ValidateKey(k.GetPublicKey())
		// The directory first: a key must not work before its node has
		// somewhere to write.
		if err := nodeDir(area, k.GetNode(), uid, gid); err != nil {
			return nil, fmt.Errorf("backup access: %w", err)
		}
		buf.WriteString(KeyLine(k.GetNode(), pub) + "\n")
	}
	if err := writeAuthorizedKeys(p.ConfigDir, filepath.Base(p.AuthorizedKeys), buf.Bytes()); err != nil {
		return nil, fmt.Errorf("backup access: %w", err)
	}
	return &agentpb.BackupAccessResult{
		HostKey:     strings.TrimSpace(string(marshalKey(host))),
		SftpAddress: reachable(env.Profile.SFTPListen),
		SftpUser:    p.User,
	}, nil
}

// nodeDir makes <area>/<node> the backup user's, 0700. A directory that
// exists is repaired; anything else under that name is refused.
func nodeDir(area *os.Root, node string, uid, gid int) error {
	err := area.Mkdir(node, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := area.Lstat(node)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s in the backup area is not a directory", node)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid || int(st.Gid) != gid {
		if err := area.Lchown(node, uid, gid); err != nil {
			return err
		}
	}
	if fi.Mode().Perm() != 0o700 {
		return area.Chmod(node, 0o700)
	}
	return nil
}

// writeAuthorizedKeys replaces the file when its content differs, root's
// and 0644 as StrictModes wants; the same set leaves it untouched.
func writeAuthorizedKeys(dir, name string, data []byte) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if old, err := root.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return atomicfile.Write(root, name, data, 0o644, &atomicfile.Owner{UID: 0, GID: 0})
}

// reachable is the SFTP address as the result reports it. For a wildcard
// listener the agent does not know which of the node's addresses other
// nodes reach: the host is left empty (":2222") and the control plane
// puts the node's address in.
func reachable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = ""
	}
	return net.JoinHostPort(host, port)
}
