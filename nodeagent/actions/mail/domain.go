package mail

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Action names.
const (
	EnsureDomainName  = "mail.ensure_domain"
	DeleteDomainName  = "mail.delete_domain"
	EnsureMailboxName = "mail.ensure_mailbox"
	DeleteMailboxName = "mail.delete_mailbox"
	UsageName         = "mail.usage"
	ReadLogName       = "mail.read_log"
	ScanName          = "mail.scan_mailbox"
	QueueName         = "mail.queue"
	FlushQueueName    = "mail.flush_queue"
	TrainName         = "mail.train"
)

// Files in a domain's directory under DomainsDir.
const (
	ownerFile     = "owner"     // the account's user name
	mailboxesFile = "mailboxes" // lsearch keys: local parts of mailboxes
	aliasesFile   = "aliases"   // lsearch: local: targets; "*" the catch-all
	suspendedFile = "suspended" // exists while the account is suspended
	dkimFile      = "dkim"      // lsearch "selector: NAME" of the signing key
	spamFile      = "spam"      // the spam settings (score, action)
	nologinFile   = "nologin"   // lsearch keys: mailboxes whose logins are off
)

// EnsureMailDomain converges one mail domain.
type EnsureMailDomain struct {
	m              *Module
	req            *agentpb.EnsureMailDomainAction
	allowTestNames bool
}

// DeleteMailDomain stops serving one mail domain.
type DeleteMailDomain struct {
	m              *Module
	req            *agentpb.DeleteMailDomainAction
	allowTestNames bool
}

// NewEnsureMailDomain builds the action from its wire form.
func (m *Module) NewEnsureMailDomain(req *agentpb.EnsureMailDomainAction) *EnsureMailDomain {
	return &EnsureMailDomain{m: m, req: req}
}

// NewDeleteMailDomain builds the action from its wire form.
func (m *Module) NewDeleteMailDomain(req *agentpb.DeleteMailDomainAction) *DeleteMailDomain {
	return &DeleteMailDomain{m: m, req: req}
}

func (a *EnsureMailDomain) Name() string        { return EnsureDomainName }
func (a *DeleteMailDomain) Name() string        { return DeleteDomainName }
func (a *EnsureMailDomain) AllowTestUsernames() { a.allowTestNames = true }
func (a *DeleteMailDomain) AllowTestUsernames() { a.allowTestNames = true }

// Validate implements actions.Action.
func (a *EnsureMailDomain) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	if err := validate.CanonicalDomain(r.Domain); err != nil {
		return err
	}
	if len(r.Aliases) > 10000 {
		return fmt.Errorf("%d aliases; at most 10000", len(r.Aliases))
	}
	seen := map[string]bool{}
	for _, al := range r.Aliases {
		l, err := validate.MailLocalPart(al.GetLocalPart())
		if err != nil {
			return err
		}
		if l != al.GetLocalPart() {
			return fmt.Errorf("alias %q is not lower case", al.GetLocalPart())
		}
		if seen[l] {
			return fmt.Errorf("alias %q is listed twice", l)
		}
		seen[l] = true
		if len(al.Targets) == 0 || len(al.Targets) > validate.MaxAliasTargets {
			return fmt.Errorf("alias %q: 1 to %d targets", l, validate.MaxAliasTargets)
		}
		for _, t := range al.Targets {
			c, err := validate.MailTarget(t)
			if err != nil {
				return err
			}
			if c != t {
				return fmt.Errorf("alias %q: target %q is not canonical", l, t)
			}
		}
	}
	if _, err := validate.CatchAll(r.CatchAll, r.Domain); err != nil {
		return err
	}
	if s := r.Spam; s != nil && s.Enabled {
		if err := validate.SpamScoreTenths(int(s.ScoreTenths)); err != nil {
			return err
		}
		if _, ok := agentpb.MailSpamAction_name[int32(s.Action)]; !ok {
			return fmt.Errorf("unknown spam action %d", s.Action)
		}
	}
	signing := 0
	sel := map[string]bool{}
	for _, k := range r.DkimSelectors {
		if err := validate.DKIMSelector(k.GetSelector()); err != nil {
			return err
		}
		if sel[k.Selector] {
			return fmt.Errorf("dkim selector %q is listed twice", k.Selector)
		}
		sel[k.Selector] = true
		if k.Signing {
			signing++
		}
	}
	if len(sel) > 8 {
		return errors.New("at most 8 dkim selectors")
	}
	if signing > 1 {
		return errors.New("at most one dkim selector signs")
	}
	return nil
}

