package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
)

// Group commit.
//
// nginx -t parses every vhost of the node (about 45 ms at 1,000 sites) and a
// reload restarts all workers, so doing both per change would make a burst
// of N changes cost N full parses and N reloads. Instead every change joins
// a queue; one committer goroutine per node takes everything queued, writes
// all of it, tests the whole new set once and reloads once. Changes that
// arrive meanwhile form the next batch. When a batch fails the test it is
// rolled back and its members are retried one at a time (one test each,
// still one reload at the end), so a bad change fails alone and does not
// take the good ones of its batch down with it.
//
// The committer also owns the node's view of which account serves which
// server names, loaded once from the files on disk, so that two accounts
// can never both claim a name (nginx would only warn and serve the first).

const (
	commitTimeout = 5 * time.Minute
	socketWait    = 10 * time.Second
)

// host is the committer of one node. Its Module keeps one per vhost
// directory, so that a module used with several prefixes (tests) keeps
// their committers apart.
type host struct {
	m       *Module
	profile *platform.Profile
	w       platform.WebPaths

	mu      sync.Mutex
	pending []*change
	running bool

	// Committer-only state.
	loaded bool
	accts  map[string]map[string]bool // user -> paths of its files
	names  map[string]string          // server name -> user
	dirty  map[string]bool            // services whose last reload failed
}

func (m *Module) hostFor(p *platform.Profile) *host {
	w := p.Web()
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hosts[w.VhostDir]
	if h == nil {
		h = &host{m: m, profile: p, w: w}
		m.hosts[w.VhostDir] = h
	}
	return h
}

// change is one account's complete desired set of managed files.
type change struct {
	ctx   context.Context
	env   *actions.Env
	user  string
	files map[string][]byte // path -> content
	names []string
	// reload, set on a change of no account, asks the committer for a
	// reload of this service between commits (log rotation).
	reload string
	// certs are sites' certificate pairs to write with the change's files
	// (certs.go); they are not files of the account.
	certs []certWrite

	ops   []op
	taken bool // in a batch; guarded by host.mu
	done  chan struct{}
	err   error
	// Outcome, valid after done.
	changed  bool
	reloaded []string
}

// op replaces one file: old is its previous content (nil: absent), new the
// content to write (nil: remove).
type op struct {
	path     string
	old, new []byte
	perm     os.FileMode // of new and, on undo, of old; 0 means 0644
}

func (o op) mode() os.FileMode {
	if o.perm == 0 {
		return 0o644
	}
	return o.perm
}

// submit queues c and waits until it is committed or failed. A change still
// waiting when ctx ends is withdrawn; one already in a commit finishes with
// it, since a half-applied batch cannot be left behind.
func (h *host) submit(c *change) error {
	c.done = make(chan struct{})
	h.mu.Lock()
	h.pending = append(h.pending, c)
	if !h.running {
		h.running = true
		go h.loop()
	}
	h.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-c.ctx.Done():
	}
	h.mu.Lock()
	if !c.taken {
		h.pending = slices.DeleteFunc(h.pending, func(x *change) bool { return x == c })
		h.mu.Unlock()
		return c.ctx.Err()
	}
	h.mu.Unlock()
	<-c.done
	return c.err
}

func (h *host) loop() {
	for {
		h.mu.Lock()
		batch := h.pending
		h.pending = nil
		if len(batch) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		for _, c := range batch {
			c.taken = true
		}
		h.mu.Unlock()

		deferred := h.commit(batch)

		if len(deferred) > 0 {
			h.mu.Lock()
			for _, c := range deferred {
				c.taken = false
			}
			h.pending = append(deferred, h.pending...)
			h.mu.Unlock()
		}
	}
}

func finish(c *change, err error) {
	c.err = err
	close(c.done)
}

