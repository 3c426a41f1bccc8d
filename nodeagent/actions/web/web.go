// Package web serves accounts' websites with nginx and PHP-FPM: one nginx
// server block per domain and one PHP-FPM pool per account and PHP version,
// rendered from templates into the platform profile's directories.
//
// Every change goes through one committer per node (commit.go): the new
// files are written atomically, the whole new set is checked with nginx -t
// (and php-fpm -t when pools changed), a failing set is restored to exactly
// the previous files, and a passing set is reloaded gracefully. Changes that
// arrive while a commit runs wait and are committed together, so a burst of
// a thousand vhosts costs a handful of tests and reloads, not a thousand.
package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// NginxService is the service name of nginx; PHP-FPM's are
// "php-fpm" + version ("php-fpm8.2").
const NginxService = "nginx"

// PHPService is the service name of the PHP-FPM master of version v.
func PHPService(v string) string { return "php-fpm" + v }

// Module is the web service area of a node. It owns the node's web state,
// so that two agents in one process (tests, npanel dev) never share it:
// the committer of each vhost directory (which account serves which server
// names, reloads still owed) and the release lines of the PHP builds. The
// agent creates one and hands it to every action that touches websites.
type Module struct {
	mu    sync.Mutex
	hosts map[string]*host // vhost dir -> its committer

	// versions holds the release line of PHP-FPM binaries whose path does
	// not say it (AlmaLinux's AppStream php-fpm), keyed by path.
	versions sync.Map

	// Test-only hooks, set by export_test.go: extra text in a domain's
	// server block (to make nginx -t fail on purpose) and pools without
	// open_basedir (to show that file modes alone also keep accounts
	// apart).
	vhostExtra    func(domain string) string
	noOpenBasedir func(user string) bool

	// logRotateSize overrides DefaultLogRotateSize (tests).
	logRotateSize int64

	// traffic counts the sites' requests from their access logs.
	traffic *Traffic
}

var _ actions.Module = (*Module)(nil)

// NewModule returns the web module of one agent.
func NewModule() *Module { return &Module{hosts: make(map[string]*host), traffic: NewTraffic()} }

// Traffic returns the node's request counters: the agent registers them as
// a Prometheus collector and has the log tail engine feed them
// (logtail.Consumer). They exist before Setup, which gives them their
// directory in the agent's data dir.
func (m *Module) Traffic() *Traffic { return m.traffic }

// Name implements actions.Module.
func (*Module) Name() string { return "web" }

