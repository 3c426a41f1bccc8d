package mail

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// maxSealed bounds a sealed password (a sealed box of at most a few
// hundred bytes of password).
const maxSealed = 4096

// userLine is one line of a domain's passwd-file:
// local:{BLF-CRYPT}hash:uid:gid:digest:home::extra fields (or
// {SHA512-CRYPT} and the like for a hash installed from elsewhere, which
// hash keeps with its prefix). The gecos field holds a digest of the
// sealed bytes the hash was made or unsealed from, so a repeated ensure
// with the same sealed bytes does not hash again.
type userLine struct {
	local, hash  string
	uid, gid     int
	digest, home string
	quotaMB      uint32
	nologin      string // reason, "" when logins are allowed
}

func (u userLine) String() string {
	extra := fmt.Sprintf("userdb_quota_rule=*:storage=%dM", u.quotaMB)
	if u.nologin != "" {
		extra += " nologin reason=" + u.nologin
	}
	pw := u.hash
	if !strings.HasPrefix(pw, "{") {
		pw = "{BLF-CRYPT}" + pw // the agent's own hashes; others carry their scheme
	}
	return fmt.Sprintf("%s:%s:%d:%d:%s:%s::%s", u.local, pw, u.uid, u.gid, u.digest, u.home, extra)
}

func parseUserLine(s string) (userLine, error) {
	f := strings.SplitN(s, ":", 8)
	if len(f) < 7 {
		return userLine{}, fmt.Errorf("passwd-file line with %d fields", len(f))
	}
	u := userLine{local: f[0], hash: strings.TrimPrefix(f[1], "{BLF-CRYPT}"), digest: f[4], home: f[5]}
	var err1, err2 error
	u.uid, err1 = strconv.Atoi(f[2])
	u.gid, err2 = strconv.Atoi(f[3])
	if err := errors.Join(err1, err2); err != nil {
		return userLine{}, err
	}
	if len(f) == 8 {
		for _, x := range strings.Fields(f[7]) {
			switch {
			case strings.HasPrefix(x, "userdb_quota_rule=*:storage="):
				n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(x, "userdb_quota_rule=*:storage="), "M"))
				u.quotaMB = uint32(n)
			case x == "nologin":
				if u.nologin == "" {
					u.nologin = "disabled"
				}
			case strings.HasPrefix(x, "reason="):
				u.nologin = strings.TrimPrefix(x, "reason=")
			}
		}
	}
	return u, nil
}

// readUser reads one mailbox's passwd-file (UsersDir/DOMAIN/LOCAL); ok is
// false when the mailbox has none.
//
// One file per mailbox, not per domain: Dovecot re-reads a passwd-file at
// most once a second, so a mailbox added to a shared file in the second of
// another's login would stay unknown for up to a second; a new file is read
// at its first login.
func readUser(usersDir, domain, local string) (u userLine, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(usersDir, domain, local))
	if errors.Is(err, fs.ErrNotExist) {
		return userLine{}, false, nil
	}
	if err != nil {
		return userLine{}, false, err
	}
	if u, err = parseUserLine(strings.TrimSuffix(string(b), "\n")); err != nil {
		return userLine{}, false, fmt.Errorf("%s/%s: %w", domain, local, err)
	}
	if u.local != local {
		return userLine{}, false, fmt.Errorf("%s/%s holds the line of %q", domain, local, u.local)
	}
	return u, true, nil
}

// countUsers counts a domain's mailboxes (its passwd-files).
func countUsers(usersDir, domain string) (int, error) {
	ents, err := os.ReadDir(filepath.Join(usersDir, domain))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return len(ents), err
}

