package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// Webmail.
//
// Roundcube (Debian's roundcube-core with roundcube-sqlite3) is served at
// webmail.DOMAIN by the node's nginx, through the web module (a "service
// site": a server block and a PHP-FPM pool of its own, committed, tested
// and reloaded with the accounts' sites). The pool runs as WebmailUser, a
// system user that is no account's and not nginx's, and points Roundcube
// at the agent's own configuration directory (ROUNDCUBE_CONFIG_DIR): the
// distribution's /etc/roundcube is read (defaults) and never written, and
// its config.inc.php (root:www-data 0640) is not readable by the pool.
// Roundcube logs in against Dovecot's IMAP on loopback and sends through
// Exim's submission port with STARTTLS and the login's own credentials.

// webmailService is the web module's service name of Roundcube.
const webmailService = "webmail"

// webmailState is the module's webmail part: the web module it serves
// through and whether Roundcube's files are laid out.
type webmailState struct {
	web *web.Module

	mu    sync.Mutex
	ready string // WebmailConfigDir of the last successful setup
}

// UseWeb lets the module serve webmail through w, the web module of the
// same agent. Without it webmail is unsupported on this node.
func (m *Module) UseWeb(w *web.Module) { m.webmail.web = w }

// webmailHost is the server name of a domain's webmail.
func webmailHost(domain string) string { return "webmail." + domain }

// setupWebmail lays out Roundcube's configuration, database and
// directories, once per agent (again after a failure).
func (m *Module) setupWebmail(ctx context.Context, env *actions.Env) error {
	wm := &m.webmail
	wm.mu.Lock()
	defer wm.mu.Unlock()
	mp := env.Profile.Mail()
	if wm.ready == mp.WebmailConfigDir {
		return nil
	}
	if _, err := os.Stat(filepath.Join(mp.RoundcubeDir, "index.php")); err != nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "webmail: Roundcube is not installed on this node (%s)", mp.RoundcubeDir)
	}
	if _, err := os.Stat(mp.Sqlite3); err != nil {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "webmail: sqlite3 is not installed on this node (%s)", mp.Sqlite3)
	}
	uid, gid, err := ensureSystemUser(ctx, env.Profile.Useradd, mp.WebmailUser)
	if err != nil {
		return fmt.Errorf("webmail: %w", err)
	}
	l, err := parseListeners(env.Profile)
	if err != nil {
		return fmt.Errorf("webmail: %w", err)
	}
	if env.DataDir == "" {
		return errors.New("webmail: the agent has no data directory for the des_key")
	}
	key, err := desKey(env.DataDir)
	if err != nil {
		return fmt.Errorf("webmail: des_key: %w", err)
	}
	state := mp.WebmailStateDir
	dirs := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{mp.WebmailConfigDir, 0o750, 0, gid},
		{state, 0o750, 0, gid},
		{filepath.Join(state, "db"), 0o700, uid, gid},
		{filepath.Join(state, "temp"), 0o700, uid, gid},
		{filepath.Join(state, "logs"), 0o700, uid, gid},
	}
	for _, d := range dirs {
		if err := mkdirPublicParents(env.Profile.Prefix, d.path); err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
	}
	cr, err := os.OpenRoot(mp.WebmailConfigDir)
	if err != nil {
		return fmt.Errorf("webmail: %w", err)
	}
	defer cr.Close()
	// Roundcube reads defaults.inc.php and mimetypes.php from its one
	// configuration directory: copies of the distribution's.
	for _, name := range []string{"defaults.inc.php", "mimetypes.php"} {
		b, err := os.ReadFile(filepath.Join(mp.RoundcubeDefaults, name))
		if err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
		if err := writeIfChanged(cr, name, b, 0o644, nil); err != nil {
			return fmt.Errorf("webmail: %w", err)
		}
	}
	db := filepath.Join(state, "db", "roundcube.db")
	conf, err := renderRoundcube(roundcubeInput{
		DB:      db,
		IMAP:    l.imap.dial(),
		SMTP:    l.submission.dial(),
		DesKey:  key,
		TempDir: filepath.Join(state, "temp"),
		LogDir:  filepath.Join(state, "logs"),
	})
	if err != nil {
		return fmt.Errorf("webmail: %w", err)
	}
	if err := writeIfChanged(cr, "config.inc.php", []byte(conf), 0o640, &atomicfile.Owner{UID: 0, GID: gid}); err != nil {
		return fmt.Errorf("webmail: %w", err)
	}
	if err := initRoundcubeDB(ctx, mp.Sqlite3, mp.RoundcubeSQL, db, uid, gid); err != nil {
		return fmt.Errorf("webmail: database: %w", err)
	}
	wm.ready = mp.WebmailConfigDir
	return nil
}

func writeIfChanged(r *os.Root, name string, data []byte, mode os.FileMode, own *atomicfile.Owner) error {
	if old, err := r.ReadFile(name); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return atomicfile.Write(r, name, data, mode, own)
}