// Setup implements actions.Module. It creates the directories the web
// actions write to and, in supervised mode, the main configuration of nginx
// and of every installed PHP-FPM under the prefix. In production it writes
// nothing outside its own directories: the distro's nginx.conf already
// includes conf.d, and its php-fpm.conf its pool directory.
func (m *Module) Setup(ctx context.Context, env *actions.Env) ([]services.Spec, error) {
	p := env.Profile
	w := p.Web()
	log := env.Logger
	if _, err := os.Stat(w.Nginx); err != nil {
		if log != nil {
			log.Info("nginx is not installed; the node serves no websites", "binary", w.Nginx)
		}
		return nil, nil
	}
	if env.DataDir != "" {
		m.traffic.logGone = func(account, domain string) bool {
			_, err := os.Stat(filepath.Join(userLogDir(w, account), logFileName(domain, "access")))
			return errors.Is(err, os.ErrNotExist)
		}
		// Websites are served without a traffic store too.
		if err := m.traffic.Open(ctx, filepath.Join(env.DataDir, "traffic")); err != nil && log != nil {
			log.Warn("traffic counters are not kept on disk", "err", err)
		}
	}
	listen, err := listenArgs(p.HTTPListen)
	if err != nil {
		return nil, err
	}
	httpsListen, err := listenArgsOf("https", p.HTTPSListen)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{w.VhostDir, w.DomainLogDir, w.SocketDir, w.SuspendedDir, w.StateDir, w.CertDir, w.ACMEChallengeDir} {
		if err := safePath(d); err != nil {
			return nil, err
		}
	}
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{w.VhostDir, 0o755},
		{w.NginxLogDir, 0o755}, // MkdirAll gives missing parents this mode too; see below
		{w.DomainLogDir, 0o750},
		{w.SocketDir, 0o755},
		{w.StateDir, 0o755},
		{w.SuspendedDir, 0o755},
		// HTTP-01 tokens are root's files that nginx's workers serve.
		{w.ACMEChallengeDir, 0o755},
	}
	builds := m.installedBuilds(p)
	for _, b := range builds {
		dirs = append(dirs, struct {
			path string
			mode os.FileMode
		}{b.PoolDir, 0o755})
	}
	if w.Supervised {
		dirs = append(dirs, struct {
			path string
			mode os.FileMode
		}{w.NginxTempDir, 0o755}, struct {
			path string
			mode os.FileMode
		}{w.RunDir, 0o755})
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("web setup: %w", err)
		}
	}
	if err := ensureCertDir(w); err != nil {
		return nil, err
	}
	if err := os.Chmod(w.ACMEChallengeDir, 0o755); err != nil {
		return nil, fmt.Errorf("web setup: %w", err)
	}
	if _, err := writeFile(w.StateDir, filepath.Base(tlsParamsFile(w)), []byte(tlsParams), 0o644); err != nil {
		return nil, fmt.Errorf("web setup: %w", err)
	}
	defaultTLS, err := render(defaultTLSTmpl, httpsListen)
	if err != nil {
		return nil, err
	}
	mailChallenge, err := render(mailChallengeTmpl, mailChallengeData{Listen: listen, Dir: w.ACMEChallengeDir})
	if err != nil {
		return nil, err
	}
	if w.Supervised {
		// nginx creates its logs 0644 and they tell every account's
		// visitors and errors: the log directories keep others out
		// (their root-run masters write them). Chmod repairs the 0755
		// that MkdirAll or an older agent left.
		for _, d := range []string{filepath.Dir(w.NginxLogDir), w.NginxLogDir, w.DomainLogDir} {
			if err := os.Chmod(d, 0o750); err != nil {
				return nil, fmt.Errorf("web setup: %w", err)
			}
		}
	}
	closed := map[string]bool{} // versions whose pools closeOldPools changed
	for _, b := range builds {
		changed, err := closeOldPools(b.PoolDir)
		if err != nil {
			return nil, err
		}
		closed[b.Version] = changed
	}
	if _, err := writeFile(w.SuspendedDir, "suspended.html", []byte(suspendedPage), 0o644); err != nil {
		return nil, fmt.Errorf("web setup: %w", err)
	}
	// Domain logs are rotated by the agent for as long as it runs.
	go m.rotateLoop(ctx, env)

	nginxSpec := services.Spec{
		Name:    NginxService,
		Listen:  []string{p.HTTPListen, p.HTTPSListen},
		Version: func(ctx context.Context) (string, error) { return nginxVersion(ctx, w.Nginx) },
		// The node-wide error log (the distribution's in production);
		// the domains' logs are followed per domain.
		LogFiles: []string{w.NginxLogDir + "/error.log"},
	}
	if !w.Supervised {
		// The distro's nginx.conf includes the vhost directory at http
		// level: the default HTTPS server goes there.
		if _, err := writeFile(w.VhostDir, defaultTLSFile, productionDefaults(defaultTLS, mailChallenge), 0o644); err != nil {
			return nil, fmt.Errorf("web setup: %w", err)
		}
		nginxSpec.Unit = w.NginxUnit
		specs := []services.Spec{nginxSpec}
		for _, b := range builds {
			specs = append(specs, services.Spec{
				Name:    PHPService(b.Version),
				Unit:    b.Unit,
				Listen:  []string{w.SocketDir},
				Version: phpVersionFunc(b.Binary),
				// A running PHP-FPM must drop the exec functions now.
				Reconfigured: closed[b.Version],
				LogFiles:     logFilesOf(b.ErrorLog),
			})
		}
		return specs, nil
	}

	// Supervised: the agent owns the main configuration files.
	for _, path := range []string{w.NginxPID, w.NginxLogDir, w.NginxTempDir, w.MimeTypes} {
		if err := safePath(path); err != nil {
			return nil, err
		}
	}
	mainConf, err := render(nginxMainTmpl, nginxMainData{
		LogFormat: logFormat,
		User:      w.WebUser, Group: w.WebGroup,
		PID:           w.NginxPID,
		ErrorLog:      w.NginxLogDir + "/error.log",
		AccessLog:     w.NginxLogDir + "/access.log",
		MimeTypes:     w.MimeTypes,
		Temp:          w.NginxTempDir,
		Listen:        listen,
		VhostDir:      w.VhostDir,
		TLSParams:     tlsParamsFile(w),
		DefaultTLS:    string(defaultTLS),
		MailChallenge: string(mailChallenge),
	})
	if err != nil {
		return nil, err
	}
	if err := writePath(w.NginxConf, mainConf); err != nil {
		return nil, fmt.Errorf("web setup: %w", err)
	}
	httpAddr := dialAddr(p.HTTPListen)
	nginxSpec.Binary = w.Nginx
	nginxSpec.Args = []string{"-p", w.NginxPrefix, "-c", w.NginxConf, "-g", "daemon off;"}
	nginxSpec.ReloadSignal = syscall.SIGHUP
	nginxSpec.StopSignal = syscall.SIGQUIT // graceful: finish requests in flight
	nginxSpec.Ready = func(ctx context.Context) error { return dialReady(ctx, "tcp", httpAddr) }
	nginxSpec.AwaitReload = awaitNginxReload
	specs := []services.Spec{nginxSpec}

	for _, b := range builds {
		idle := idleSocket(w, b.Version)
		for _, path := range []string{b.PID, b.ErrorLog, b.PoolDir, idle} {
			if err := safePath(path); err != nil {
				return nil, err
			}
		}
		for _, path := range []string{b.PID, b.ErrorLog, b.Conf} {
			if err := os.MkdirAll(parentDir(path), 0o755); err != nil {
				return nil, fmt.Errorf("web setup: %w", err)
			}
		}
		conf, err := render(fpmMainTmpl, fpmMainData{
			PID: b.PID, ErrorLog: b.ErrorLog,
			User: w.WebUser, Group: w.WebGroup,
			IdleSocket: idle,
			PoolDir:    b.PoolDir,
		})
		if err != nil {
			return nil, err
		}
		if err := writePath(b.Conf, conf); err != nil {
			return nil, fmt.Errorf("web setup: %w", err)
		}
		specs = append(specs, services.Spec{
			Name:         PHPService(b.Version),
			Binary:       b.Binary,
			Args:         []string{"-F", "-y", b.Conf, "-p", p.Prefix},
			ReloadSignal: syscall.SIGUSR2,
			StopSignal:   syscall.SIGQUIT,
			Ready:        func(ctx context.Context) error { return dialReady(ctx, "unix", idle) },
			Version:      phpVersionFunc(b.Binary),
			Listen:       []string{idle},
			LogFiles:     logFilesOf(b.ErrorLog),
		})
	}
	return specs, nil
}

