package mail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Certificates of mail hosts, chosen by SNI.
//
// Exim and Dovecot serve the node's self-signed certificate (TLSDir) unless
// a client names a host (mail.DOMAIN) that has its own. Those live in
// TLSDir/sni as HOST.crt and HOST.key (0640, root:Exim's group: Exim reads
// keys after giving up root). Two index files are rebuilt from that
// directory after every change, so they never disagree with it:
//
//   - sni.map, an lsearch file "HOST: TLSDir/sni/HOST" that Exim's
//     tls_certificate and tls_privatekey look ${lc:$tls_in_sni} up in. The
//     path comes from the file, never from the client's SNI (which is
//     tainted, and only ever a lookup key); a name not in it falls back to
//     the node's certificate.
//   - sni-dovecot.conf, one local_name block per host, included by
//     Dovecot's configuration.
//
// Changes are group-committed (replaceCert): checked with doveconf, rolled
// back when refused, then Dovecot and Exim are reloaded once per batch.
// Exim reads the files per connection, so its reload only makes sure no
// long-lived process keeps old credentials.

func sniDir(mp platform.MailPaths) string     { return filepath.Join(mp.TLSDir, "sni") }
func sniMapFile(mp platform.MailPaths) string { return filepath.Join(mp.TLSDir, "sni.map") }
func sniDovecotFile(mp platform.MailPaths) string {
	return filepath.Join(mp.TLSDir, "sni-dovecot.conf")
}

// InstallCertificate makes Exim and Dovecot serve chainPEM (leaf first) and
// keyPEM for clients that ask for host (mail.DOMAIN) by SNI.
func (m *Module) InstallCertificate(ctx context.Context, env *actions.Env, host string, chainPEM, keyPEM []byte) (reloaded []string, err error) {
	if err := validate.CanonicalDomain(host); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mail: certificate host: %v", err)
	}
	chain, key, err := pki.NormalizeKeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mail: certificate of %s: %v", host, err)
	}
	return m.replaceCert(ctx, env, host, chain, key)
}

// RemoveCertificate stops serving host's own certificate: its clients get
// the node's again.
func (m *Module) RemoveCertificate(ctx context.Context, env *actions.Env, host string) (reloaded []string, err error) {
	if err := validate.CanonicalDomain(host); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mail: certificate host: %v", err)
	}
	return m.replaceCert(ctx, env, host, nil, nil)
}

// replaceCert writes (chain, key) for host, or removes host's pair when
// both are nil, and has Exim and Dovecot serve the result.
//
// Changes are group-committed: callers queue their change, and one
// goroutine writes everything queued, rebuilds the indexes, checks
// Dovecot's configuration and reloads both daemons once for the whole
// batch, so a burst of a thousand installations costs a handful of
// reloads. A batch Dovecot refuses is rolled back and its changes retried
// one at a time, so a bad pair fails alone.
func (m *Module) replaceCert(ctx context.Context, env *actions.Env, host string, chain, key []byte) ([]string, error) {
	if !installed(env) {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "mail: Exim and Dovecot are not installed on this node")
	}
	if env.Services == nil {
		return nil, errors.New("mail: no service manager to reload Exim and Dovecot with")
	}
	j := &sniJob{env: env, host: host, chain: chain, key: key, done: make(chan struct{})}
	m.sniMu.Lock()
	m.sniPending = append(m.sniPending, j)
	if !m.sniRunning {
		m.sniRunning = true
		go m.sniLoop()
	}
	m.sniMu.Unlock()
	select {
	case <-j.done:
	case <-ctx.Done():
		// The change may still be committed; the caller retries.
		return nil, ctx.Err()
	}
	return j.reloaded, j.err
}

// sniJob is one queued certificate change.
type sniJob struct {
	env        *actions.Env
	host       string
	chain, key []byte // nil: remove

	done     chan struct{}
	err      error
	changed  bool
	reloaded []string
}

func (m *Module) sniLoop() {
	for {
		m.sniMu.Lock()
		batch := m.sniPending
		m.sniPending = nil
		if len(batch) == 0 {
			m.sniRunning = false
			m.sniMu.Unlock()
			return
		}
		m.sniMu.Unlock()
		// One change per host and one node's paths per batch; the rest
		// waits for the next.
		var now, later []*sniJob
		seen := make(map[string]bool)
		dir := batch[0].env.Profile.Mail().TLSDir
		for _, j := range batch {
			if seen[j.host] || j.env.Profile.Mail().TLSDir != dir {
				later = append(later, j)
				continue
			}
			seen[j.host] = true
			now = append(now, j)
		}
		if len(later) > 0 {
			m.sniMu.Lock()
			m.sniPending = append(later, m.sniPending...)
			m.sniMu.Unlock()
		}
		m.sniCommit(now)
	}
}