// Validate implements actions.Action.
func (a *DeleteMailDomain) Validate() error {
	if a.req == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(a.req.Username, a.allowTestNames); err != nil {
		return err
	}
	return validate.CanonicalDomain(a.req.Domain)
}

// domainRoot opens the module's lookup directory of the domain, creating it
// when create is set. Everything under it is written through the root.
func domainRoot(env *actions.Env, domain string, create bool) (*os.Root, error) {
	mp := env.Profile.Mail()
	if create {
		_, gid, err := lookupIDs(mp.EximGroup)
		if err != nil {
			return nil, err
		}
		dr, err := os.OpenRoot(mp.DomainsDir)
		if err != nil {
			return nil, err
		}
		defer dr.Close()
		if err := dr.Mkdir(domain, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if err := dr.Chown(domain, 0, gid); err != nil {
			return nil, err
		}
	}
	return os.OpenRoot(filepath.Join(mp.DomainsDir, domain))
}

// checkOwner refuses a domain another account holds. It returns whether
// the domain is served at all.
func checkOwner(env *actions.Env, domain, username string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(env.Profile.Mail().DomainsDir, domain, ownerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if owner := strings.TrimSpace(string(b)); owner != username {
		return true, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "mail domain %s belongs to another account", domain)
	}
	return true, nil
}

// Apply implements actions.Action.
func (a *EnsureMailDomain) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	r := a.req
	unlock, err := a.m.locks.Lock(ctx, "domain:"+r.Domain)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := checkOwner(env, r.Domain, r.Username); err != nil {
		return nil, err
	}
	mp := env.Profile.Mail()
	_, eximGID, err := lookupIDs(mp.EximGroup)
	if err != nil {
		return nil, err
	}
	_, dovecotGID, err := lookupIDs(mp.DovecotUser)
	if err != nil {
		return nil, err
	}
	// Dovecot's passwd-file first: Exim accepts mail for the domain only
	// once its directory (below) exists.
	if err := ensureUsersDir(mp.UsersDir, r.Domain, dovecotGID); err != nil {
		return nil, err
	}
	root, err := domainRoot(env, r.Domain, true)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	res := &agentpb.MailDomainResult{Domain: r.Domain}
	own := &atomicfile.Owner{UID: 0, GID: eximGID}
	write := func(name, data string) error {
		old, err := root.ReadFile(name)
		if err == nil && string(old) == data {
			return nil
		}
		res.Changed = true
		return atomicfile.Write(root, name, []byte(data), 0o640, own)
	}
	if err := write(ownerFile, r.Username+"\n"); err != nil {
		return nil, err
	}
	if _, err := root.Stat(mailboxesFile); errors.Is(err, fs.ErrNotExist) {
		if err := write(mailboxesFile, ""); err != nil {
			return nil, err
		}
	}
	aliases, err := renderAliases(r)
	if err != nil {
		return nil, err
	}
	if err := write(aliasesFile, aliases); err != nil {
		return nil, err
	}
	if err := write(spamFile, renderSpam(r.Spam)); err != nil {
		return nil, err
	}
	if r.Suspended {
		err = write(suspendedFile, "")
	} else if err = root.Remove(suspendedFile); err == nil {
		res.Changed = true
	} else if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	keys, changed, err := ensureDKIM(mp.DKIMDir, r.Domain, r.DkimSelectors, eximGID)
	if err != nil {
		return nil, err
	}
	res.DkimKeys = keys
	res.Changed = res.Changed || changed
	signing := ""
	for _, k := range r.DkimSelectors {
		if k.Signing {
			signing = "selector: " + k.Selector + "\n"
		}
	}
	if signing == "" {
		if err := root.Remove(dkimFile); err == nil {
			res.Changed = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	} else if err := write(dkimFile, signing); err != nil {
		return nil, err
	}
	// Roundcube at webmail.DOMAIN, through the node's nginx (webmail.go).
	changed, err = a.m.ensureWebmail(ctx, env, r.Domain, r.Webmail)
	if err != nil {
		return nil, err
	}
	res.Changed = res.Changed || changed
	return res, nil
}

// renderAliases renders the domain's alias lookup file. Validate refused
// every byte that is syntax in it (':', newlines, '|', '/', '"'): keys
// are dot-atoms and targets addresses.
func renderAliases(r *agentpb.EnsureMailDomainAction) (string, error) {
	var b strings.Builder
	als := slices.Clone(r.Aliases)
	slices.SortFunc(als, func(x, y *agentpb.MailAlias) int { return strings.Compare(x.LocalPart, y.LocalPart) })
	for _, al := range als {
		fmt.Fprintf(&b, "%s: %s\n", al.LocalPart, strings.Join(al.Targets, ", "))
	}
	ca, err := validate.CatchAll(r.CatchAll, r.Domain)
	if err != nil {
		return "", err
	}
	switch ca {
	case "":
	case validate.CatchAllFail:
		b.WriteString("*: :fail: no such user here\n")
	case validate.CatchAllBlackhole:
		b.WriteString("*: :blackhole:\n")
	default:
		fmt.Fprintf(&b, "*: %s@%s\n", ca, r.Domain)
	}
	return b.String(), nil
}

func renderSpam(s *agentpb.MailSpamSettings) string {
	if s == nil || !s.Enabled {
		return "enabled: no\n"
	}
	return fmt.Sprintf("enabled: yes\nscore: %d\naction: %s\n", s.ScoreTenths, strings.ToLower(strings.TrimPrefix(s.Action.String(), "MAIL_SPAM_ACTION_")))
}

// ensureUsersDir creates the directory of the domain's passwd-files.
func ensureUsersDir(usersDir, domain string, dovecotGID int) error {
	ur, err := os.OpenRoot(usersDir)
	if err != nil {
		return err
	}
	defer ur.Close()
	if err := ur.Mkdir(domain, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return ur.Chown(domain, 0, dovecotGID)
}

// ensureDKIM makes a 2048-bit RSA key for every selector that has none,
// removes the keys of selectors no longer listed and returns the TXT value
// of each key held.
func ensureDKIM(dir, domain string, sels []*agentpb.MailDKIMSelector, eximGID int) ([]*agentpb.MailDKIMKey, bool, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, false, err
	}
	defer root.Close()
	changed := false
	want := map[string]bool{}
	var out []*agentpb.MailDKIMKey
	for _, s := range sels {
		name := domain + "." + s.Selector + ".key"
		want[name] = true
		pemBytes, err := root.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return nil, false, err
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return nil, false, err
			}
			pemBytes = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			if err := atomicfile.Write(root, name, pemBytes, 0o640, &atomicfile.Owner{UID: 0, GID: eximGID}); err != nil {
				return nil, false, err
			}
			changed = true
		} else if err != nil {
			return nil, false, err
		}
		txt, err := dkimTXT(pemBytes)
		if err != nil {
			return nil, false, fmt.Errorf("dkim key %s: %w", name, err)
		}
		out = append(out, &agentpb.MailDKIMKey{Selector: s.Selector, Txt: txt, Signing: s.Signing})
	}
	ents, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return nil, false, err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, domain+".") && strings.HasSuffix(n, ".key") && !want[n] {
			// Only this domain's: the selector part holds no '.'.
			sel := strings.TrimSuffix(strings.TrimPrefix(n, domain+"."), ".key")
			if strings.Contains(sel, ".") {
				continue
			}
			if err := root.Remove(n); err != nil {
				return nil, false, err
			}
			changed = true
		}
	}
	return out, changed, nil
}

