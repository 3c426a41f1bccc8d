package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// Owner is the account whose sites are served: its Unix user and home.
type Owner struct {
	Username string
	UID, GID uint32
	// Home is the account's home directory (HomeBase/<user>); document
	// roots are resolved inside it.
	Home string
}

// Site states in agentpb.SiteResult.state.
const (
	StateActive    = "active"
	StateRedirect  = "redirect"
	StateSuspended = "suspended"
)

// Ensure converges the account's vhosts and PHP-FPM pools to spec: one
// server block per site, one pool per PHP version its sites use, nothing
// else. A suspended account's sites answer the suspension page and it has
// no pools (no PHP of a suspended account runs); nothing in its home is
// touched. A nil spec or one without sites removes all its sites.
//
// Applying the same spec twice writes no file and reloads nothing.
func (m *Module) Ensure(ctx context.Context, env *actions.Env, owner Owner, spec *agentpb.WebSpec, suspended bool) (*agentpb.WebResult, error) {
	if err := ValidateSpec(owner.Username, spec); err != nil {
		return nil, err
	}
	p := env.Profile
	w := p.Web()
	sites := spec.GetSites()
	if _, err := os.Stat(w.Nginx); err != nil {
		if len(sites) == 0 {
			return &agentpb.WebResult{}, nil
		}
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "web: nginx is not installed on this node (%s)", w.Nginx)
	}
	listen, err := listenArgs(p.HTTPListen)
	if err != nil {
		return nil, err
	}
	tl, err := httpsSide(p)
	if err != nil {
		return nil, err
	}
	if err := safePath(owner.Home); err != nil {
		return nil, fmt.Errorf("web: home: %w", err)
	}
	for _, d := range []string{w.VhostDir, w.DomainLogDir, w.SocketDir, w.SuspendedDir} {
		if err := safePath(d); err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
	}

	builds := make(map[string]platform.PHPFPM)
	for _, b := range m.installedBuilds(p) {
		builds[b.Version] = b
	}
	// A proxied account serves nothing from this node: no PHP, and its
	// home is left as it is (it goes once the move is finalized).
	proxyTo := spec.GetProxyTo()
	quiet := suspended || proxyTo != ""
	for _, s := range sites {
		if v := s.GetPhpVersion(); v != "" && s.GetRedirectTo() == "" && proxyTo == "" {
			if _, ok := builds[v]; !ok {
				have := m.InstalledPHP(p)
				if len(have) == 0 {
					have = []string{"none"}
				}
				return nil, fmt.Errorf("web: site %s: PHP %s is %w (installed: %s)", s.GetDomain(), v, ErrNotInstalled, strings.Join(have, ", "))
			}
		}
	}

	if !quiet && len(sites) > 0 {
		webGID, err := lookupGroup(w.WebGroup)
		if err != nil {
			return nil, err
		}
		if err := ensureDocroots(owner, webGID, sites); err != nil {
			return nil, err
		}
	}

	if len(sites) > 0 {
		// A suspended account's home is not touched: its ~/logs links
		// follow when it is lifted.
		if err := ensureLogs(w, owner, sites, !quiet); err != nil {
			return nil, err
		}
	}
	// The counters of the account's removed sites go with their logs.
	m.traffic.retain(owner.Username, sites)

	if len(sites) > 0 {
		if err := ensureCertDir(w); err != nil {
			return nil, err
		}
	}
	res := &agentpb.WebResult{}
	files := make(map[string][]byte)
	var names []string
	var certs []certWrite
	versions := make(map[string]bool)
	for _, s := range sites {
		sr, conf, err := renderSiteProxy(w, listen, tl, owner, s, suspended, proxyTo, spec.GetProxyToHttps(), m.vhostExtraOf(s.GetDomain()))
		if err != nil {
			return nil, err
		}
		// Every vhost serves HTTPS: a site without a certificate gets a
		// self-signed one in the same commit, so nginx -t passes and
		// HTTPS answers at once.
		cw, err := selfSignedFor(w, sr.Domain, sr.ServerNames)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cw...)
		names = append(names, sr.ServerNames...)
		if sr.PhpVersion != "" {
			versions[sr.PhpVersion] = true
		}
		files[sr.Config] = conf
		res.Sites = append(res.Sites, sr)
	}
	for _, v := range slices.Sorted(mapsKeys(versions)) {
		conf, err := renderPoolWith(w, owner, v, spec.GetPhp(), m.openBasedir(owner.Username))
		if err != nil {
			return nil, err
		}
		files[filepath.Join(builds[v].PoolDir, poolFile(owner.Username))] = conf
		res.PhpPools = append(res.PhpPools, v)
	}

	c := &change{ctx: ctx, env: env, user: owner.Username, files: files, names: names, certs: certs}
	if err := m.hostFor(p).submit(c); err != nil {
		return nil, err
	}
	res.Changed, res.Reloaded = c.changed, c.reloaded
	return res, nil
}

