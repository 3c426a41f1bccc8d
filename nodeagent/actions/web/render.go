package web

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"github.com/npanel/npanel/nodeagent/platform"
)

// Configuration is rendered from templates whose every input is either
// validated user input (ValidateSpec: domains, docroots, redirect URLs) or a
// path of the platform profile checked by safePath. Nothing is quoted or
// escaped; the validators guarantee there is nothing to escape, and the fuzz
// target holds them to it.

// fastcgiParams are the FastCGI parameters every PHP location passes on
// besides SCRIPT_FILENAME and DOCUMENT_ROOT (sites' and services' alike).
const fastcgiParams = `        fastcgi_param SCRIPT_NAME $fastcgi_script_name;
        fastcgi_param QUERY_STRING $query_string;
        fastcgi_param REQUEST_METHOD $request_method;
        fastcgi_param CONTENT_TYPE $content_type;
        fastcgi_param CONTENT_LENGTH $content_length;
        fastcgi_param REQUEST_URI $request_uri;
        fastcgi_param DOCUMENT_URI $document_uri;
        fastcgi_param SERVER_PROTOCOL $server_protocol;
        fastcgi_param REQUEST_SCHEME $scheme;
        fastcgi_param HTTPS $https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE nginx;
        fastcgi_param REMOTE_ADDR $remote_addr;
        fastcgi_param REMOTE_PORT $remote_port;
        fastcgi_param SERVER_ADDR $server_addr;
        fastcgi_param SERVER_PORT $server_port;
        fastcgi_param SERVER_NAME $host;
        fastcgi_param REDIRECT_STATUS 200;
        # httpoxy: never pass a client's Proxy header on as HTTP_PROXY.
        fastcgi_param HTTP_PROXY "";`

// A site's vhost serves HTTP and HTTPS (HTTP/2) from one server block, or
// from two when the plain-HTTP side differs: it redirects to HTTPS, or
// HSTS is sent (on HTTPS only). Every block answers ACME HTTP-01 tokens
// before anything else, suspended and redirected sites included.
var vhostTmpl = template.Must(template.New("vhost").Funcs(template.FuncMap{"fastcgiParams": func() string { return fastcgiParams }}).Parse(`
{{- define "head"}}
    server_name {{.ServerNames}};
    access_log {{.AccessLog}} npanel_json;
    error_log {{.ErrorLog}};
    server_tokens off;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-Frame-Options "SAMEORIGIN" always;
    add_header Referrer-Policy "strict-origin-when-cross-origin" always;
{{- end}}
{{- define "tls"}}
    ssl_certificate {{.TLS.Cert}};
    ssl_certificate_key {{.TLS.Key}};
    include {{.TLS.Params}};
{{- end}}
{{- define "challenge"}}
{{- if not .Proxy}}
    location ^~ /.well-known/acme-challenge/ {
        alias {{.TLS.Challenge}}/;
        default_type text/plain;
    }
{{- end}}
{{- end}}
{{- define "body"}}
{{- if and .Proxy .TLSSide .ProxyHTTPS}}
    # HTTPS goes on over TLS, SNI and Host the request's, so that the new
    # node sees HTTPS. Its certificate is not verified: it may be
    # self-signed until it has its own (see WebSpec.proxy_to_https).
    location / {
        proxy_pass https://{{.ProxyHTTPS}};
        proxy_ssl_server_name on;
        proxy_ssl_name $host;
        proxy_ssl_verify off;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        # The new node's HSTS is this block's own (the same site's).
        proxy_hide_header Strict-Transport-Security;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_redirect off;
        proxy_request_buffering off;
        client_max_body_size 0;
    }
{{- else if .Proxy}}
    location / {
        proxy_pass http://{{.Proxy}};
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_redirect off;
        proxy_request_buffering off;
        client_max_body_size 0;
    }
{{- else if .Suspended}}
    root {{.SuspendedRoot}};
    error_page 503 /suspended.html;
    location = /suspended.html {
        internal;
    }
    location / {
        return 503;
    }
{{- else if .Redirect}}
    location / {
        return {{.RedirectCode}} "{{.Redirect}}$request_uri";
    }
{{- else}}
    root {{.Root}};
    index {{if .PHPSocket}}index.php {{end}}index.html index.htm;
    # Refuse symlinks to files of another owner, so an account cannot
    # publish what only the web server may read.
    disable_symlinks if_not_owner from=$document_root;
    location ~ /\.(?!well-known(?:/|$)) {
        deny all;
    }
    location / {
        try_files $uri $uri/ {{if .PHPSocket}}/index.php$is_args$args{{else}}=404{{end}};
    }
{{- if not .PHPSocket}}
    # A site without PHP never hands out PHP source.
    location ~ \.php$ {
        deny all;
    }
{{- else}}
    location ~ \.php$ {
        try_files $uri =404;
        fastcgi_pass unix:{{.PHPSocket}};
        fastcgi_index index.php;
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
{{fastcgiParams}}
    }
{{- end}}
{{- end}}
{{- if .Extra}}
    {{.Extra}}
{{- end}}
{{- end -}}
# Managed by nPanel for account {{.User}}; edits are overwritten.
{{- if or .HTTPSRedirect .HSTS .ProxyHTTPS}}
server {
{{- range .Listen}}
    listen {{.}};
{{- end}}
{{- template "head" .}}
{{- template "challenge" .}}
{{- if .HTTPSRedirect}}
    location / {
        return 301 https://$host{{.TLS.Port}}$request_uri;
    }
{{- else}}
{{- template "body" .}}
{{- end}}
}
server {
{{- range .TLS.Listen}}
    listen {{.}} ssl http2;
{{- end}}
{{- template "head" .}}
{{- template "tls" .}}
{{- if .HSTS}}
    add_header Strict-Transport-Security "max-age={{.HSTS}}" always;
{{- end}}
{{- template "challenge" .}}
{{- template "body" .OnTLS}}
}
{{- else}}
server {
{{- range .Listen}}
    listen {{.}};
{{- end}}
{{- range .TLS.Listen}}
    listen {{.}} ssl http2;
{{- end}}
{{- template "head" .}}
{{- template "tls" .}}
{{- template "challenge" .}}
{{- template "body" .}}
}
{{- end}}
`))

