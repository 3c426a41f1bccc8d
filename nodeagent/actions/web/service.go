package web

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// Service sites.
//
// Another module of this agent (mail, for Roundcube at webmail.DOMAIN) may
// serve a site through the node's one nginx: a server block per name and
// one PHP-FPM pool per service, run as a system user the module names.
// They go through the same committer as accounts' sites: written
// atomically, tested with nginx -t and php-fpm -t, restored when refused,
// reloaded together with whatever else is pending, and their server names
// are claimed like an account's, so that neither can take the other's.
//
// Their files are named with '@', which no user name contains:
// npanel@SERVICE_DOMAIN.conf in the vhost directory and npanel@SERVICE.conf
// in the pool directory. In the committer the owner of the pool is
// "@SERVICE" and that of a server block "@SERVICE/DOMAIN".

// ServiceSite is one server block of a service, PHP through the service's
// pool.
type ServiceSite struct {
	// Service names the service, [a-z]{1,32}: "webmail".
	Service string
	// Domain is the server name, canonical.
	Domain string
	// Root is the document root: a path of the platform profile.
	Root string
	// Deny lists URI path prefixes (below /) refused with 403, such as
	// "config" or "temp"; [A-Za-z0-9_.-] only.
	Deny []string
	// MaxBodyMB is client_max_body_size (uploads); 0 leaves nginx's.
	MaxBodyMB int
	// Pool is the service's PHP-FPM pool.
	Pool ServicePool
}

// ServicePool is the PHP-FPM pool of a service.
type ServicePool struct {
	// User runs the pool; it must not be root. Its group is the user's
	// own group name (same name).
	User string
	// Env is passed to PHP (env[...]); AdminValues are php_admin_value
	// settings. Keys are [A-Za-z0-9_.]; values paths or plain tokens.
	Env         map[string]string
	AdminValues map[string]string
	// MaxChildren bounds the pool; 0 means DefaultMaxChildren.
	MaxChildren int
}

// EnsureServiceSite serves s: its pool and its server block, committed
// like an account's change. It reports whether a file changed.
func (m *Module) EnsureServiceSite(ctx context.Context, env *actions.Env, s ServiceSite) (bool, error) {
	if err := checkService(s.Service); err != nil {
		return false, err
	}
	if err := canonicalDomain("service site", s.Domain); err != nil {
		return false, err
	}
	p := env.Profile
	w := p.Web()
	if _, err := os.Stat(w.Nginx); err != nil {
		return false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "web: nginx is not installed on this node (%s)", w.Nginx)
	}
	builds := m.installedBuilds(p)
	if len(builds) == 0 {
		return false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "web: no PHP-FPM is installed on this node")
	}
	b := builds[len(builds)-1] // the newest line
	listen, err := listenArgs(p.HTTPListen)
	if err != nil {
		return false, err
	}
	sock := filepath.Join(w.SocketDir, "npanel@"+s.Service+".sock")
	pool, err := renderServicePool(s, b.Version, sock, w.WebGroup)
	if err != nil {
		return false, err
	}
	tl, err := httpsSide(p)
	if err != nil {
		return false, err
	}
	tl.Cert, tl.Key = CertFiles(w, s.Domain)
	vhost, err := renderServiceVhost(s, listen, tl, sock)
	if err != nil {
		return false, err
	}
	if err := ensureCertDir(w); err != nil {
		return false, err
	}
	// Its own self-signed certificate until one is installed for the name.
	certs, err := selfSignedFor(w, s.Domain, []string{s.Domain})
	if err != nil {
		return false, err
	}
	h := m.hostFor(p)
	pc := &change{ctx: ctx, env: env, user: "@" + s.Service,
		files: map[string][]byte{filepath.Join(b.PoolDir, serviceFile(s.Service, "")): pool}}
	if err := h.submit(pc); err != nil {
		return false, err
	}
	vc := &change{ctx: ctx, env: env, user: "@" + s.Service + "/" + s.Domain, names: []string{s.Domain},
		files: map[string][]byte{filepath.Join(w.VhostDir, serviceFile(s.Service, s.Domain)): vhost}, certs: certs}
	if err := h.submit(vc); err != nil {
		return pc.changed, err
	}
	return pc.changed || vc.changed, nil
}