// writeUser replaces (u set) or removes (u nil) one mailbox's passwd-file,
// then updates Exim's lists of the domain's mailboxes and of those whose
// logins are off. Callers hold the domain's lock.
func writeUser(env *actions.Env, domain, local string, u *userLine) error {
	mp := env.Profile.Mail()
	_, dgid, err := lookupIDs(mp.DovecotUser)
	if err != nil {
		return err
	}
	_, egid, err := lookupIDs(mp.EximGroup)
	if err != nil {
		return err
	}
	ur, err := os.OpenRoot(filepath.Join(mp.UsersDir, domain))
	if err != nil {
		return err
	}
	defer ur.Close()
	if u != nil {
		err = atomicfile.Write(ur, local, []byte(u.String()+"\n"), 0o640, &atomicfile.Owner{UID: 0, GID: dgid})
	} else if err = ur.Remove(local); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return err
	}
	dr, err := domainRoot(env, domain, false)
	if err != nil {
		return err
	}
	defer dr.Close()
	owner := &atomicfile.Owner{UID: 0, GID: egid}
	if err := setListed(dr, nologinFile, local, u != nil && u.nologin != "", owner); err != nil {
		return err
	}
	return setListed(dr, mailboxesFile, local, u != nil, owner)
}

// setListed adds local to or removes it from a sorted one-key-per-line
// lookup file, rewriting the file only when it changes.
func setListed(root *os.Root, name, local string, listed bool, owner *atomicfile.Owner) error {
	b, err := root.ReadFile(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	keys := strings.Fields(string(b))
	i, found := slices.BinarySearch(keys, local)
	switch {
	case listed && !found:
		keys = slices.Insert(keys, i, local)
	case !listed && found:
		keys = slices.Delete(keys, i, i+1)
	case err == nil:
		return nil
	}
	var out strings.Builder
	for _, k := range keys {
		out.WriteString(k + "\n")
	}
	return atomicfile.Write(root, name, []byte(out.String()), 0o640, owner)
}

// EnsureMailbox converges one mailbox.
type EnsureMailbox struct {
	m              *Module
	req            *agentpb.EnsureMailboxAction
	local, domain  string
	allowTestNames bool
}

// DeleteMailbox archives and removes one mailbox.
type DeleteMailbox struct {
	m              *Module
	req            *agentpb.DeleteMailboxAction
	local, domain  string
	allowTestNames bool
}

// MailUsage reads mailboxes' usage.
type MailUsage struct {
	m              *Module
	req            *agentpb.MailUsageAction
	allowTestNames bool
}

// NewEnsureMailbox builds the action from its wire form.
func (m *Module) NewEnsureMailbox(req *agentpb.EnsureMailboxAction) *EnsureMailbox {
	return &EnsureMailbox{m: m, req: req}
}

// NewDeleteMailbox builds the action from its wire form.
func (m *Module) NewDeleteMailbox(req *agentpb.DeleteMailboxAction) *DeleteMailbox {
	return &DeleteMailbox{m: m, req: req}
}

// NewMailUsage builds the action from its wire form.
func (m *Module) NewMailUsage(req *agentpb.MailUsageAction) *MailUsage {
	return &MailUsage{m: m, req: req}
}

func (a *EnsureMailbox) Name() string        { return EnsureMailboxName }
func (a *DeleteMailbox) Name() string        { return DeleteMailboxName }
func (a *MailUsage) Name() string            { return UsageName }
func (a *EnsureMailbox) AllowTestUsernames() { a.allowTestNames = true }
func (a *DeleteMailbox) AllowTestUsernames() { a.allowTestNames = true }
func (a *MailUsage) AllowTestUsernames()     { a.allowTestNames = true }

// canonAddress accepts a canonical mailbox address and returns its parts.
func canonAddress(s string) (local, domain string, err error) {
	c, local, domain, err := validate.MailAddress(s)
	if err != nil {
		return "", "", err
	}
	if c != s {
		return "", "", fmt.Errorf("address %q is not canonical (want %q)", s, c)
	}
	return local, domain, nil
}

// Validate implements actions.Action.
func (a *EnsureMailbox) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	var err error
	if a.local, a.domain, err = canonAddress(r.Address); err != nil {
		return err
	}
	if len(r.SealedPassword) > maxSealed {
		return fmt.Errorf("sealed password of %d bytes; at most %d", len(r.SealedPassword), maxSealed)
	}
	if len(r.SealedPasswordHash) > maxSealed {
		return fmt.Errorf("sealed password hash of %d bytes; at most %d", len(r.SealedPasswordHash), maxSealed)
	}
	if len(r.SealedPassword) > 0 && len(r.SealedPasswordHash) > 0 {
		return errors.New("give either sealed_password or sealed_password_hash, not both")
	}
	if err := validate.MailQuotaMB(int(r.QuotaMb)); err != nil {
		return err
	}
	if ar := r.Autoresponder; ar != nil {
		if err := validate.Autoresponder(ar.Subject, ar.Body); err != nil {
			return err
		}
		if ar.From != "" {
			if _, _, _, err := validate.MailAddress(ar.From); err != nil {
				return err
			}
		}
		if ar.UntilUnix < 0 {
			return errors.New("autoresponder until must not be negative")
		}
	}
	return nil
}