// commit applies one batch and returns the changes it deferred to the next
// (a second change of an account already in the batch, or a change claiming
// a name another member of the batch claims).
func (h *host) commit(batch []*change) (deferred []*change) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	env := batch[0].env
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := h.load(); err != nil {
		for _, c := range batch {
			finish(c, err)
		}
		return nil
	}

	var work, noop []*change
	inBatch := make(map[string]bool)
	claimed := make(map[string]string)
	certClaimed := make(map[string]bool) // sites whose certificate a member writes
	for _, c := range batch {
		if c.reload != "" {
			if h.dirty == nil {
				h.dirty = make(map[string]bool)
			}
			h.dirty[c.reload] = true // reload owes it, and keeps owing it until it succeeds
			noop = append(noop, c)
			continue
		}
		if inBatch[c.user] {
			deferred = append(deferred, c)
			continue
		}
		err, later := h.conflict(c, claimed)
		for _, cw := range c.certs {
			later = later || certClaimed[cw.site]
		}
		if later {
			deferred = append(deferred, c)
			continue
		}
		inBatch[c.user] = true
		if err != nil {
			finish(c, err)
			continue
		}
		if c.ops, err = h.diff(c); err != nil {
			finish(c, err)
			continue
		}
		gone := removedSites(c.ops)
		if slices.ContainsFunc(gone, func(d string) bool { return certClaimed[d] }) {
			deferred = append(deferred, c)
			continue
		}
		certs, err := h.certOps(c)
		if err != nil {
			finish(c, err)
			continue
		}
		removals, err := h.certRemovals(gone)
		if err != nil {
			finish(c, err)
			continue
		}
		c.ops = append(c.ops, removals...)
		for _, cw := range c.certs {
			certClaimed[cw.site] = true
		}
		for _, d := range gone {
			certClaimed[d] = true
		}
		// Certificates first: the vhost that names them is tested with
		// them in place.
		c.ops = append(certs, c.ops...)
		if len(c.ops) == 0 {
			noop = append(noop, c)
			continue
		}
		for _, n := range c.names {
			claimed[n] = c.user
		}
		work = append(work, c)
	}

	var ok []*change
	t0 := time.Now()
	if len(work) > 0 {
		err := h.tryApply(ctx, work)
		switch {
		case err == nil:
			ok = work
		case len(work) == 1:
			work[0].err = err
		default:
			log.Warn("web batch refused; retrying its changes one by one", "changes", len(work), "err", err)
			for _, c := range work {
				if err := h.tryApply(ctx, []*change{c}); err != nil {
					c.err = err
					continue
				}
				ok = append(ok, c)
			}
		}
	}
	for _, c := range ok {
		h.accept(c)
		c.changed = true
	}

	t1 := time.Now()
	reloaded, reloadErr := h.reload(ctx, env, ok)
	log.Debug("web commit", "changes", len(work), "unchanged", len(noop), "deferred", len(deferred),
		"write_test", t1.Sub(t0), "reload", time.Since(t1), "reloaded", reloaded)
	for _, c := range ok {
		c.reloaded = reloaded
		if reloadErr != nil {
			c.err = reloadErr
		}
	}
	for _, c := range work {
		finish(c, c.err)
	}
	for _, c := range noop {
		// A no-op still reports a reload that is owed and failed: its
		// files are on disk but not yet served.
		finish(c, reloadErr)
	}
	return deferred
}

// conflict reports a server name of c that another account serves (err),
// or that another change of this batch claims (later: retry in the next
// batch, when that change has either committed or failed).
func (h *host) conflict(c *change, claimed map[string]string) (err error, later bool) {
	for _, n := range c.names {
		if u, ok := claimed[n]; ok && u != c.user {
			return nil, true
		}
	}
	for _, n := range c.names {
		if u, ok := h.names[n]; ok && u != c.user {
			return fmt.Errorf("web: %s is already served by account %s on this node", n, u), false
		}
	}
	return nil, false
}