// RemoveServiceSite stops serving the service's server block of domain.
// The service's pool stays (ondemand: it runs no process while idle).
func (m *Module) RemoveServiceSite(ctx context.Context, env *actions.Env, service, domain string) (bool, error) {
	if err := checkService(service); err != nil {
		return false, err
	}
	if err := canonicalDomain("service site", domain); err != nil {
		return false, err
	}
	w := env.Profile.Web()
	if _, err := os.Stat(w.Nginx); err != nil {
		return false, nil
	}
	// Nothing served: no change for the committer, which would report a
	// reload some other change still owes as this call's failure.
	if _, err := os.Lstat(filepath.Join(w.VhostDir, serviceFile(service, domain))); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	c := &change{ctx: ctx, env: env, user: "@" + service + "/" + domain, files: map[string][]byte{}}
	if err := m.hostFor(env.Profile).submit(c); err != nil {
		return false, err
	}
	return c.changed, nil
}

func checkService(s string) error {
	if s == "" || len(s) > 32 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz") != "" {
		return fmt.Errorf("web: service name %q: want 1 to 32 letters a-z", s)
	}
	return nil
}

// serviceFile is npanel@SERVICE_DOMAIN.conf, or npanel@SERVICE.conf for the
// pool (domain "").
func serviceFile(service, domain string) string {
	if domain == "" {
		return "npanel@" + service + ".conf"
	}
	return "npanel@" + service + "_" + domain + ".conf"
}

// parseServiceFile returns the committer owner of a service's file name.
func parseServiceFile(name string) (owner string, ok bool) {
	s, ok1 := strings.CutPrefix(name, "npanel@")
	s, ok2 := strings.CutSuffix(s, ".conf")
	if !ok1 || !ok2 {
		return "", false
	}
	svc, domain, hasDomain := strings.Cut(s, "_")
	if checkService(svc) != nil {
		return "", false
	}
	if !hasDomain {
		return "@" + svc, true
	}
	if domain == "" {
		return "", false
	}
	return "@" + svc + "/" + domain, true
}

// safeToken is a value spliced into a pool file or server block: a path or
// a plain word, nothing the ini parser or nginx treats specially.
func safeToken(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+@,=:", c) >= 0) {
			return fmt.Errorf("value %q contains %q", v, c)
		}
	}
	return nil
}

func safeKey(k string) error {
	if k == "" || strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") != "" {
		return fmt.Errorf("key %q: want [A-Za-z0-9_.]", k)
	}
	return nil
}

func renderServicePool(s ServiceSite, version, sock, webGroup string) ([]byte, error) {
	u := s.Pool.User
	if u == "" || u == "root" || checkUsernameLike(u) != nil {
		return nil, fmt.Errorf("web: service %s: pool user %q refused", s.Service, u)
	}
	for _, v := range []string{sock, webGroup} {
		if err := safeToken(v); err != nil {
			return nil, fmt.Errorf("web: service %s: %w", s.Service, err)
		}
	}
	n := s.Pool.MaxChildren
	if n <= 0 {
		n = DefaultMaxChildren
	}
	var b strings.Builder
	// The first line and "listen = " are what socketOfPool reads.
	fmt.Fprintf(&b, "; Managed by nPanel for the agent's %s service (PHP %s); edits are overwritten.\n", s.Service, version)
	fmt.Fprintf(&b, "[@%s]\nuser = %s\ngroup = %s\nlisten = %s\nlisten.owner = %s\nlisten.group = %s\nlisten.mode = 0660\n",
		s.Service, u, u, sock, u, webGroup)
	fmt.Fprintf(&b, "pm = ondemand\npm.max_children = %d\npm.process_idle_timeout = 10s\npm.max_requests = 500\nrequest_terminate_timeout = 300s\nchdir = /\nsecurity.limit_extensions = .php\nclear_env = yes\n", n)
	for _, k := range slices.Sorted(mapsKeys(s.Pool.Env)) {
		v := s.Pool.Env[k]
		if err := errorsJoin(safeKey(k), safeToken(v)); err != nil {
			return nil, fmt.Errorf("web: service %s: env: %w", s.Service, err)
		}
		fmt.Fprintf(&b, "env[%s] = %s\n", k, v)
	}
	// A service's PHP starts no process; putenv stays (Roundcube calls
	// it). mail() goes too: it runs sendmail through /bin/sh, where an
	// LD_PRELOAD set with putenv would run any code; Roundcube sends over
	// SMTP.
	admin := map[string]string{"allow_url_include": "0", "disable_functions": "exec,passthru,shell_exec,system,proc_open,popen,pcntl_exec,mail"}
	for k, v := range s.Pool.AdminValues {
		admin[k] = v
	}
	for _, k := range slices.Sorted(mapsKeys(admin)) {
		v := admin[k]
		if err := errorsJoin(safeKey(k), safeToken(v)); err != nil {
			return nil, fmt.Errorf("web: service %s: php_admin_value: %w", s.Service, err)
		}
		fmt.Fprintf(&b, "php_admin_value[%s] = %s\n", k, v)
	}
	return []byte(b.String()), nil
}

