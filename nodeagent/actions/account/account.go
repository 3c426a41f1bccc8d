// Package account implements the hosting-account actions: ensure_account
// creates and converges an account's Unix user (home, skeleton, disk quota,
// suspension) and delete_account archives its home and removes it.
//
// Only users nPanel created are ever changed: they carry GECOSMarker, a UID
// of at least the profile's MinUID and the home HomeBase/<username>. Any other
// user of the same name is refused with ErrNotManaged, so an account name that
// collides with a system or hand-made user cannot take it over.
//
// The user database is read by parsing /etc/passwd and /etc/shadow directly
// and changed only by useradd, usermod and userdel, run as argument vectors
// of the profile's fixed binaries. An unchanged ensure runs no command at all.
package account

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Action names, as in metrics and logs.
const (
	EnsureName = "ensure_account"
	DeleteName = "delete_account"
)

const (
	// GECOSMarker is the GECOS field of every user nPanel creates, the mark
	// by which it recognises the users it may change.
	GECOSMarker = "npanel account"
	// MaxDiskQuotaMB is 16 TiB, the largest quota accepted.
	MaxDiskQuotaMB = 16 << 20
)

// ErrNotManaged is returned for a user that exists but was not created by
// nPanel; nothing about it is changed.
var ErrNotManaged = actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "not managed by npanel")

// Ensure converges one account's user: it exists with its home and
// skeleton, carries DiskQuotaMB where the filesystem supports quotas, and is
// locked exactly when Suspended.
type Ensure struct {
	Username    string
	DiskQuotaMB uint64 // 0: no quota
	Suspended   bool
	// Web is the account's sites; nil serves none. It is applied only on a
	// node that runs the web module.
	Web *agentpb.WebSpec

	m              *Module
	run            runner // nil: execRunner
	allowTestNames bool
}

// Delete archives the account's home into the backup area and then removes
// the user and the home. A user that is already gone is success.
type Delete struct {
	Username string

	m              *Module
	run            runner // nil: execRunner
	allowTestNames bool
}

var (
	_ actions.Action = (*Ensure)(nil)
	_ actions.Action = (*Delete)(nil)
)

// NewEnsure builds the action from its wire form.
func (m *Module) NewEnsure(req *agentpb.EnsureAccountAction) *Ensure {
	return &Ensure{m: m, Username: req.GetUsername(), DiskQuotaMB: req.GetDiskQuotaMb(), Suspended: req.GetSuspended(), Web: req.GetWeb()}
}

// NewDelete builds the action from its wire form.
func (m *Module) NewDelete(req *agentpb.DeleteAccountAction) *Delete {
	return &Delete{m: m, Username: req.GetUsername()}
}

// Name implements actions.Action.
func (a *Ensure) Name() string { return EnsureName }

// Name implements actions.Action.
func (a *Delete) Name() string { return DeleteName }

// Validate implements actions.Action. The API validated the same fields;
// the agent checks again because it is the boundary that runs the tools.
func (a *Ensure) Validate() error {
	if err := validate.UsernameOrTest(a.Username, a.allowTestNames); err != nil {
		return err
	}
	if a.DiskQuotaMB > MaxDiskQuotaMB {
		return fmt.Errorf("disk_quota_mb %d exceeds %d (16 TiB)", a.DiskQuotaMB, MaxDiskQuotaMB)
	}
	if a.Web != nil {
		return web.ValidateSpec(a.Username, a.Web)
	}
	return nil
}

// Validate implements actions.Action.
func (a *Delete) Validate() error {
	return validate.UsernameOrTest(a.Username, a.allowTestNames)
}

// AllowTestUsernames implements actions.TestNameAware.
func (a *Ensure) AllowTestUsernames() { a.allowTestNames = true }

// AllowTestUsernames implements actions.TestNameAware.
func (a *Delete) AllowTestUsernames() { a.allowTestNames = true }