func (m *Module) vhostExtraOf(domain string) string {
	if m.vhostExtra == nil {
		return ""
	}
	return m.vhostExtra(domain)
}

func (m *Module) openBasedir(user string) bool {
	return m.noOpenBasedir == nil || !m.noOpenBasedir(user)
}

// renderSite renders one validated site's server block, with HTTPS on 443.
func renderSite(w platform.WebPaths, listen []string, owner Owner, s *agentpb.Site, suspended bool) (*agentpb.SiteResult, []byte, error) {
	tl := vhostTLS{Listen: []string{"443"}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	return renderSiteExtra(w, listen, tl, owner, s, suspended, "", "")
}

// renderSiteExtra is renderSite with the HTTPS listeners and extra text
// in the server block (a test hook). tl's Cert and Key are set here.
func renderSiteExtra(w platform.WebPaths, listen []string, tl vhostTLS, owner Owner, s *agentpb.Site, suspended bool, proxyTo, extra string) (*agentpb.SiteResult, []byte, error) {
	return renderSiteProxy(w, listen, tl, owner, s, suspended, proxyTo, "", extra)
}

// renderSiteProxy is renderSiteExtra with the HTTPS address proxied to
// (WebSpec.proxy_to_https) beside proxyTo.
func renderSiteProxy(w platform.WebPaths, listen []string, tl vhostTLS, owner Owner, s *agentpb.Site, suspended bool, proxyTo, proxyHTTPS, extra string) (*agentpb.SiteResult, []byte, error) {
	d := s.GetDomain()
	tl.Cert, tl.Key = CertFiles(w, d)
	sn := append([]string{d}, s.GetAliases()...)
	sr := &agentpb.SiteResult{
		Domain:      d,
		ServerNames: sn,
		Config:      filepath.Join(w.VhostDir, vhostFile(owner.Username, d)),
		AccessLog:   filepath.Join(userLogDir(w, owner.Username), logFileName(d, "access")),
		ErrorLog:    filepath.Join(userLogDir(w, owner.Username), logFileName(d, "error")),
	}
	data := vhostData{
		User:          owner.Username,
		Listen:        listen,
		ServerNames:   strings.Join(sn, " "),
		AccessLog:     sr.AccessLog,
		ErrorLog:      sr.ErrorLog,
		SuspendedRoot: w.SuspendedDir,
		TLS:           tl,
		HTTPSRedirect: s.GetHttpsRedirect(),
		HSTS:          s.GetHstsMaxAge(),
	}
	switch {
	case proxyTo != "":
		// Before suspension: the account lives on the node proxied to,
		// which serves its suspension page itself when it is suspended.
		target, err := proxyTarget(proxyTo)
		if err != nil {
			return sr, nil, err
		}
		sr.State = StateProxy
		data.Proxy = target
		if proxyHTTPS != "" {
			if data.ProxyHTTPS, err = proxyTarget(proxyHTTPS); err != nil {
				return sr, nil, fmt.Errorf("%w (proxy_to_https)", err)
			}
		}
	case suspended:
		sr.State = StateSuspended
		data.Suspended = true
	case s.GetRedirectTo() != "":
		sr.State = StateRedirect
		target, err := redirectTarget(s.GetRedirectTo())
		if err != nil {
			return sr, nil, err
		}
		code := s.GetRedirectCode()
		if code == 0 {
			code = 301
		}
		sr.RedirectTo, sr.RedirectCode = s.GetRedirectTo(), code
		data.Redirect, data.RedirectCode = target, code
	default:
		sr.State = StateActive
		sr.Docroot = filepath.Join(owner.Home, s.GetDocroot())
		data.Root = sr.Docroot
		if v := s.GetPhpVersion(); v != "" {
			sr.PhpVersion = v
			data.PHPSocket = poolSocket(w, owner.Username, v)
		}
	}
	data.Extra = extra
	conf, err := render(vhostTmpl, data)
	return sr, conf, err
}

func poolSocket(w platform.WebPaths, user, version string) string {
	return filepath.Join(w.SocketDir, "npanel-"+user+"-"+version+".sock")
}

func renderPool(w platform.WebPaths, owner Owner, version string, lim *agentpb.PHPPoolLimits) ([]byte, error) {
	return renderPoolWith(w, owner, version, lim, true)
}

// renderPoolWith is renderPool with open_basedir switchable (a test hook).
func renderPoolWith(w platform.WebPaths, owner Owner, version string, lim *agentpb.PHPPoolLimits, openBasedir bool) ([]byte, error) {
	d := poolData{
		User:        owner.Username,
		GID:         owner.GID,
		Version:     version,
		Socket:      poolSocket(w, owner.Username, version),
		WebGroup:    w.WebGroup,
		MaxChildren: lim.GetMaxChildren(),
		MemoryMB:    lim.GetMemoryLimitMb(),
		Home:        owner.Home,
		Tmp:         filepath.Join(owner.Home, "tmp"),
		OpenBasedir: openBasedir,

		AllowExecMark: allowExecMark,
	}
	if !lim.GetAllowExec() {
		d.DisableFunctions = strings.Join(ExecFunctions, ",")
	}
	if d.MaxChildren == 0 {
		d.MaxChildren = DefaultMaxChildren
	}
	if d.MemoryMB == 0 {
		d.MemoryMB = DefaultMemoryLimitMB
	}
	return render(poolTmpl, d)
}

// closeOldPools adds disable_functions to the account pools in dir that an
// agent from before plans had allowExec wrote: until the control plane's
// next ensure renders an account's pool from its plan, its PHP may not
// start processes. Called by Setup; a running PHP-FPM re-reads them when
// changed is true (Spec.Reconfigured).
func closeOldPools(dir string) (changed bool, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("web: list %s: %w", dir, err)
	}
	for _, e := range ents {
		if _, ok := parsePoolName(e.Name()); !ok || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return changed, fmt.Errorf("web: %w", err)
		}
		if bytes.Contains(b, []byte("\nphp_admin_value[disable_functions] =")) || bytes.Contains(b, []byte("\n"+allowExecMark+"\n")) {
			continue
		}
		b = append(bytes.TrimRight(b, "\n"), "\nphp_admin_value[disable_functions] = "+strings.Join(ExecFunctions, ",")+"\n"...)
		if _, err := writeFile(dir, e.Name(), b, 0o644); err != nil {
			return changed, fmt.Errorf("web: %w", err)
		}
		changed = true
	}
	return changed, nil
}