// diff compares c's desired files with the disk: what to write and what of
// the account's earlier files to remove.
func (h *host) diff(c *change) ([]op, error) {
	paths := make(map[string]bool)
	for p := range c.files {
		paths[p] = true
	}
	for p := range h.accts[c.user] {
		paths[p] = true
	}
	var ops []op
	for _, p := range slices.Sorted(mapsKeys(paths)) {
		old, err := readPath(p)
		if err != nil {
			return nil, fmt.Errorf("web: read %s: %w", p, err)
		}
		nw := c.files[p]
		if (old == nil) == (nw == nil) && bytes.Equal(old, nw) {
			continue
		}
		ops = append(ops, op{path: p, old: old, new: nw})
	}
	return ops, nil
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// tryApply writes the changes' files and tests the new set. On any failure
// every file is put back as it was (removed if it was new) and the error
// carries the daemon's own message.
func (h *host) tryApply(ctx context.Context, cs []*change) error {
	var ops []op
	for _, c := range cs {
		ops = append(ops, c.ops...)
	}
	done, err := applyOps(ops)
	restore := func() error {
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			if err := putPathMode(done[i].path, done[i].old, done[i].mode()); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(err, restore())
	}
	if err := h.test(ctx, cs); err != nil {
		if rerr := restore(); rerr != nil {
			return errors.Join(err, fmt.Errorf("web: restoring the previous configuration: %w", rerr))
		}
		return err
	}
	return nil
}

// syncFSThreshold: batches of more files are made durable with one
// syncfs(2) rather than an fsync per file. syncfs also flushes whatever else
// is dirty on the filesystem, which can take long on a busy node, so small
// changes (the common case, and the one whose latency users see) keep
// fsyncing their own few files.
const syncFSThreshold = 16

// applyOps writes a batch of files atomically each, with one directory sync
// per directory instead of one per file: every new content goes to a
// temporary file first and is made durable, then each is renamed over its
// target and each directory is synced once. A crash still leaves every
// file either old or new. done lists the ops carried out, for undo.
func applyOps(ops []op) (done []op, err error) {
	roots := make(map[string]*os.Root)
	defer func() {
		for _, r := range roots {
			r.Close()
		}
	}()
	rootOf := func(path string) (*os.Root, error) {
		dir := filepath.Dir(path)
		if r, ok := roots[dir]; ok {
			return r, nil
		}
		r, err := os.OpenRoot(dir)
		if err != nil {
			return nil, err
		}
		roots[dir] = r
		return r, nil
	}
	temps := make([]*atomicfile.Pending, len(ops))
	defer func() {
		for _, t := range temps {
			if t != nil {
				t.Abort()
			}
		}
	}()
	for i, o := range ops {
		r, err := rootOf(o.path)
		if err != nil {
			return nil, fmt.Errorf("web: write %s: %w", o.path, err)
		}
		if o.new == nil {
			continue
		}
		p, err := atomicfile.Create(r, filepath.Base(o.path), o.mode(), nil)
		if err != nil {
			return nil, fmt.Errorf("web: write %s: %w", o.path, err)
		}
		temps[i] = p
		if _, err := p.Write(o.new); err != nil {
			return nil, fmt.Errorf("web: write %s: %w", o.path, err)
		}
		if len(ops) > syncFSThreshold {
			// Synced below by syncfs; closed now so that a batch of a
			// thousand vhosts does not hold a thousand descriptors.
			if err := p.Close(); err != nil {
				return nil, fmt.Errorf("web: write %s: %w", o.path, err)
			}
		}
	}
	if len(ops) <= syncFSThreshold {
		for i, t := range temps {
			if t == nil {
				continue
			}
			if err := t.Sync(); err != nil {
				return nil, fmt.Errorf("web: sync %s: %w", ops[i].path, err)
			}
		}
	} else {
		for _, r := range roots {
			if err := atomicfile.SyncFS(r); err != nil {
				return nil, fmt.Errorf("web: sync: %w", err)
			}
		}
	}
	for i, o := range ops {
		r, _ := rootOf(o.path)
		name := filepath.Base(o.path)
		if o.new == nil {
			if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return done, fmt.Errorf("web: remove %s: %w", o.path, err)
			}
		} else {
			if err := temps[i].Rename(); err != nil {
				return done, fmt.Errorf("web: write %s: %w", o.path, err)
			}
		}
		done = append(done, o)
	}
	for dir, r := range roots {
		if err := atomicfile.SyncDir(r); err != nil {
			return done, fmt.Errorf("web: sync %s: %w", dir, err)
		}
	}
	return done, nil
}

// touched returns whether cs change vhosts and which PHP versions' pools
// they change.
func (h *host) touched(cs []*change) (nginx bool, php []string) {
	for _, c := range cs {
		for _, o := range c.ops {
			dir := filepath.Dir(o.path)
			if dir == h.w.VhostDir || dir == h.w.CertDir {
				nginx = true
				continue
			}
			if v := h.versionOfPoolDir(dir); v != "" && !slices.Contains(php, v) {
				php = append(php, v)
			}
		}
	}
	slices.Sort(php)
	return nginx, php
}