// Apply implements actions.Action.
func (a *Ensure) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	p, log, db, unlock, err := a.m.begin(ctx, env, a.Username)
	if err != nil {
		return nil, err
	}
	defer unlock()
	run := runnerOr(a.run)
	name := a.Username

	u, existed := db.user(name)
	if existed {
		if err := checkManaged(p, u); err != nil {
			return nil, err
		}
	} else {
		if err := a.create(ctx, p, run); err != nil {
			return nil, err
		}
		if db, err = readUserDB(p); err != nil {
			return nil, err
		}
		var ok bool
		if u, ok = db.user(name); !ok {
			return nil, fmt.Errorf("create user %q: useradd succeeded but the user is not in %s", name, p.Passwd)
		}
		// useradd picks the UID from login.defs; one below MinUID would be
		// a user this package refuses from now on.
		if err := checkManaged(p, u); err != nil {
			return nil, fmt.Errorf("created user %q: %w", name, err)
		}
		log.Info("user created", "user", name, "uid", u.UID)
	}

	if err := ensureHome(p, u, log); err != nil {
		return nil, err
	}

	now := time.Now()
	sh := db.shadowOf(name)
	var lockCmd []string
	switch {
	case a.Suspended && !sh.locked(now):
		lockCmd = lockArgv(p, name)
	case !a.Suspended && !sh.unlocked():
		lockCmd = unlockArgv(p, name)
	}
	if lockCmd != nil {
		if err := a.m.runDB(ctx, run, lockCmd); err != nil {
			return nil, fmt.Errorf("set lock state of %q: %w", name, err)
		}
		if db, err = readUserDB(p); err != nil {
			return nil, err
		}
		sh = db.shadowOf(name)
		// A state usermod cannot reach would make every later ensure run it
		// again; say so now instead.
		if sh.locked(now) != a.Suspended || (!a.Suspended && !sh.unlocked()) {
			return nil, fmt.Errorf("set lock state of %q: %s did not change it", name, lockCmd[0])
		}
		log.Info("lock state changed", "user", name, "locked", a.Suspended)
	}

	applied, note, err := ensureQuota(ctx, p, run, u, a.DiskQuotaMB)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	var sites *agentpb.WebResult
	if slices.Contains(env.Modules, "web") {
		// After the user and its home: pools run as the user and document
		// roots live in the home.
		if sites, err = a.m.web.Ensure(ctx, env, web.Owner{Username: name, UID: u.UID, GID: u.GID, Home: u.Home}, a.Web, a.Suspended); err != nil {
			return nil, fmt.Errorf("sites of %q: %w", name, err)
		}
	}
	return &agentpb.AccountResult{
		Web:          sites,
		Username:     name,
		Uid:          u.UID,
		Gid:          u.GID,
		Home:         u.Home,
		Locked:       sh.locked(now),
		QuotaApplied: applied,
		QuotaNote:    note,
		Existed:      existed,
	}, nil
}

// create adds the user. A home already standing where the new one goes
// belongs to an earlier account of the same name whose delete stopped
// between userdel and removing the home; handing it to the new account
// would give a new customer an old customer's files, so creation waits
// until a delete has archived and removed it.
func (a *Ensure) create(ctx context.Context, p *platform.Profile, run runner) error {
	home := filepath.Join(p.HomeBase, a.Username)
	if _, err := os.Lstat(home); err == nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "create user %q: %s already exists without its user (left by an interrupted delete?); delete the account to archive and remove it first", a.Username, home)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("create user %q: %w", a.Username, err)
	}
	if err := a.m.runDB(ctx, run, useraddArgv(p, a.Username)); err != nil {
		return fmt.Errorf("create user %q: %w", a.Username, err)
	}
	return nil
}