// Validate implements actions.Action.
func (a *DeleteMailbox) Validate() error {
	if a.req == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(a.req.Username, a.allowTestNames); err != nil {
		return err
	}
	var err error
	a.local, a.domain, err = canonAddress(a.req.Address)
	return err
}

// Validate implements actions.Action.
func (a *MailUsage) Validate() error {
	if a.req == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(a.req.Username, a.allowTestNames); err != nil {
		return err
	}
	if len(a.req.Addresses) > 1000 {
		return fmt.Errorf("%d addresses; at most 1000", len(a.req.Addresses))
	}
	for _, ad := range a.req.Addresses {
		if _, _, err := canonAddress(ad); err != nil {
			return err
		}
	}
	return nil
}

// account is the Unix user of an account.
type account struct {
	uid, gid int
	home     string
}

func lookupAccount(env *actions.Env, username string) (account, error) {
	u, err := user.Lookup(username)
	if err != nil {
		return account{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "account %s has no user on this node: %v", username, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid < int(env.Profile.MinUID) {
		return account{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %s is a system user", username)
	}
	home := filepath.Join(env.Profile.HomeBase, username)
	if filepath.Clean(u.HomeDir) != home {
		return account{}, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %s's home %s is not %s", username, u.HomeDir, home)
	}
	return account{uid: uid, gid: gid, home: home}, nil
}

// mailHomeRel is a mailbox's home relative to the account's home.
func mailHomeRel(domain, local string) string { return path.Join("mail", domain, local) }

// sealDigest is the gecos digest of sealed password bytes.
func sealDigest(sealed []byte) string {
	h := sha256.Sum256(sealed)
	return hex.EncodeToString(h[:16])
}

// Apply implements actions.Action.
func (a *EnsureMailbox) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	r := a.req
	unlock, err := a.m.locks.Lock(ctx, "domain:"+a.domain)
	if err != nil {
		return nil, err
	}
	defer unlock()
	served, err := checkOwner(env, a.domain, r.Username)
	if err != nil {
		return nil, err
	}
	if !served {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "mail domain %s is not served on this node", a.domain)
	}
	acct, err := lookupAccount(env, r.Username)
	if err != nil {
		return nil, err
	}
	mp := env.Profile.Mail()
	old, existed, err := readUser(mp.UsersDir, a.domain, a.local)
	if err != nil {
		return nil, err
	}
	u := old
	u.local, u.uid, u.gid, u.quotaMB = a.local, acct.uid, acct.gid, r.QuotaMb
	u.home = filepath.Join(acct.home, mailHomeRel(a.domain, a.local))
	u.nologin = ""
	if r.Suspended {
		u.nologin = "account-suspended"
	} else if r.Disabled {
		u.nologin = "mailbox-disabled"
	}
	res := &agentpb.MailboxResult{Address: r.Address, Existed: existed, Maildir: filepath.Join(u.home, "Maildir")}
	switch {
	case len(r.SealedPasswordHash) > 0:
		changed, err := a.installHash(env, &u, existed, old.digest)
		if err != nil {
			return nil, err
		}
		res.PasswordChanged = changed
	case len(r.SealedPassword) == 0 && !existed:
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mailbox %s does not exist yet: a password is required", r.Address)
	case len(r.SealedPassword) > 0 && (!existed || old.digest != sealDigest(r.SealedPassword)):
		if env.Unseal == nil {
			return nil, fmt.Errorf("mailbox %s: a sealed password needs the node's key, which this agent cannot use", r.Address)
		}
		pt, err := env.Unseal(r.SealedPassword, agentpb.MailPasswordSealContext(r.Address))
		if err != nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mailbox %s: sealed password: %v", r.Address, err)
		}
		if err := validate.MailPassword(string(pt), r.Address); err != nil {
			return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
		}
		h, err := bcrypt.GenerateFromPassword(pt, a.m.cost())
		clear(pt)
		if err != nil {
			return nil, err
		}
		u.hash, u.digest = string(h), sealDigest(r.SealedPassword)
		res.PasswordChanged = true
	}
	if err := ensureMailHome(acct, a.domain, a.local); err != nil {
		return nil, err
	}
	if err := writeSieve(acct, a.domain, a.local, r.Address, r.Autoresponder); err != nil {
		return nil, err
	}
	if !existed || u != old {
		if err := writeUser(env, a.domain, a.local, &u); err != nil {
			return nil, err
		}
	}
	if existed && (u.hash != old.hash || u.nologin != old.nologin) {
		if err := a.m.flushAuthCache(ctx, env); err != nil {
			return nil, err
		}
	}
	us := usageOf(acct.home, mailHomeRel(a.domain, a.local))
	res.UsedBytes, res.Messages = us.UsedBytes, us.Messages
	return res, nil
}