// dkimTXT is the DNS TXT value of a DKIM private key's public half.
func dkimTXT(pemBytes []byte) (string, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return "", errors.New("not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return "", err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return "", errors.New("not an RSA key")
	}
	pub, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		return "", err
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub), nil
}

// Apply implements actions.Action.
func (a *DeleteMailDomain) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	r := a.req
	unlock, err := a.m.locks.Lock(ctx, "domain:"+r.Domain)
	if err != nil {
		return nil, err
	}
	defer unlock()
	served, err := checkOwner(env, r.Domain, r.Username)
	if err != nil {
		return nil, err
	}
	res := &agentpb.MailDomainResult{Domain: r.Domain}
	if !served {
		return res, nil
	}
	n, err := countUsers(env.Profile.Mail().UsersDir, r.Domain)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "mail domain %s still has %d mailboxes: delete them first", r.Domain, n)
	}
	if err := a.m.removeDomain(ctx, env, r.Domain); err != nil {
		return nil, err
	}
	res.Changed = true
	return res, nil
}

// removeDomain stops serving domain: its Dovecot users first (so a
// removal cut short never leaves logins of a domain no longer listed),
// then webmail, the mail. certificate, Exim's entries and the DKIM keys.
// The maildirs stay in the account's home. Callers hold the domain's lock.
func (m *Module) removeDomain(ctx context.Context, env *actions.Env, domain string) error {
	mp := env.Profile.Mail()
	ur, err := os.OpenRoot(mp.UsersDir)
	if err != nil {
		return err
	}
	defer ur.Close()
	if err := ur.RemoveAll(domain); err != nil {
		return err
	}
	if _, err := m.ensureWebmail(ctx, env, domain, false); err != nil {
		return err
	}
	// Whoever serves mail for the domain next must not get this owner's
	// certificate and key.
	if _, err := m.RemoveCertificate(ctx, env, "mail."+domain); err != nil {
		return err
	}
	// Exim last: once the directory is gone the domain is not local, and
	// RemoveOwner finds its domains there when it is retried.
	if _, _, err := ensureDKIM(mp.DKIMDir, domain, nil, 0); err != nil {
		return err
	}
	dr, err := os.OpenRoot(mp.DomainsDir)
	if err != nil {
		return err
	}
	defer dr.Close()
	return dr.RemoveAll(domain)
}