// Apply implements actions.Action.
//
// The order is the safety argument: the home is archived and the archive
// verified before anything is removed; userdel comes next, because it is
// the step that may refuse (a process still running as the user) and
// refusing there leaves the account whole; the home goes last. A crash
// between the last two leaves a home without a user, which the next delete
// of the name archives and removes (see orphan).
func (a *Delete) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	p, log, db, unlock, err := a.m.begin(ctx, env, a.Username)
	if err != nil {
		return nil, err
	}
	defer unlock()
	run := runnerOr(a.run)
	name := a.Username

	u, ok := db.user(name)
	if !ok {
		// Sites of a user removed by other means would otherwise stay
		// configured (and their pools failing) forever.
		if slices.Contains(env.Modules, "web") {
			if err := a.m.web.Remove(ctx, env, name); err != nil {
				return nil, fmt.Errorf("remove sites of %q: %w", name, err)
			}
		}
		if slices.Contains(env.Modules, "mail") {
			if err := a.m.mail.RemoveOwner(ctx, env, name); err != nil {
				return nil, fmt.Errorf("remove mail of %q: %w", name, err)
			}
		}
		archive, err := a.orphan(ctx, p, db, log)
		if err != nil {
			return nil, err
		}
		return &agentpb.AccountResult{Username: name, Archive: archive}, nil
	}
	if err := checkManaged(p, u); err != nil {
		return nil, err
	}
	if slices.Contains(env.Modules, "web") {
		// Pools run as the user: they must be gone before userdel, which
		// refuses a user with running processes.
		if err := a.m.web.Remove(ctx, env, name); err != nil {
			return nil, fmt.Errorf("remove sites of %q: %w", name, err)
		}
	}
	if slices.Contains(env.Modules, "mail") {
		// Exim stops accepting for its domains and Dovecot its logins
		// before the maildirs are archived with the home.
		if err := a.m.mail.RemoveOwner(ctx, env, name); err != nil {
			return nil, fmt.Errorf("remove mail of %q: %w", name, err)
		}
	}
	// Whatever still runs as the user (a mail session, a script started
	// by a cron job or left behind by PHP) would make userdel refuse and
	// could write into the home while it is archived.
	if err := killUserProcesses(ctx, u.UID); err != nil {
		return nil, fmt.Errorf("stop processes of %q: %w", name, err)
	}
	var dumps []string
	if slices.Contains(env.Modules, "db") {
		// Dumped into the backup area first, like the home below.
		if dumps, err = a.m.db.RemoveOwner(ctx, env, name); err != nil {
			return nil, fmt.Errorf("remove databases of %q: %w", name, err)
		}
	}

	archive, err := archiveAndThen(ctx, p, name, u.UID, u.GID, log, func() error {
		if err := a.m.runDB(ctx, run, userdelArgv(p, name)); err != nil {
			return fmt.Errorf("delete user %q: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	log.Info("account deleted", "user", name, "uid", u.UID, "archive", archive, "databaseDumps", len(dumps))
	return &agentpb.AccountResult{Username: name, Uid: u.UID, Gid: u.GID, Home: u.Home, Archive: archive, DatabaseDumps: dumps, Existed: true}, nil
}

// orphan handles a delete whose user is gone: a home still standing under
// HomeBase is archived and removed if it is what an interrupted delete
// leaves (a directory owned by a UID in nPanel's range that no user has any
// more). Anything else there is left alone.
func (a *Delete) orphan(ctx context.Context, p *platform.Profile, db *userDB, log *slog.Logger) (string, error) {
	fi, err := os.Lstat(filepath.Join(p.HomeBase, a.Username))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("delete %q: %w", a.Username, err)
	}
	st, ok := sysStat(fi)
	if !fi.IsDir() || !ok || st.Uid < p.MinUID || db.uidInUse(st.Uid) {
		log.Warn("user gone, but something else is where its home was; left alone", "user", a.Username, "path", filepath.Join(p.HomeBase, a.Username))
		return "", nil
	}
	log.Info("user gone but its home is left; archiving and removing it", "user", a.Username, "uid", st.Uid)
	return archiveAndThen(ctx, p, a.Username, st.Uid, st.Gid, log, nil)
}

// archiveAndThen archives HomeBase/<name> (when present), runs then (when
// not nil) and removes the home. Nothing is removed unless the archive was
// written and verified and then succeeded.
func archiveAndThen(ctx context.Context, p *platform.Profile, name string, uid, gid uint32, log *slog.Logger, then func() error) (string, error) {
	home := filepath.Join(p.HomeBase, name)
	var base *os.Root
	fi, err := os.Lstat(p.HomeBase)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("delete %q: %w", name, err)
	case !fi.IsDir():
		return "", fmt.Errorf("delete %q: home base %s is not a directory", name, p.HomeBase)
	default:
		if base, err = os.OpenRoot(p.HomeBase); err != nil {
			return "", fmt.Errorf("delete %q: %w", name, err)
		}
		defer base.Close()
	}

	var archive string
	if base != nil {
		fi, err := base.Lstat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			log.Warn("home is missing; nothing to archive", "user", name, "home", home)
		case err != nil:
			return "", fmt.Errorf("delete %q: %w", name, err)
		case !fi.IsDir():
			return "", fmt.Errorf("delete %q: home %s is not a directory (%s); refusing to delete", name, home, fi.Mode().Type())
		default:
			h, err := base.OpenRoot(name)
			if err != nil {
				return "", fmt.Errorf("delete %q: %w", name, err)
			}
			archive, err = archiveHome(ctx, h, p.BackupDir, name, uid, gid, time.Now(), log)
			h.Close()
			if err != nil {
				return "", fmt.Errorf("delete %q: nothing deleted: %w", name, err)
			}
		}
	}

	if then != nil {
		if err := then(); err != nil {
			return "", err
		}
	}
	if base != nil {
		if err := base.RemoveAll(name); err != nil {
			return "", fmt.Errorf("delete %q: remove home %s: %w", name, home, err)
		}
	}
	return archive, nil
}

