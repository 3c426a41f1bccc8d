package mail

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/validate"
)

// This file is the mail module's surface for the backup module: the
// password hashes of an account's mailboxes go into a backup's state and
// come back with a restore, so that mail logins survive without the
// control plane knowing any password.

// MailboxHashes returns the password hashes of the mailboxes whose home
// is inside home (the account's), by address: bcrypt bare, as the agent
// makes them, other schemes (installed from elsewhere) with their
// "{SCHEME}" prefix. A node without mail
// has none.
func (m *Module) MailboxHashes(env *actions.Env, home string) (map[string]string, error) {
	usersDir := env.Profile.Mail().UsersDir
	domains, err := os.ReadDir(usersDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	prefix := filepath.Clean(home) + "/"
	out := map[string]string{}
	for _, d := range domains {
		if !d.IsDir() || validate.CanonicalDomain(d.Name()) != nil {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(usersDir, d.Name()))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			u, ok, err := readUser(usersDir, d.Name(), e.Name())
			if err != nil || !ok {
				continue // not a mailbox's file (a temporary file, say)
			}
			if strings.HasPrefix(u.home, prefix) {
				out[u.local+"@"+d.Name()] = u.hash
			}
		}
	}
	return out, nil
}

// RestoreMailboxHash sets an existing mailbox's password hash (from a
// backup) and reports whether the mailbox exists on this node. A mailbox
// whose home is not inside home is not touched.
func (m *Module) RestoreMailboxHash(ctx context.Context, env *actions.Env, home, address, hash string) (bool, error) {
	_, local, domain, err := validate.MailAddress(address)
	if err != nil {
		return false, err
	}
	if hash == "" || strings.ContainsAny(hash, ":\n") {
		return false, errors.New("not a password hash")
	}
	if strings.HasPrefix(hash, "{") {
		n, err := NormalizePasswordHash(hash)
		if err != nil {
			return false, err
		}
		hash = storedHash(n)
	}
	unlock, err := m.locks.Lock(ctx, "domain:"+domain)
	if err != nil {
		return false, err
	}
	defer unlock()
	usersDir := env.Profile.Mail().UsersDir
	u, ok, err := readUser(usersDir, domain, local)
	if err != nil || !ok {
		return false, err
	}
	if !strings.HasPrefix(u.home, filepath.Clean(home)+"/") {
		return false, nil
	}
	if u.hash == hash {
		return true, nil
	}
	u.hash = hash
	if err := writeUser(env, domain, local, &u); err != nil {
		return true, err
	}
	return true, m.flushAuthCache(ctx, env)
}