// Remove removes every vhost and pool of the account and reloads. It
// returns once PHP-FPM has dropped the account's pools and no PHP-FPM
// process runs as its user any more, so that userdel can follow.
func (m *Module) Remove(ctx context.Context, env *actions.Env, username string) error {
	if err := checkUsername(username); err != nil {
		return err
	}
	if _, err := os.Stat(env.Profile.Web().Nginx); err != nil {
		return nil
	}
	c := &change{ctx: ctx, env: env, user: username, files: map[string][]byte{}}
	if err := m.hostFor(env.Profile).submit(c); err != nil {
		return err
	}
	if err := removeLogs(env.Profile.Web(), username); err != nil {
		return err
	}
	if err := m.traffic.ForgetAccount(username); err != nil {
		return err
	}
	u, err := user.Lookup(username)
	if err != nil {
		return nil // no such user: no process can run as it
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil
	}
	return waitNoPHP(ctx, uint32(uid))
}

// waitNoPHP waits until no PHP-FPM process runs as uid: a reloaded master
// lets workers of removed pools finish their request first.
func waitNoPHP(ctx context.Context, uid uint32) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pid := phpProcessOf(uid)
		if pid == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("web: PHP-FPM process %d still runs as uid %d after its pools were removed", pid, uid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func phpProcessOf(uid uint32) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := strconv.FormatUint(uint64(uid), 10)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		var name, ruid string
		for l := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					ruid = f[0]
				}
			}
		}
		if ruid == want && strings.HasPrefix(name, "php-fpm") {
			return pid
		}
	}
	return 0
}