func (m *Module) sniCommit(batch []*sniJob) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := batch[0].env
	mp := env.Profile.Mail()
	finish := func(js []*sniJob, err error) {
		for _, j := range js {
			if j.err == nil {
				j.err = err
			}
			close(j.done)
		}
	}
	err := sniApply(ctx, mp, batch)
	if err != nil && len(batch) > 1 {
		for _, j := range batch {
			j.err = sniApply(ctx, mp, []*sniJob{j})
		}
		err = nil
	} else if err != nil {
		batch[0].err = err
	}
	// A reload that failed is owed until one succeeds: the retried change
	// finds its files in place and would otherwise report them served.
	reload := m.sniOwed
	for _, j := range batch {
		reload = reload || j.err == nil && j.changed
	}
	if !reload {
		finish(batch, err)
		return
	}
	var reloaded []string
	var errs []error
	for _, svc := range []string{DovecotService, EximService} {
		if err := env.Services.Reload(ctx, svc); err != nil {
			errs = append(errs, fmt.Errorf("mail: reload %s: %w", svc, err))
			continue
		}
		reloaded = append(reloaded, svc)
	}
	m.sniOwed = len(errs) > 0
	for _, j := range batch {
		if j.err == nil {
			j.reloaded = reloaded
			j.err = errors.Join(errs...)
		}
	}
	finish(batch, nil)
}

// sniApply writes the jobs' pairs (key first), rebuilds the indexes and
// has doveconf check the result; on any failure every file is put back.
func sniApply(ctx context.Context, mp platform.MailPaths, jobs []*sniJob) error {
	_, eximGID, err := lookupIDs(mp.EximGroup)
	if err != nil {
		return fmt.Errorf("mail: exim group: %w", err)
	}
	if err := ensureSNIDir(mp, eximGID); err != nil {
		return err
	}
	root, err := os.OpenRoot(sniDir(mp))
	if err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	defer root.Close()
	type file struct {
		name      string
		old, data []byte
		perm      os.FileMode
		own       *atomicfile.Owner
	}
	put := func(name string, data []byte, perm os.FileMode, own *atomicfile.Owner) error {
		if data == nil {
			if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return atomicfile.SyncDir(root)
		}
		return atomicfile.Write(root, name, data, perm, own)
	}
	var done []file
	rollback := func(cause error) error {
		errs := []error{cause}
		for i := len(done) - 1; i >= 0; i-- {
			f := done[i]
			if err := put(f.name, f.old, f.perm, f.own); err != nil {
				errs = append(errs, fmt.Errorf("mail: restoring %s: %w", f.name, err))
			}
		}
		if err := writeSNIIndex(mp); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	changed := false
	keyOwner := &atomicfile.Owner{UID: 0, GID: eximGID}
	for _, j := range jobs {
		j.changed = false
		for _, f := range []file{{name: j.host + ".key", data: j.key, perm: 0o640, own: keyOwner}, {name: j.host + ".crt", data: j.chain, perm: 0o644}} { // key first
			old, err := root.ReadFile(f.name)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return rollback(fmt.Errorf("mail: read %s: %w", f.name, err))
			}
			if bytes.Equal(old, f.data) && (old == nil) == (f.data == nil) {
				continue
			}
			f.old = old
			if err := put(f.name, f.data, f.perm, f.own); err != nil {
				return rollback(fmt.Errorf("mail: write %s: %w", f.name, err))
			}
			done = append(done, f)
			j.changed, changed = true, true
		}
	}
	if err := writeSNIIndex(mp); err != nil {
		return rollback(err)
	}
	if !changed {
		return nil
	}
	if out, err := exec.CommandContext(ctx, mp.Doveconf, "-n", "-c", mp.DovecotConfig).CombinedOutput(); err != nil {
		return rollback(fmt.Errorf("mail: doveconf refused the certificates (%v): %s", err, tail(out)))
	}
	return nil
}

// ensureSNIDir creates TLSDir/sni, root's and Exim's group's (0750).
func ensureSNIDir(mp platform.MailPaths, eximGID int) error {
	dir := sniDir(mp)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	if err := os.Chown(dir, 0, eximGID); err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	return nil
}

// writeSNIIndex rebuilds Exim's map and Dovecot's local_name blocks from
// the pairs in TLSDir/sni. A host's pair counts only when both files exist
// and its name is canonical.
func writeSNIIndex(mp platform.MailPaths) error {
	ents, err := os.ReadDir(sniDir(mp))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mail: %w", err)
	}
	have := make(map[string]bool)
	for _, e := range ents {
		have[e.Name()] = e.Type().IsRegular()
	}
	var hosts []string
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".crt")
		if !ok || !have[e.Name()] || !have[h+".key"] || validate.CanonicalDomain(h) != nil {
			continue
		}
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	var emap, dcf strings.Builder
	emap.WriteString("# Written by the npanel agent from " + sniDir(mp) + "; changes are overwritten.\n")
	dcf.WriteString("# Written by the npanel agent from " + sniDir(mp) + "; changes are overwritten.\n")
	for _, h := range hosts {
		base := filepath.Join(sniDir(mp), h)
		if !dovecotSafeArg(base) {
			return fmt.Errorf("mail: certificate path %q cannot be written to Dovecot's configuration", base)
		}
		fmt.Fprintf(&emap, "%s: %s\n", h, base)
		fmt.Fprintf(&dcf, "local_name %s {\n  ssl_cert = <%s.crt\n  ssl_key = <%s.key\n}\n", h, base, base)
	}
	for _, f := range []struct {
		path string
		data string
	}{{sniMapFile(mp), emap.String()}, {sniDovecotFile(mp), dcf.String()}} {
		if b, err := os.ReadFile(f.path); err == nil && string(b) == f.data {
			continue
		}
		if err := atomicfile.WriteFile(f.path, []byte(f.data), 0o644, nil); err != nil {
			return fmt.Errorf("mail: %w", err)
		}
	}
	return nil
}