func (h *host) versionOfPoolDir(dir string) string {
	for _, b := range h.m.installedBuilds(h.profile) {
		if b.PoolDir == dir {
			return b.Version
		}
	}
	return ""
}

func (h *host) build(version string) (platform.PHPFPM, bool) {
	for _, b := range h.m.installedBuilds(h.profile) {
		if b.Version == version {
			return b, true
		}
	}
	return platform.PHPFPM{}, false
}

// test runs nginx -t and, for every PHP version whose pools changed,
// php-fpm -t, against the configuration now on disk.
func (h *host) test(ctx context.Context, cs []*change) error {
	nginx, php := h.touched(cs)
	for _, v := range php {
		b, ok := h.build(v)
		if !ok {
			return fmt.Errorf("web: PHP %s: %w", v, ErrNotInstalled)
		}
		args := []string{"-t", "-y", b.Conf}
		if h.w.Supervised {
			args = append(args, "-p", h.profile.Prefix)
		}
		if out, err := exec.CommandContext(ctx, b.Binary, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("web: php-fpm%s -t refused the new pools: %s", v, daemonMessage(out, err))
		}
	}
	if nginx {
		if out, err := exec.CommandContext(ctx, h.w.Nginx, nginxTestArgs(h.w)...).CombinedOutput(); err != nil {
			return fmt.Errorf("web: nginx -t refused the new configuration: %s", daemonMessage(out, err))
		}
	}
	return nil
}

func nginxTestArgs(w platform.WebPaths) []string {
	if w.Supervised {
		return []string{"-t", "-q", "-p", w.NginxPrefix, "-c", w.NginxConf}
	}
	return []string{"-t", "-q", "-c", w.NginxConf}
}

// daemonMessage keeps the lines of a tool's output that say what is wrong.
func daemonMessage(out []byte, err error) string {
	var lines []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "test failed") {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return err.Error()
	}
	if len(lines) > 10 {
		lines = lines[:10]
	}
	return strings.Join(lines, "; ")
}

// accept records c's committed files and names.
func (h *host) accept(c *change) {
	for n, u := range h.names {
		if u == c.user {
			delete(h.names, n)
		}
	}
	for _, n := range c.names {
		h.names[n] = c.user
	}
	if len(c.files) == 0 {
		delete(h.accts, c.user)
		return
	}
	paths := make(map[string]bool, len(c.files))
	for p := range c.files {
		paths[p] = true
	}
	h.accts[c.user] = paths
}

// requestReload has the committer reload service between commits, so that
// the reload never loads a batch's files before their test passed or
// after it was refused, and waits for it.
func (h *host) requestReload(ctx context.Context, env *actions.Env, service string) error {
	return h.submit(&change{ctx: ctx, env: env, reload: service})
}