// desKey returns the node's Roundcube des_key (24 characters, from 18
// random bytes), made once and kept in the agent's data directory. It
// encrypts the IMAP password in Roundcube's session; it is never logged.
func desKey(dataDir string) (string, error) {
	r, err := os.OpenRoot(dataDir)
	if err != nil {
		return "", err
	}
	defer r.Close()
	const name = "webmail-des-key"
	b, err := r.ReadFile(name)
	if err == nil {
		k := strings.TrimSpace(string(b))
		if len(k) == 24 && validKeyChars(k) {
			return k, nil
		}
		return "", errors.New("the stored key is malformed")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var raw [18]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	k := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := atomicfile.Write(r, name, []byte(k+"\n"), 0o600, nil); err != nil {
		return "", err
	}
	return k, nil
}

func validKeyChars(k string) bool {
	return strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == ""
}

// ensureSystemUser returns the IDs of name, creating it as a system user
// without home or login shell when it does not exist.
func ensureSystemUser(ctx context.Context, useradd, name string) (int, int, error) {
	if uid, gid, err := lookupIDs(name); err == nil {
		return uid, gid, nil
	} else if !errors.As(err, new(user.UnknownUserError)) {
		return 0, 0, err
	}
	out, err := exec.CommandContext(ctx, useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
		"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("useradd %s: %w: %s", name, err, tail(out))
	}
	return lookupIDs(name)
}

// initRoundcubeDB creates Roundcube's SQLite database with its schema
// unless it exists: Roundcube 1.6 does not create its schema itself. The
// schema goes to a temporary file first, so that a failure leaves no
// half-made database behind.
func initRoundcubeDB(ctx context.Context, sqlite3, schema, db string, uid, gid int) error {
	if _, err := os.Stat(db); err == nil {
		return nil
	}
	sql, err := os.Open(schema)
	if err != nil {
		return err
	}
	defer sql.Close()
	tmp := db + ".new"
	_ = os.Remove(tmp)
	cmd := exec.CommandContext(ctx, sqlite3, "-batch", "-bail", tmp)
	cmd.Stdin = sql
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%s: %w: %s", sqlite3, err, tail(out))
	}
	if err := os.Chown(tmp, uid, gid); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, db)
}

type roundcubeInput struct {
	DB, IMAP, SMTP, DesKey, TempDir, LogDir string
}

// renderRoundcube renders config.inc.php. Every value is a profile path,
// a loopback address or the generated key, none of which holds a quote
// or a backslash; one that does is refused.
func renderRoundcube(in roundcubeInput) (string, error) {
	for _, v := range []string{in.DB, in.IMAP, in.SMTP, in.DesKey, in.TempDir, in.LogDir} {
		if strings.ContainsAny(v, "'\\\n\r\x00") {
			return "", errors.New("a configuration value holds a quote, backslash or control byte")
		}
	}
	q := func(s string) string { return "'" + s + "'" }
	return `<?php
// Written by the npanel agent; changes are overwritten.
$config = [];
$config['db_dsnw'] = ` + q("sqlite:///"+in.DB+"?mode=0600") + `;
// Dovecot's IMAP on loopback (a secure connection to Dovecot).
$config['imap_host'] = ` + q(in.IMAP) + `;
// Exim's submission port, STARTTLS, as the logged-in user. The node's
// mail certificate is self-signed and the connection never leaves the
// host.
$config['smtp_host'] = ` + q("tls://"+in.SMTP) + `;
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['smtp_conn_options'] = ['ssl' => ['verify_peer' => false, 'verify_peer_name' => false, 'allow_self_signed' => true]];
$config['des_key'] = ` + q(in.DesKey) + `;
$config['temp_dir'] = ` + q(in.TempDir+"/") + `;
$config['log_dir'] = ` + q(in.LogDir+"/") + `;
$config['log_driver'] = 'file';
$config['enable_installer'] = false;
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['product_name'] = 'Webmail';
$config['support_url'] = '';
$config['enable_spellcheck'] = false;
$config['login_autocomplete'] = 0;
$config['auto_create_user'] = true;
$config['username_domain'] = '';
$config['mail_domain'] = '%d';
`, nil
}

// ensureWebmail serves (on) or stops serving the domain's webmail.
func (m *Module) ensureWebmail(ctx context.Context, env *actions.Env, domain string, on bool) (bool, error) {
	w := m.webmail.web
	if w == nil {
		if !on {
			return false, nil
		}
		return false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "webmail: this agent serves no websites (no web module)")
	}
	if !on {
		return w.RemoveServiceSite(ctx, env, webmailService, webmailHost(domain))
	}
	if err := m.setupWebmail(ctx, env); err != nil {
		return false, err
	}
	mp := env.Profile.Mail()
	return w.EnsureServiceSite(ctx, env, web.ServiceSite{
		Service:   webmailService,
		Domain:    webmailHost(domain),
		Root:      mp.RoundcubeDir,
		Deny:      []string{"config", "temp", "logs", "SQL", "bin", "installer", "README", "INSTALL", "LICENSE", "CHANGELOG", "UPGRADING", "composer.json", "composer.lock"},
		MaxBodyMB: 25,
		Pool: web.ServicePool{
			User: mp.WebmailUser,
			Env: map[string]string{
				"ROUNDCUBE_CONFIG_DIR": mp.WebmailConfigDir,
				"TMPDIR":               filepath.Join(mp.WebmailStateDir, "temp"),
			},
			AdminValues: map[string]string{
				"upload_tmp_dir":      filepath.Join(mp.WebmailStateDir, "temp"),
				"session.save_path":   filepath.Join(mp.WebmailStateDir, "temp"),
				"sys_temp_dir":        filepath.Join(mp.WebmailStateDir, "temp"),
				"error_log":           filepath.Join(mp.WebmailStateDir, "logs", "php-error.log"),
				"upload_max_filesize": "25M",
				"post_max_size":       "26M",
				"memory_limit":        "128M",
				// A flaw in Roundcube then reads no account's home, no
				// other site's files and no key of the node's.
				"open_basedir": strings.Join(append(slices.Clone(mp.RoundcubeCodeDirs), mp.WebmailConfigDir+"/", mp.WebmailStateDir+"/"), ":"),
			},
		},
	})
}