// checkManaged refuses users nPanel did not create. The home must also be
// exactly where the profile puts it: a delete removes that directory, and
// must never remove a path some other tool wrote into the passwd entry.
func checkManaged(p *platform.Profile, u passwdEntry) error {
	if u.UID < p.MinUID || u.GECOS != GECOSMarker {
		return fmt.Errorf("user %q exists and is %w", u.Name, ErrNotManaged)
	}
	if want := filepath.Join(p.HomeBase, u.Name); u.Home != want {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "user %q has home %s, not %s; refusing to touch it", u.Name, u.Home, want)
	}
	return nil
}

// begin is what both actions do first: check the name and profile, take
// the user's lock (one action per user at a time on this node), and read the
// user database under it.
func (m *Module) begin(ctx context.Context, env *actions.Env, name string) (*platform.Profile, *slog.Logger, *userDB, func(), error) {
	p, log, err := setup(env, name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	unlock, err := m.userLocks.Lock(ctx, name)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	db, err := readUserDB(p)
	if err != nil {
		unlock()
		return nil, nil, nil, nil, err
	}
	return p, log, db, unlock, nil
}

// setup checks what every Apply needs. The name was validated (Validate runs
// before Apply), but it becomes an argument of commands run as root and a
// path component, so its shape is checked once more here, where a mistake
// in some future caller would otherwise reach the tools. Reserved names are
// Validate's business only: the integration tests apply actions to
// validate.TestUserPrefix names, which Validate refuses on purpose.
func setup(env *actions.Env, name string) (*platform.Profile, *slog.Logger, error) {
	if !plainName(name) {
		return nil, nil, fmt.Errorf("username %q is not a plain user name", name)
	}
	if env == nil || env.Profile == nil {
		return nil, nil, errors.New("no platform profile: the agent must be started with one")
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return env.Profile, log, nil
}

// plainName is the shape validate.Username enforces: ^[a-z][a-z0-9]{0,31}$.
func plainName(s string) bool {
	if s == "" || len(s) > validate.UsernameMaxLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func runnerOr(r runner) runner {
	if r == nil {
		return execRunner{}
	}
	return r
}