type vhostData struct {
	User        string
	Listen      []string
	ServerNames string
	AccessLog   string
	ErrorLog    string
	Suspended   bool
	Proxy       string // host:port every request goes to (proxyTarget)
	// ProxyHTTPS is the host:port HTTPS requests go to over TLS instead
	// of Proxy (proxyTarget); it renders HTTP and HTTPS apart.
	ProxyHTTPS string
	// TLSSide: the body is the HTTPS server block's (OnTLS).
	TLSSide       bool
	SuspendedRoot string
	Redirect      string
	RedirectCode  uint32
	Root          string
	PHPSocket     string
	TLS           vhostTLS
	HTTPSRedirect bool
	HSTS          uint32
	Extra         string // test hook only
}

// OnTLS is d for the body of a separate HTTPS server block.
func (d vhostData) OnTLS() vhostData {
	d.TLSSide = true
	return d
}

// vhostTLS is the HTTPS side of a server block.
type vhostTLS struct {
	// Listen are nginx listen arguments for HTTPS; Port is ":PORT" for a
	// redirect to HTTPS when that is not 443, else "".
	Listen []string
	Port   string
	// Cert and Key are the site's files (CertFiles), Params the shared
	// TLS settings (tlsParamsFile), Challenge the ACME token directory.
	Cert, Key, Params, Challenge string
}

// tlsParams are the TLS settings of every HTTPS server block: Mozilla's
// "intermediate" profile (TLS 1.2 and 1.3, AEAD ciphers with forward
// secrecy; no DHE, for which nginx would need dhparams), one session cache
// shared by all (a zone named and sized alike in every server is one zone).
const tlsParams = `# Written by the nPanel agent at start; edits are overwritten.
ssl_protocols TLSv1.2 TLSv1.3;
ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
ssl_prefer_server_ciphers off;
ssl_session_cache shared:npanel_tls:10m;
ssl_session_timeout 1d;
ssl_session_tickets off;
`

// tlsParamsFile is where Setup writes tlsParams; vhosts include it. It is
// outside the vhost directory, whose *.conf nginx includes at http level.
func tlsParamsFile(w platform.WebPaths) string { return filepath.Join(w.StateDir, "nginx-tls.conf") }

// defaultTLSServer answers HTTPS for names this node does not serve by
// refusing the handshake (nginx >= 1.19.4), so no site's certificate is
// shown for another name. In production it is a file of the vhost
// directory; supervised, part of the main configuration.
var defaultTLSTmpl = template.Must(template.New("default-tls").Parse(`
{{- range .}}
        listen {{.}} ssl http2 default_server;
{{- end}}
        server_name _;
        access_log off;
        ssl_reject_handshake on;
`))