// checkUsernameLike accepts a system user name: [a-z_][a-z0-9_-]*.
func checkUsernameLike(u string) error {
	if len(u) > 32 || u == "" || strings.Trim(u, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" || strings.IndexByte("abcdefghijklmnopqrstuvwxyz_", u[0]) < 0 {
		return fmt.Errorf("bad user name %q", u)
	}
	return nil
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// renderServiceVhost renders the one server block of a service's site: HTTP
// and HTTPS (tl; its certificate is the domain's, CertFiles), the ACME
// challenge location first.
func renderServiceVhost(s ServiceSite, listen []string, tl vhostTLS, sock string) ([]byte, error) {
	if err := safePath(s.Root); err != nil {
		return nil, fmt.Errorf("web: service %s: root: %w", s.Service, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Managed by nPanel for the agent's %s service; edits are overwritten.\nserver {\n", s.Service)
	for _, l := range listen {
		fmt.Fprintf(&b, "    listen %s;\n", l)
	}
	for _, l := range tl.Listen {
		fmt.Fprintf(&b, "    listen %s ssl http2;\n", l)
	}
	fmt.Fprintf(&b, "    server_name %s;\n", s.Domain)
	fmt.Fprintf(&b, "    ssl_certificate %s;\n    ssl_certificate_key %s;\n    include %s;\n", tl.Cert, tl.Key, tl.Params)
	fmt.Fprintf(&b, "    location ^~ /.well-known/acme-challenge/ {\n        alias %s/;\n        default_type text/plain;\n    }\n", tl.Challenge)
	b.WriteString(`    server_tokens off;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-Frame-Options "SAMEORIGIN" always;
    add_header Referrer-Policy "same-origin" always;
`)
	if s.MaxBodyMB > 0 {
		fmt.Fprintf(&b, "    client_max_body_size %dm;\n", s.MaxBodyMB)
	}
	fmt.Fprintf(&b, "    root %s;\n    index index.php;\n", s.Root)
	b.WriteString("    location ~ /\\. {\n        deny all;\n    }\n")
	if len(s.Deny) > 0 {
		for _, d := range s.Deny {
			if d == "" || strings.Trim(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
				return nil, fmt.Errorf("web: service %s: deny %q: want [A-Za-z0-9_.-]", s.Service, d)
			}
		}
		fmt.Fprintf(&b, "    location ~ ^/(%s)(/|$) {\n        deny all;\n    }\n", strings.ReplaceAll(strings.Join(s.Deny, "|"), ".", `\.`))
	}
	b.WriteString(`    location / {
        try_files $uri $uri/ =404;
    }
    location ~ \.php(/|$) {
        fastcgi_split_path_info ^(.+?\.php)(/.*)$;
        try_files $fastcgi_script_name =404;
        fastcgi_pass unix:` + sock + `;
        fastcgi_index index.php;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param PATH_INFO $fastcgi_path_info;
        fastcgi_param DOCUMENT_ROOT $document_root;
` + fastcgiParams + `
    }
}
`)
	return []byte(b.String()), nil
}
