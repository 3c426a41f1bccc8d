// Package migrate is both ends of a live migration between two nodes.
//
// The target runs the migration endpoint: an SSH server inside the agent
// (golang.org/x/crypto/ssh) on --migration-listen. It lets in only keys
// that AuthorizeMigration stored, only from the source's addresses, only
// until they expire, and runs only two commands for them (command.go):
// rsync's receiving server into the account's home on this node, running
// as the account, and a database client reading a dump into one of the
// migration's databases as a throw-away user of that database only. No shell, no pty, no
// forwarding, no subsystem.
//
// The source makes a key pair per migration (MigrationKey) and pushes
// with SyncMigration: rsync -aHAX --no-D --numeric-ids over OpenSSH's client
// (host key pinned, the key given by file), and each database as a dump
// streamed through a session of a Go SSH client into restore-database.
//
// Trust. Nothing a source sends is trusted beyond the account: a
// malicious source node or a stolen migration key gets the account's own
// rights on this node and no more. The target's rsync receiver runs as
// the account's uid and gid (no supplementary groups): it cannot chown,
// make device nodes (D is refused), set other groups, security xattrs or
// setuid-root files, nor write outside the home through a symlink it was
// sent earlier. Every file it writes is the account's; the web module
// re-applies a docroot's web group when it ensures the site. A dump is
// loaded by a throw-away database user limited to its database (MariaDB
// in sandbox mode, PostgreSQL by a non-superuser role with psql refusing
// every meta-command). On the source, rsync and its ssh run as the
// account too, over a home the tenant controls while the site is live,
// with a per-run 0400 copy of the migration key in a 0700 directory of
// the account's; what the account cannot read fails the files item.
// The target's copy of the account is suspended until the cutover. A
// source node is trusted with this home and these databases only, and
// only until the authorization is revoked.
//
// State lives in the agent's data dir, under migrate/ (0700): the
// endpoint's host key, one private key per migration the node is the
// source of, one authorization per migration it is the target of. All
// files are 0600, written atomically, and survive a restart of the agent.
package migrate

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/services"
)

// ServiceName is the endpoint's name in the node's service report.
const ServiceName = "migration-sshd"

// Files and directories under the data dir.
const (
	stateDir    = "migrate"
	hostKeyFile = "host-ed25519-key"
	keysDir     = "keys"           // source: <id> private key (PEM)
	authDir     = "authorizations" // target: <id>.json
)

// Module is the migration service area of one agent: the endpoint and
// the state both sides keep.
type Module struct {
	db *db.Module

	mu sync.Mutex // serialises writers of the state files

	// Set by Serve.
	smu     sync.Mutex
	listen  string // as configured (reported to the control plane)
	addr    string // as bound
	env     *actions.Env
	hostKey ssh.Signer
	conns   map[string]map[*ssh.ServerConn]bool // migration id -> open connections
	status  services.Status
	stopped chan struct{} // closed once the endpoint stopped serving
}

var _ actions.Module = (*Module)(nil)

// NewModule returns the migration module of one agent; dbm restores the
// databases that arrive (nil: none can).
func NewModule(dbm *db.Module) *Module {
	return &Module{db: dbm, conns: map[string]map[*ssh.ServerConn]bool{}, stopped: make(chan struct{})}
}

// Name implements actions.Module.
func (*Module) Name() string { return "migrate" }

// Setup implements actions.Module. The endpoint is not a daemon of the
// service manager: the agent starts it with Serve.
func (*Module) Setup(context.Context, *actions.Env) ([]services.Spec, error) { return nil, nil }

// openState opens (creating) dataDir/migrate/sub as an os.Root.
func openState(dataDir, sub string) (*os.Root, error) {
	dir := filepath.Join(dataDir, stateDir, sub)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenRoot(dir)
}

// ensureHostKey returns the endpoint's host key, generated on first use.
// It outlives agent restarts: the sources pin it.
func ensureHostKey(dataDir string) (ssh.Signer, error) {
	root, err := openState(dataDir, "")
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return ensureKey(root, hostKeyFile, "npanel migration endpoint")
}