// RemoveOwner stops serving every mail domain of username, for the
// deletion of the account (its maildirs are archived with its home). A
// node without mail has nothing to remove.
func (m *Module) RemoveOwner(ctx context.Context, env *actions.Env, username string) error {
	mp := env.Profile.Mail()
	ents, err := os.ReadDir(mp.DomainsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		domain := e.Name()
		unlock, err := m.locks.Lock(ctx, "domain:"+domain)
		if err != nil {
			return err
		}
		served, err := checkOwner(env, domain, username)
		if err == nil && served {
			err = m.removeDomain(ctx, env, domain)
			removed = true
		} else if actions.ReasonOf(err) == agentpb.ErrorReason_ERROR_REASON_CONFLICT {
			err = nil // another account's domain
		}
		unlock()
		if err != nil {
			return fmt.Errorf("mail domain %s: %w", domain, err)
		}
	}
	// The account's Bayes database goes with it: a later account of the
	// same name must not start from its training (nor its Message-IDs).
	if err := removeBayes(mp.SpamdBayesDir, username); err != nil {
		return err
	}
	if !removed {
		return nil
	}
	return m.flushAuthCache(ctx, env)
}

// removeBayes removes username's directory of spamd's Bayes databases.
func removeBayes(dir, username string) error {
	if username == "" || username == "." || username == ".." || strings.ContainsRune(username, '/') {
		return fmt.Errorf("remove the Bayes database: bad user name %q", username)
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.RemoveAll(username); err != nil {
		return fmt.Errorf("remove the Bayes database of %s: %w", username, err)
	}
	return nil
}