func (m *Module) cost() int {
	if m.BcryptCost < bcrypt.MinCost {
		return DefaultBcryptCost
	}
	return m.BcryptCost
}

// ensureMailHome creates mail/DOMAIN/LOCAL/Maildir/{cur,new,tmp} in the
// account's home, every level 0700 and owned by the account's user, through
// a root on the home (an account cannot redirect it with a symlink).
func ensureMailHome(acct account, domain, local string) error {
	root, err := os.OpenRoot(acct.home)
	if err != nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "account home: %v", err)
	}
	defer root.Close()
	dirs := []string{"mail", path.Join("mail", domain), mailHomeRel(domain, local)}
	md := path.Join(mailHomeRel(domain, local), "Maildir")
	dirs = append(dirs, md, path.Join(md, "cur"), path.Join(md, "new"), path.Join(md, "tmp"))
	for _, d := range dirs {
		if err := root.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := root.Lstat(d)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "%s in the account's home is not a directory", d)
		}
		if err := root.Chown(d, acct.uid, acct.gid); err != nil {
			return err
		}
		if err := root.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// sieveString quotes s as a Sieve string.
func sieveString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// renderVacation renders a mailbox's Sieve script: a vacation reply, at
// most one per sender per day. Subject and From are single lines (Validate
// refused CR and LF), so they cannot add headers to the reply.
func renderVacation(address string, ar *agentpb.MailAutoresponder) string {
	var b strings.Builder
	b.WriteString("require [\"vacation\", \"date\", \"relational\"];\n")
	cond := "true"
	if ar.UntilUnix > 0 {
		until := time.Unix(ar.UntilUnix, 0).UTC().Format("2006-01-02")
		cond = fmt.Sprintf(`currentdate :zone "+0000" :value "le" "date" %s`, sieveString(until))
	}
	from := address
	if ar.From != "" {
		from = ar.From
	}
	fmt.Fprintf(&b, "if %s {\n  vacation :days 1 :addresses [%s] :from %s :subject %s %s;\n}\n",
		cond, sieveString(address), sieveString(from), sieveString(ar.Subject), sieveString(ar.Body))
	return b.String()
}