// ensureKey reads the ed25519 private key in root/name, generating it
// (0600) when missing.
func ensureKey(root *os.Root, name, comment string) (ssh.Signer, error) {
	b, err := root.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, fmt.Errorf("generate key: %w", gerr)
		}
		blk, merr := ssh.MarshalPrivateKey(priv, comment)
		if merr != nil {
			return nil, fmt.Errorf("encode key: %w", merr)
		}
		b = pem.EncodeToMemory(blk)
		if err := atomicfile.Write(root, name, b, 0o600, nil); err != nil {
			return nil, fmt.Errorf("write key: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		// Never the key's bytes: only where it is.
		return nil, fmt.Errorf("key %s: unreadable", name)
	}
	return s, nil
}

// authorization is what AuthorizeMigration stores on the target.
type authorization struct {
	MigrationID string      `json:"migration_id"`
	Username    string      `json:"username"`
	PublicKey   string      `json:"public_key"` // authorized_keys form
	From        []string    `json:"from"`       // IPs and CIDRs
	ExpiresUnix int64       `json:"expires_unix"`
	Databases   []authzedDB `json:"databases"`
	// SourceUID and SourceGID are the account's ids on the source, kept
	// for the record: the receiver runs as the account here, whatever
	// owners the source sends.
	SourceUID uint32 `json:"source_uid"`
	SourceGID uint32 `json:"source_gid"`
}

type authzedDB struct {
	Engine string `json:"engine"`
	Name   string `json:"name"`
}

// allows says whether remote may connect under a.
func (a *authorization) allows(remote netip.Addr) bool {
	remote = remote.Unmap()
	for _, f := range a.From {
		if p, err := netip.ParsePrefix(f); err == nil {
			if p.Contains(remote) {
				return true
			}
			continue
		}
		if ip, err := netip.ParseAddr(f); err == nil && ip.Unmap() == remote {
			return true
		}
	}
	return false
}

func (a *authorization) expired(now time.Time) bool { return now.Unix() >= a.ExpiresUnix }

func (a *authorization) database(engine, name string) bool {
	for _, d := range a.Databases {
		if d.Engine == engine && d.Name == name {
			return true
		}
	}
	return false
}

func (m *Module) saveAuthorization(dataDir string, a *authorization) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	root, err := openState(dataDir, authDir)
	if err != nil {
		return err
	}
	defer root.Close()
	return atomicfile.Write(root, a.MigrationID+".json", b, 0o600, nil)
}

// authorizations reads every stored authorization. A file that does not
// parse is skipped (and so lets nobody in).
func authorizations(dataDir string) ([]*authorization, error) {
	root, err := openState(dataDir, authDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	ents, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return nil, err
	}
	var out []*authorization
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := root.ReadFile(name)
		if err != nil {
			continue
		}
		var a authorization
		if json.Unmarshal(b, &a) != nil || a.MigrationID+".json" != name {
			continue
		}
		out = append(out, &a)
	}
	return out, nil
}

// pruneExpired removes the authorizations that have expired: they let
// nobody in, and a migration that was never revoked (the control plane
// gave up on it) would otherwise leave them for good.
func (m *Module) pruneExpired(dataDir string, now time.Time) error {
	auths, err := authorizations(dataDir)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	root, err := openState(dataDir, authDir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, a := range auths {
		if a.expired(now) {
			if err := root.Remove(a.MigrationID + ".json"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// removeState removes what migration id left here: its key pair (source)
// and its authorization (target). Missing is success.
func (m *Module) removeState(dataDir, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The known_hosts of a sync that crashed goes too.
	for _, f := range []struct{ dir, name string }{{keysDir, id}, {keysDir, id + ".known_hosts"}, {authDir, id + ".json"}} {
		root, err := openState(dataDir, f.dir)
		if err != nil {
			return err
		}
		err = root.Remove(f.name)
		root.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// migrationKey returns migration id's key pair, making it on first use.
func (m *Module) migrationKey(dataDir, id string, create bool) (ssh.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	root, err := openState(dataDir, keysDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if !create {
		if _, err := root.Lstat(id); err != nil {
			return nil, err
		}
	}
	return ensureKey(root, id, "npanel migration "+id)
}

// keyPath is where migration id's private key is, for ssh -i.
func keyPath(dataDir, id string) string {
	return filepath.Join(dataDir, stateDir, keysDir, id)
}