// mailChallengeTmpl answers HTTP-01 for the mail. names of the node's
// domains: no site serves them (Exim and Dovecot do, by SNI), yet they are
// in the sites' certificates.
var mailChallengeTmpl = template.Must(template.New("mail-challenge").Parse(`
    server {
{{- range .Listen}}
        listen {{.}};
{{- end}}
        server_name ~^mail\.;
        access_log off;
        location ^~ /.well-known/acme-challenge/ {
            alias {{.Dir}}/;
            default_type text/plain;
        }
        location / {
            return 404;
        }
    }
`))

type mailChallengeData struct {
	Listen []string
	Dir    string
}

// productionDefaults is the file of the default HTTPS server and the mail
// names' challenge server in production, from the rendered defaultTLSTmpl
// and mailChallengeTmpl.
func productionDefaults(defaultTLS, mailChallenge []byte) []byte {
	return []byte("# Written by the nPanel agent at start; edits are overwritten.\n" + logFormat + "\nserver {" + string(defaultTLS) + "\n}\n" + string(mailChallenge))
}

// logFormat is the format of every domain's access log: one JSON object a
// line, which the traffic counters (traffic_parse.go) and the log shipper
// read. nginx wants a format defined before an access_log names it: in
// production it is in defaultTLSFile, which sorts before every vhost.
// Numbers are unquoted (nginx always prints them), strings JSON-escaped.
const logFormat = `log_format npanel_json escape=json '{"time":"$time_iso8601","status":$status,"bytes":$body_bytes_sent,"rt":$request_time,"method":"$request_method","uri":"$request_uri","host":"$host","remote":"$remote_addr","ua":"$http_user_agent","ref":"$http_referer","proto":"$server_protocol"}';`

// defaultTLSFile is the production default HTTPS server's file: not a
// vhost's name (parseVhostName wants '_'), sorted before them.
const defaultTLSFile = "npanel-00-default-tls.conf"

var poolTmpl = template.Must(template.New("pool").Parse(`; Managed by nPanel for account {{.User}} (PHP {{.Version}}); edits are overwritten.
[{{.User}}]
user = {{.User}}
group = {{.GID}}
listen = {{.Socket}}
listen.owner = {{.User}}
listen.group = {{.WebGroup}}
listen.mode = 0660
pm = ondemand
pm.max_children = {{.MaxChildren}}
pm.process_idle_timeout = 10s
pm.max_requests = 500
request_terminate_timeout = 300s
chdir = /
security.limit_extensions = .php
env[TMPDIR] = {{.Tmp}}
{{- if .OpenBasedir}}
php_admin_value[open_basedir] = {{.Home}}/
{{- end}}
php_admin_value[upload_tmp_dir] = {{.Tmp}}
php_admin_value[session.save_path] = {{.Tmp}}
php_admin_value[sys_temp_dir] = {{.Tmp}}
php_admin_value[memory_limit] = {{.MemoryMB}}M
php_admin_value[error_log] = {{.Home}}/logs/php{{.Version}}-error.log
php_admin_flag[log_errors] = on
php_admin_flag[allow_url_include] = off
{{- if .DisableFunctions}}
php_admin_value[disable_functions] = {{.DisableFunctions}}
{{- else}}
{{.AllowExecMark}}
{{- end}}
`))

// allowExecMark marks a pool whose plan allows process execution, so that
// the agent's start tells it from a pool an older agent wrote without
// disable_functions (closeOldPools).
const allowExecMark = "; allowExec: the account's plan lets its PHP start processes."

// ExecFunctions are the functions a pool disables unless the account's plan
// allows process execution: PHP's program execution functions that start a
// process (the backtick operator is shell_exec), popen, pcntl_exec, and
// putenv, which with mail() (sendmail through /bin/sh) and LD_PRELOAD runs
// any code the account uploads. php_admin_value makes the list final:
// ini_set and .user.ini cannot change it, and disable_functions is a
// system-only setting anyway. Names of functions an installation does not
// have (pcntl is not built into PHP-FPM) are ignored by PHP.
var ExecFunctions = []string{"exec", "passthru", "shell_exec", "system", "proc_open", "popen", "pcntl_exec", "putenv"}

type poolData struct {
	User        string
	GID         uint32
	Version     string
	Socket      string
	WebGroup    string
	MaxChildren uint32
	MemoryMB    uint32
	Home        string
	Tmp         string
	OpenBasedir bool
	// DisableFunctions is a comma-separated list for disable_functions;
	// empty when the plan allows process execution.
	DisableFunctions string
	AllowExecMark    string
}