// logFilesOf is Spec.LogFiles of a daemon with one log file, if any.
func logFilesOf(path string) []string {
	if path == "" {
		return nil
	}
	return []string{path}
}

func idleSocket(w platform.WebPaths, version string) string {
	return w.SocketDir + "/npanel-idle-" + version + ".sock"
}

func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func dialReady(ctx context.Context, network, addr string) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func nginxVersion(ctx context.Context, bin string) (string, error) {
	// nginx -v prints "nginx version: nginx/1.22.1" on stderr.
	out, err := exec.CommandContext(ctx, bin, "-v").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -v: %w", bin, err)
	}
	s := strings.TrimSpace(string(out))
	if _, v, ok := strings.Cut(s, "nginx/"); ok {
		return strings.Fields(v)[0], nil
	}
	return "", fmt.Errorf("%s -v: unexpected output %q", bin, s)
}

func phpVersionFunc(bin string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) { return phpFullVersion(ctx, bin) }
}

// phpFullVersion runs "php-fpm -v", whose first line is
// "PHP 8.2.36 (fpm-fcgi) (built: ...)".
func phpFullVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "-v").Output()
	if err != nil {
		return "", fmt.Errorf("%s -v: %w", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "PHP" {
		return "", fmt.Errorf("%s -v: unexpected output %q", bin, firstLine(out))
	}
	return f[1], nil
}

func firstLine(b []byte) string {
	s, _, _ := bytes.Cut(b, []byte("\n"))
	return string(s)
}

// installedBuilds returns the installed PHP-FPM builds with their release
// line filled in, one per line (the first listed wins), sorted by version.
func (m *Module) installedBuilds(p *platform.Profile) []platform.PHPFPM {
	var out []platform.PHPFPM
	seen := make(map[string]bool)
	for _, b := range p.Web().PHP {
		if !b.Installed() {
			continue
		}
		if b.Version == "" {
			v, ok := m.versions.Load(b.Binary)
			if !ok {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				full, err := phpFullVersion(ctx, b.Binary)
				cancel()
				if err != nil {
					continue
				}
				parts := strings.SplitN(full, ".", 3)
				if len(parts) < 2 {
					continue
				}
				v, _ = m.versions.LoadOrStore(b.Binary, parts[0]+"."+parts[1])
			}
			b.Version = v.(string)
		}
		if seen[b.Version] {
			continue
		}
		seen[b.Version] = true
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b platform.PHPFPM) int { return compareVersions(a.Version, b.Version) })
	return out
}

func compareVersions(a, b string) int {
	am, an, _ := strings.Cut(a, ".")
	bm, bn, _ := strings.Cut(b, ".")
	if c := len(am) - len(bm); c != 0 {
		return c
	}
	if c := strings.Compare(am, bm); c != 0 {
		return c
	}
	if c := len(an) - len(bn); c != 0 {
		return c
	}
	return strings.Compare(an, bn)
}

// InstalledPHP lists the PHP versions installed on this node, e.g.
// ["8.2"], sorted.
func (m *Module) InstalledPHP(p *platform.Profile) []string {
	var out []string
	for _, b := range m.installedBuilds(p) {
		out = append(out, b.Version)
	}
	return out
}

// ErrNotInstalled is returned for a site asking for a PHP version this node
// does not have.
var ErrNotInstalled = actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "not installed on this node")

// awaitNginxReload waits, after a HUP to the nginx master pid, until the
// new configuration serves: the master has started new workers and every
// old one has been told to finish (it then says so in its title, right
// before it closes its listeners). Waiting for old workers to exit instead
// would wait for every keep-alive connection they still hold.
func awaitNginxReload(pid int) func(ctx context.Context) error {
	before := services.Children(pid)
	return func(ctx context.Context) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			fresh, pending := false, false
			for _, c := range services.Children(pid) {
				switch {
				case !slices.Contains(before, c):
					fresh = true
				case !strings.Contains(services.Title(c), "shutting down"):
					pending = true
				}
			}
			if fresh && !pending {
				return nil
			}
			if time.Now().After(deadline) {
				return errors.New("nginx did not start workers with the new configuration within 10s of the reload")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
}