func lookupGroup(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("web: web server group %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("web: web server group %q: gid %q: %w", name, g.Gid, err)
	}
	return uint32(gid), nil
}

// ensureDocroots resolves every site's document root inside the home
// through os.Root, refusing symlinks anywhere on the way, and creates what
// is missing as the account's. An empty document root gets the placeholder
// page (placeholder.go), so a new site answers 200 rather than 403.
func ensureDocroots(owner Owner, webGID uint32, sites []*agentpb.Site) error {
	home, err := os.OpenRoot(owner.Home)
	if err != nil {
		return fmt.Errorf("web: home %s: %w", owner.Home, err)
	}
	defer home.Close()
	for _, s := range sites {
		if s.GetRedirectTo() != "" {
			continue
		}
		if err := ensureDocroot(home, s.GetDocroot(), owner, webGID); err != nil {
			return fmt.Errorf("web: site %s: docroot %q: %w", s.GetDomain(), s.GetDocroot(), err)
		}
		if _, err := writePlaceholder(home, s.GetDocroot(), s.GetDomain(), owner); err != nil {
			return fmt.Errorf("web: site %s: placeholder page: %w", s.GetDomain(), err)
		}
	}
	return nil
}

// Modes of created directories: intermediate ones can be passed through
// but not listed; the document root is the account's, readable by the web
// server's group and by nobody else, so that other accounts (whose PHP runs
// as their own users) cannot read it through the filesystem.
const (
	passMode    os.FileMode = 0o711
	docrootMode os.FileMode = 0o750
)

// ErrSymlink is returned for a document root reached through a symlink.
var ErrSymlink = errors.New("is a symbolic link; give the real directory")

func ensureDocroot(home *os.Root, rel string, o Owner, webGID uint32) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		last := i == len(parts)-1
		fi, err := home.Lstat(p)
		created := false
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// 0700 until owner and mode are right.
			if err := home.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			if fi, err = home.Lstat(p); err != nil {
				return err
			}
			created = true
		case err != nil:
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s %w", p, ErrSymlink)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", p)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !created && st.Uid != o.UID {
			return fmt.Errorf("%s belongs to uid %d, not to the account", p, st.Uid)
		}
		mode, gid := passMode, o.GID
		if last {
			mode, gid = docrootMode, webGID
		}
		switch {
		case created:
		case !last:
			continue // the account's own directory: leave it as it chose
		case st.Gid == webGID && fi.Mode().Perm()&0o007 == 0 && fi.Mode().Perm()&0o050 == 0o050:
			continue
		}
		if err := setOwnerMode(home, p, fi, o.UID, gid, mode); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// setOwnerMode sets owner and mode through a descriptor checked to be the
// inode inspected, so a swapped-in symlink cannot redirect the chown.
func setOwnerMode(root *os.Root, name string, fi fs.FileInfo, uid, gid uint32, mode os.FileMode) error {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	ffi, err := f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(fi, ffi) {
		return errors.New("changed while being set up; try again")
	}
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return err
	}
	return f.Chmod(mode)
}