// reload reloads what the committed changes touched and whatever an earlier
// failed reload still owes. PHP-FPM goes first and its new sockets are
// awaited, so that nginx never points a site at a pool not yet listening.
func (h *host) reload(ctx context.Context, env *actions.Env, ok []*change) ([]string, error) {
	nginx, php := h.touched(ok)
	if h.dirty == nil {
		h.dirty = make(map[string]bool)
	}
	var names []string
	for _, v := range php {
		names = append(names, PHPService(v))
	}
	for n := range h.dirty {
		if n != NginxService && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if nginx || h.dirty[NginxService] {
		names = append(names, NginxService)
	}
	if len(names) == 0 {
		return nil, nil
	}
	if env.Services == nil {
		for _, n := range names {
			h.dirty[n] = true
		}
		return nil, errors.New("web: no service manager to reload the web daemons with")
	}
	var errs []error
	var reloaded []string
	for _, n := range names {
		if n == NginxService {
			if err := waitSockets(ctx, ok); err != nil {
				errs = append(errs, err)
			}
		}
		if err := env.Services.Reload(ctx, n); err != nil {
			h.dirty[n] = true
			errs = append(errs, fmt.Errorf("web: reload %s: %w", n, err))
			continue
		}
		delete(h.dirty, n)
		reloaded = append(reloaded, n)
	}
	return reloaded, errors.Join(errs...)
}

// waitSockets waits until the sockets of pools that were just added exist
// and those of pools just removed are gone.
func waitSockets(ctx context.Context, cs []*change) error {
	var want, gone []string
	for _, c := range cs {
		for _, o := range c.ops {
			s := socketOfPool(o.new)
			if o.new != nil && s != "" && socketOfPool(o.old) != s {
				want = append(want, s)
			}
			if o.new == nil {
				if s := socketOfPool(o.old); s != "" {
					gone = append(gone, s)
				}
			}
		}
	}
	deadline := time.Now().Add(socketWait)
	for {
		missing := ""
		for _, s := range want {
			if _, err := os.Stat(s); err != nil {
				missing = s
				break
			}
		}
		for _, s := range gone {
			if _, err := os.Lstat(s); !errors.Is(err, fs.ErrNotExist) && missing == "" {
				missing = s
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("web: PHP-FPM socket %s did not appear (or vanish) within %s after the reload", missing, socketWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// socketOfPool returns the listen socket of a rendered pool file, "" for
// anything else.
func socketOfPool(conf []byte) string {
	if !bytes.HasPrefix(conf, []byte("; Managed by nPanel")) {
		return ""
	}
	for l := range strings.SplitSeq(string(conf), "\n") {
		if s, ok := strings.CutPrefix(l, "listen = "); ok {
			return s
		}
	}
	return ""
}

// load reads which account serves which names from the files on disk, once.
func (h *host) load() error {
	if h.loaded {
		return nil
	}
	h.accts = make(map[string]map[string]bool)
	h.names = make(map[string]string)
	add := func(user, path string) {
		if h.accts[user] == nil {
			h.accts[user] = make(map[string]bool)
		}
		h.accts[user][path] = true
	}
	ents, err := os.ReadDir(h.w.VhostDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("web: list %s: %w", h.w.VhostDir, err)
	}
	for _, e := range ents {
		user, domain, ok := parseVhostName(e.Name())
		if !ok {
			// A service's server block (service.go): its owner is
			// "@SERVICE/DOMAIN".
			if user, ok = parseServiceFile(e.Name()); !ok || !strings.Contains(user, "/") {
				continue
			}
			_, domain, _ = strings.Cut(user, "/")
		}
		path := filepath.Join(h.w.VhostDir, e.Name())
		data, err := readPath(path)
		if err != nil {
			return fmt.Errorf("web: read %s: %w", path, err)
		}
		add(user, path)
		names := serverNames(data)
		if len(names) == 0 {
			names = []string{domain}
		}
		for _, n := range names {
			h.names[n] = user
		}
	}
	for _, b := range h.m.installedBuilds(h.profile) {
		ents, err := os.ReadDir(b.PoolDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("web: list %s: %w", b.PoolDir, err)
		}
		for _, e := range ents {
			if user, ok := parsePoolName(e.Name()); ok {
				add(user, filepath.Join(b.PoolDir, e.Name()))
			} else if owner, ok := parseServiceFile(e.Name()); ok && !strings.Contains(owner, "/") {
				add(owner, filepath.Join(b.PoolDir, e.Name()))
			}
		}
	}
	h.loaded = true
	return nil
}

// File names carry the account, so that the files of an account can be
// found from the directory alone: npanel-<user>_<domain>.conf for a vhost
// (user names have no '_', domains neither) and npanel-<user>.conf for a
// pool.

func vhostFile(user, domain string) string { return "npanel-" + user + "_" + domain + ".conf" }
func poolFile(user string) string          { return "npanel-" + user + ".conf" }

func parseVhostName(name string) (user, domain string, ok bool) {
	s, ok1 := strings.CutPrefix(name, "npanel-")
	s, ok2 := strings.CutSuffix(s, ".conf")
	if !ok1 || !ok2 {
		return "", "", false
	}
	user, domain, ok = strings.Cut(s, "_")
	if !ok || checkUsername(user) != nil || domain == "" {
		return "", "", false
	}
	return user, domain, true
}

func parsePoolName(name string) (string, bool) {
	s, ok1 := strings.CutPrefix(name, "npanel-")
	s, ok2 := strings.CutSuffix(s, ".conf")
	if !ok1 || !ok2 || checkUsername(s) != nil {
		return "", false
	}
	return s, true
}

// serverNames reads the server_name line of a rendered vhost.
func serverNames(conf []byte) []string {
	for l := range strings.SplitSeq(string(conf), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), "server_name "); ok {
			return strings.Fields(strings.TrimSuffix(s, ";"))
		}
	}
	return nil
}