var nginxMainTmpl = template.Must(template.New("nginx.conf").Parse(`# Written by the nPanel agent at start; edits are overwritten.
user {{.User}} {{.Group}};
worker_processes auto;
pid {{.PID}};
error_log {{.ErrorLog}} notice;

events {
    worker_connections 4096;
}

http {
    include {{.MimeTypes}};
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    server_tokens off;
    server_names_hash_max_size 16384;
    server_names_hash_bucket_size 128;
    access_log {{.AccessLog}};
    {{.LogFormat}}
    client_body_temp_path {{.Temp}}/body;
    proxy_temp_path {{.Temp}}/proxy;
    fastcgi_temp_path {{.Temp}}/fastcgi;
    uwsgi_temp_path {{.Temp}}/uwsgi;
    scgi_temp_path {{.Temp}}/scgi;

    include {{.TLSParams}};

    # Hosts this node does not serve.
    server {
{{- range .Listen}}
        listen {{.}} default_server;
{{- end}}
        server_name _;
        access_log off;
        return 404;
    }
    server {
{{- .DefaultTLS}}
    }
{{- .MailChallenge}}

    include {{.VhostDir}}/*.conf;
}
`))

type nginxMainData struct {
	LogFormat   string
	User, Group string
	PID         string
	ErrorLog    string
	AccessLog   string
	MimeTypes   string
	Temp        string
	Listen      []string
	VhostDir    string
	TLSParams   string
	DefaultTLS  string
	// MailChallenge is the rendered mailChallengeTmpl.
	MailChallenge string
}

var fpmMainTmpl = template.Must(template.New("php-fpm.conf").Parse(`; Written by the nPanel agent at start; edits are overwritten.
[global]
pid = {{.PID}}
error_log = {{.ErrorLog}}
daemonize = no

; PHP-FPM refuses to start without a pool; this one serves nothing and
; keeps no process running.
[npanel-idle]
user = {{.User}}
group = {{.Group}}
listen = {{.IdleSocket}}
listen.mode = 0600
pm = ondemand
pm.max_children = 1

include = {{.PoolDir}}/*.conf
`))

type fpmMainData struct {
	PID, ErrorLog string
	User, Group   string
	IdleSocket    string
	PoolDir       string
}

const suspendedPage = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Account suspended</title></head>
<body><h1>This account has been suspended.</h1>
<p>Please contact your hosting provider.</p></body>
</html>
`

func render(t *template.Template, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}

// safePath checks a path of the profile (or derived from one) before it is
// spliced into configuration: absolute, clean, and of characters neither
// nginx nor PHP-FPM's ini parser treats specially. Profile paths are
// trusted, but a prefix is an operator's command-line argument.
func safePath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("path %q is not absolute and clean", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+@,=", c) >= 0) {
			return fmt.Errorf("path %q contains %q, which is unsafe in nginx or PHP-FPM configuration", p, c)
		}
	}
	return nil
}

// listenArgs turns the profile's HTTPListen into nginx listen arguments:
// ":80" listens on every address, "127.0.0.1:8080" on that one.
func listenArgs(addr string) ([]string, error) { return listenArgsOf("http", addr) }

func listenArgsOf(what, addr string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen address %q: %w", what, addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("%s listen address %q: bad port", what, addr)
	}
	if host == "" {
		return []string{port}, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("%s listen address %q: host must be an IP address", what, addr)
	}
	return []string{net.JoinHostPort(ip.String(), port)}, nil
}

// httpsSide returns the HTTPS side of server blocks for profile p, without
// the site's certificate files (Cert, Key), which the renderer sets.
func httpsSide(p *platform.Profile) (vhostTLS, error) {
	w := p.Web()
	listen, err := listenArgsOf("https", p.HTTPSListen)
	if err != nil {
		return vhostTLS{}, err
	}
	t := vhostTLS{Listen: listen, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	if _, port, _ := net.SplitHostPort(p.HTTPSListen); port != "443" {
		t.Port = ":" + port
	}
	// Certificate files are CertDir/<canonical domain>.{crt,key}.
	for _, path := range []string{w.CertDir, t.Params, t.Challenge} {
		if err := safePath(path); err != nil {
			return vhostTLS{}, fmt.Errorf("web: %w", err)
		}
	}
	return t, nil
}

// dialAddr is where a readiness probe connects for HTTPListen.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