// writeSieve writes (or removes) the mailbox's active Sieve script.
func writeSieve(acct account, domain, local, address string, ar *agentpb.MailAutoresponder) error {
	root, err := os.OpenRoot(acct.home)
	if err != nil {
		return err
	}
	defer root.Close()
	root, err = root.OpenRoot(mailHomeRel(domain, local))
	if err != nil {
		return err
	}
	defer root.Close()
	const name = ".dovecot.sieve"
	if ar == nil {
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	data := []byte(renderVacation(address, ar))
	if old, err := root.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return atomicfile.Write(root, name, data, 0o600, &atomicfile.Owner{UID: acct.uid, GID: acct.gid})
}

// Bounds on what the agent reads from files an account controls.
const (
	// maxMaildirsize: Dovecot recalculates maildirsize once it grows past
	// 5120 bytes.
	maxMaildirsize = 64 << 10
	// maxUIDList bounds dovecot-uidlist.
	maxUIDList = 64 << 20
	// maxMessage is Exim's message_size_limit.
	maxMessage = 50 << 20
)

// openMaildir opens, as a root, the Maildir of a mailbox (rel is its home
// relative to the account's home) through a root on the account's home:
// every level must be a real directory, not a symlink, so an account can
// point the agent neither outside its home nor at another of its
// mailboxes.
func openMaildir(home, rel string) (*os.Root, error) {
	r, err := os.OpenRoot(home)
	if err != nil {
		return nil, err
	}
	for _, name := range append(strings.Split(rel, "/"), "Maildir") {
		next, err := openSubdir(r, name)
		r.Close()
		if err != nil {
			return nil, err
		}
		r = next
	}
	return r, nil
}

// openSubdir opens the directory name (one path element) of r as a root,
// refusing a symlink or anything but a directory. The directory opened
// must be the one Lstat saw, so swapping in a symlink meanwhile fails.
func openSubdir(r *os.Root, name string) (*os.Root, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("invalid path element %q", name)
	}
	before, err := r.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !before.IsDir() {
		return nil, fmt.Errorf("%s: %w", name, errNotDir)
	}
	sub, err := r.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	after, err := sub.Stat(".")
	if err != nil || !os.SameFile(before, after) {
		sub.Close()
		return nil, fmt.Errorf("%s: %w", name, errNotDir)
	}
	return sub, nil
}

var errNotDir = errors.New("not a directory (or a symlink) in the account's home")

// openRegular opens name in r for reading without following a symlink or
// blocking on a FIFO, and refuses anything but a regular file.
func openRegular(r *os.Root, name string) (*os.File, fs.FileInfo, error) {
	f, err := r.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file", name)
	}
	return f, fi, nil
}

// readBounded reads the regular file name in r, failing when it holds
// more than limit bytes.
func readBounded(r *os.Root, name string, limit int64) ([]byte, error) {
	f, _, err := openRegular(r, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// usageOf reads the usage of the mailbox whose home is rel in the
// account's home from its maildirsize file (Maildir++ quota: a header
// line, then "bytes count" lines to add up), with no exec. Everything is
// read through a root on the home: a symlink, FIFO, device or oversized
// file reads as no usage known (zero).
func usageOf(home, rel string) *agentpb.MailboxUsage {
	u := &agentpb.MailboxUsage{}
	md, err := openMaildir(home, rel)
	if err != nil {
		return u
	}
	defer md.Close()
	u.Exists = true
	b, err := readBounded(md, "maildirsize", maxMaildirsize)
	if err != nil {
		return u
	}
	lines := strings.Split(string(b), "\n")
	var size, count int64
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		s, err1 := strconv.ParseInt(f[0], 10, 64)
		c, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			size += s
			count += c
		}
	}
	u.UsedBytes, u.Messages = uint64(max(size, 0)), uint64(max(count, 0))
	return u
}

// Apply implements actions.Action.
func (a *MailUsage) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	acct, err := lookupAccount(env, a.req.Username)
	if err != nil {
		return nil, err
	}
	res := &agentpb.MailUsageResult{}
	for _, ad := range a.req.Addresses {
		local, domain, _ := canonAddress(ad)
		u := &agentpb.MailboxUsage{}
		if owned, err := checkOwner(env, domain, a.req.Username); err == nil && owned {
			u = usageOf(acct.home, mailHomeRel(domain, local))
		}
		u.Address = ad
		res.Mailboxes = append(res.Mailboxes, u)
	}
	return res, nil
}

