package platform

import (
	"os"
	"path/filepath"
	"strings"
)

// WebPaths says where nginx and PHP-FPM live on one distro and which of their
// directories the web module writes to. Binaries are the distro's and never
// move; everything the agent writes (configuration, sockets, logs, state)
// moves under the profile's Prefix when it is set.
type WebPaths struct {
	// Supervised is true when the agent runs the daemons itself under its
	// prefix and owns their main configuration files.
	Supervised bool

	// Nginx is the nginx binary.
	Nginx string
	// NginxPrefix is nginx's -p directory (supervised mode only).
	NginxPrefix string
	// NginxConf is the main nginx configuration. The agent writes it only
	// in supervised mode; in production it is the distro's file.
	NginxConf string
	// NginxPID is the master's pid file (supervised mode writes it there).
	NginxPID string
	// VhostDir is the directory the main configuration includes and the
	// agent writes one server block per domain to (npanel-*.conf).
	VhostDir string
	// MimeTypes is the distro's mime.types, included by the supervised
	// main configuration.
	MimeTypes string
	// NginxLogDir holds nginx's own logs; DomainLogDir the per-domain
	// access and error logs (root's, so that nginx's root master never
	// opens a log path an account could redirect with a symlink).
	NginxLogDir  string
	DomainLogDir string
	// NginxTempDir holds nginx's *_temp_path directories (supervised).
	NginxTempDir string
	// NginxUnit is the systemd unit in production.
	NginxUnit string

	// WebUser and WebGroup run nginx's workers; sites' document roots are
	// given to WebGroup so that nginx, and no other account, can read them.
	WebUser  string
	WebGroup string

	// SocketDir holds the PHP-FPM pools' sockets.
	SocketDir string
	// SuspendedDir holds the page suspended accounts' sites answer with.
	SuspendedDir string
	// StateDir is the web module's own state (supervised and production).
	StateDir string
	// RunDir holds pid files of supervised daemons.
	RunDir string
	// CertDir holds the sites' certificate chains and keys (root's, 0700).
	CertDir string
	// ACMEChallengeDir holds HTTP-01 tokens that every vhost serves.
	ACMEChallengeDir string

	// PHP lists the PHP-FPM builds this distro may have, installed or
	// not, preferred first; see PHPFPM.Installed.
	PHP []PHPFPM
}

// PHPFPM is one PHP-FPM build of the distro.
type PHPFPM struct {
	// Version is the PHP release line, "8.2". Empty for a binary whose
	// version is only known by asking it (AlmaLinux's AppStream php-fpm,
	// whose module stream decides the version).
	Version string
	// Binary is the php-fpm binary.
	Binary string
	// Conf is the main configuration (written by the agent when
	// supervised); PoolDir the directory it includes pools from.
	Conf    string
	PoolDir string
	// PID and ErrorLog are the master's files in supervised mode.
	PID      string
	ErrorLog string
	// Unit is the systemd unit in production.
	Unit string
}

// Installed reports whether the build's binary exists.
func (f PHPFPM) Installed() bool {
	fi, err := os.Stat(f.Binary)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// phpLines are the PHP release lines a node may carry: the distro's own
// and those of the usual third-party repositories (sury.org on Debian,
// remi on AlmaLinux).
var phpLines = []string{"7.4", "8.0", "8.1", "8.2", "8.3", "8.4", "8.5"}

// Web returns the web paths of this profile.
func (p *Profile) Web() WebPaths {
	root := func(path string) string { return filepath.Join("/", p.Prefix, path) }
	w := WebPaths{
		Supervised:   p.Prefix != "",
		Nginx:        "/usr/sbin/nginx",
		NginxConf:    root("etc/nginx/nginx.conf"),
		MimeTypes:    "/etc/nginx/mime.types",
		VhostDir:     root("etc/nginx/conf.d"),
		NginxLogDir:  root("var/log/nginx"),
		DomainLogDir: root("var/log/nginx/domains"),
		NginxTempDir: root("var/lib/nginx"),
		NginxUnit:    "nginx.service",
		SuspendedDir: root("var/lib/npanel/web/suspended"),
		StateDir:     root("var/lib/npanel/web"),
		RunDir:       root("run"),
		NginxPID:     root("run/nginx.pid"),
		// Keys are root's (nginx's master reads them before dropping
		// privileges); tokens must be readable by the workers.
		CertDir:          root("var/lib/npanel/certs"),
		ACMEChallengeDir: root("var/lib/npanel/acme-challenge"),
	}
	if w.Supervised {
		w.NginxPrefix = root("etc/nginx") + "/"
	}
	switch p.Name {
	case NameAlma9:
		w.WebUser, w.WebGroup = "nginx", "nginx"
		w.SocketDir = root("run/php-fpm")
		// AppStream's php-fpm first: it is the distro's build.
		w.PHP = append(w.PHP, PHPFPM{
			Binary:   "/usr/sbin/php-fpm",
			Conf:     root("etc/php-fpm.conf"),
			PoolDir:  root("etc/php-fpm.d"),
			PID:      root("run/php-fpm/php-fpm.pid"),
			ErrorLog: root("var/log/php-fpm/error.log"),
			Unit:     "php-fpm.service",
		})
		for _, v := range phpLines {
			nodot := strings.ReplaceAll(v, ".", "")
			remi := "opt/remi/php" + nodot
			w.PHP = append(w.PHP, PHPFPM{
				Version:  v,
				Binary:   "/" + remi + "/root/usr/sbin/php-fpm",
				Conf:     root("etc/" + remi + "/php-fpm.conf"),
				PoolDir:  root("etc/" + remi + "/php-fpm.d"),
				PID:      root("run/php" + nodot + "-fpm.pid"),
				ErrorLog: root("var/log/php" + nodot + "-fpm.log"),
				Unit:     "php" + nodot + "-php-fpm.service",
			})
		}
	default:
		w.WebUser, w.WebGroup = "www-data", "www-data"
		w.SocketDir = root("run/php")
		for _, v := range phpLines {
			w.PHP = append(w.PHP, PHPFPM{
				Version:  v,
				Binary:   "/usr/sbin/php-fpm" + v,
				Conf:     root("etc/php/" + v + "/fpm/php-fpm.conf"),
				PoolDir:  root("etc/php/" + v + "/fpm/pool.d"),
				PID:      root("run/php/php" + v + "-fpm.pid"),
				ErrorLog: root("var/log/php" + v + "-fpm.log"),
				Unit:     "php" + v + "-fpm.service",
			})
		}
	}
	return w
}