// Apply implements actions.Action.
func (a *DeleteMailbox) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	r := a.req
	unlock, err := a.m.locks.Lock(ctx, "domain:"+a.domain)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &agentpb.MailboxResult{Address: r.Address}
	served, err := checkOwner(env, a.domain, r.Username)
	if err != nil || !served {
		return res, err
	}
	mp := env.Profile.Mail()
	if _, res.Existed, err = readUser(mp.UsersDir, a.domain, a.local); err != nil {
		return nil, err
	}
	// Stop accepting mail for it and logins first, then archive.
	if res.Existed {
		if err := writeUser(env, a.domain, a.local, nil); err != nil {
			return nil, err
		}
		if err := a.m.flushAuthCache(ctx, env); err != nil {
			return nil, err
		}
	}
	acct, err := lookupAccount(env, r.Username)
	if err != nil {
		return res, nil // no user, no home: nothing left to archive
	}
	root, err := os.OpenRoot(acct.home)
	if err != nil {
		return res, nil
	}
	defer root.Close()
	rel := mailHomeRel(a.domain, a.local)
	if _, err := root.Lstat(rel); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	us := usageOf(acct.home, rel)
	res.UsedBytes = us.UsedBytes
	name, n, err := archiveMailbox(root, rel, env.Profile.BackupDir, r.Username, r.Address, time.Now())
	if err != nil {
		return nil, fmt.Errorf("archive mailbox %s: %w", r.Address, err)
	}
	res.Messages, res.Archive = uint64(n), name
	if err := root.RemoveAll(rel); err != nil {
		return nil, err
	}
	return res, nil
}

// isMessage reports whether rel (slash-separated, in a maildir tree) is a
// message file: a regular file directly in a cur or new directory.
func isMessage(rel string, fi fs.FileInfo) bool {
	d := path.Base(path.Dir(rel))
	return fi.Mode().IsRegular() && (d == "cur" || d == "new")
}

// archiveMailbox writes the mailbox's home (rel in root) as a tar.gz into
// backupDir, counting messages on the way, then reads the archive back and
// fails unless it holds as many messages. It returns the archive's path
// and the number of messages.
func archiveMailbox(root *os.Root, rel, backupDir, username, address string, now time.Time) (string, int, error) {
	if err := os.MkdirAll(backupDir, 0o700); err != nil {
		return "", 0, err
	}
	bk, err := os.OpenRoot(backupDir)
	if err != nil {
		return "", 0, err
	}
	defer bk.Close()
	name := fmt.Sprintf("mail-%s-%s-%s.tar.gz", username, address, now.UTC().Format("20060102T150405.000000000Z"))
	var count int
	err = atomicfile.WriteFunc(bk, name, 0o600, nil, func(w io.Writer) error {
		gz := gzip.NewWriter(w)
		tw := tar.NewWriter(gz)
		err := fs.WalkDir(root.FS(), rel, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if !fi.IsDir() && !fi.Mode().IsRegular() {
				return nil // no symlinks or devices from an account's tree
			}
			h, err := tar.FileInfoHeader(fi, "")
			if err != nil {
				return err
			}
			h.Name = strings.TrimPrefix(p, path.Dir(rel)+"/")
			if fi.IsDir() {
				h.Name += "/"
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if fi.IsDir() {
				return nil
			}
			f, err := root.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, io.LimitReader(f, fi.Size())); err != nil {
				return err
			}
			if isMessage(p, fi) {
				count++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return gz.Close()
	})
	if err != nil {
		return "", 0, err
	}
	// Read it back: as many messages as were written.
	f, err := bk.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return "", 0, err
	}
	tr := tar.NewReader(gz)
	got := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("verify %s: %w", name, err)
		}
		if isMessage(h.Name, h.FileInfo()) {
			got++
		}
	}
	if got != count {
		return "", 0, fmt.Errorf("verify %s: %d messages in the archive, %d in the maildir", name, got, count)
	}
	return filepath.Join(backupDir, name), count, nil
}
