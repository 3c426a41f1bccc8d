// Package credentials implements ExportCredentialsAction: the password
// hashes of an account's mailboxes and database users, and the private
// keys of its installed certificates, sealed to another node's key, so
// that an account moved there keeps every login and every certificate
// without a secret leaving a node in clear. The hashes and keys are read
// through the mail, db and tls modules; this package only checks the
// request and seals.
package credentials

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// ExportName is the action name in metrics and logs.
const ExportName = "credentials.export"

// Bounds of one export: an account's mailboxes and database users, with
// room to spare, and a DER public key.
const (
	MaxMailboxes     = 10000
	MaxDatabaseUsers = 1000
	MaxCertificates  = 1000
	maxChainPEM      = 64 << 10
	maxKeyDER        = 1024
)

// MailHashes reads a mailbox's installed password hash (the mail module).
type MailHashes interface {
	MailboxPasswordHash(env *actions.Env, username, address string) (hash string, ok bool, err error)
}

// DatabaseHashes reads a database user's installed password hash (the db
// module).
type DatabaseHashes interface {
	UserPasswordHash(ctx context.Context, env *actions.Env, engine, owner, user string) (hash string, ok bool, err error)
}

// CertificateKeys reads the private key a site's vhost serves, as PKCS#8
// DER, when it is the key of chainPEM's leaf (the tls module).
type CertificateKeys interface {
	CertificateKey(ctx context.Context, env *actions.Env, site string, chainPEM []byte) ([]byte, error)
}

// Module builds the export action over the node's mail, db and tls
// modules.
type Module struct {
	mail  MailHashes
	db    DatabaseHashes
	certs CertificateKeys
}

// NewModule returns the module reading hashes through mail and db and
// certificate keys through certs.
func NewModule(mail MailHashes, db DatabaseHashes, certs CertificateKeys) *Module {
	return &Module{mail: mail, db: db, certs: certs}
}

// Export is ExportCredentialsAction.
type Export struct {
	m              *Module
	req            *agentpb.ExportCredentialsAction
	allowTestNames bool
	engines        []string // per database user, validated
}

var _ actions.Action = (*Export)(nil)

// NewExport builds the action from its wire form.
func (m *Module) NewExport(req *agentpb.ExportCredentialsAction) *Export {
	return &Export{m: m, req: req}
}

// Name implements actions.Action.
func (a *Export) Name() string { return ExportName }

// AllowTestUsernames implements actions.TestNameAware.
func (a *Export) AllowTestUsernames() { a.allowTestNames = true }

func engineName(e agentpb.DatabaseEngine) (string, error) {
	switch e {
	case agentpb.DatabaseEngine_DATABASE_ENGINE_UNSPECIFIED, agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB:
		return validate.EngineMariaDB, nil
	case agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL:
		return validate.EnginePostgreSQL, nil
	}
	return "", fmt.Errorf("unknown database engine %d", e)
}

// sealKey parses seal_to: a PKIX DER ECDSA public key, as node keys are.
func sealKey(der []byte) (*ecdsa.PublicKey, error) {
	if len(der) == 0 {
		return nil, errors.New("seal_to: a public key is required")
	}
	if len(der) > maxKeyDER {
		return nil, fmt.Errorf("seal_to: %d bytes; at most %d", len(der), maxKeyDER)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("seal_to: not a PKIX public key: %w", err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("seal_to: a %T cannot be sealed to (want ECDSA, a node key)", pub)
	}
	return ek, nil
}

// Validate implements actions.Action.
func (a *Export) Validate() error {
	r := a.req
	if r == nil {
		return errors.New("no request")
	}
	if err := validate.UsernameOrTest(r.Username, a.allowTestNames); err != nil {
		return err
	}
	if _, err := sealKey(r.SealTo); err != nil {
		return err
	}
	if len(r.Mailboxes) > MaxMailboxes {
		return fmt.Errorf("mailboxes: %d given; at most %d", len(r.Mailboxes), MaxMailboxes)
	}
	if len(r.DatabaseUsers) > MaxDatabaseUsers {
		return fmt.Errorf("database_users: %d given; at most %d", len(r.DatabaseUsers), MaxDatabaseUsers)
	}
	seen := map[string]bool{}
	for _, ad := range r.Mailboxes {
		c, _, _, err := validate.MailAddress(ad)
		if err != nil {
			return err
		}
		if c != ad {
			return fmt.Errorf("mailbox %q is not canonical (want %q)", ad, c)
		}
		if seen[ad] {
			return fmt.Errorf("mailbox %q listed twice", ad)
		}
		seen[ad] = true
	}
	a.engines = a.engines[:0]
	seen = map[string]bool{}
	for _, u := range r.DatabaseUsers {
		e, err := engineName(u.GetEngine())
		if err != nil {
			return err
		}
		if err := validate.DatabaseUser(u.GetName(), r.Username); err != nil {
			return err
		}
		if k := e + "/" + u.GetName(); seen[k] {
			return fmt.Errorf("database user %q listed twice", u.GetName())
		}
		seen[e+"/"+u.GetName()] = true
		a.engines = append(a.engines, e)
	}
	if len(r.Certificates) > MaxCertificates {
		return fmt.Errorf("certificates: %d given; at most %d", len(r.Certificates), MaxCertificates)
	}
	seen = map[string]bool{}
	for _, c := range r.Certificates {
		if err := validate.CanonicalDomain(c.GetId()); err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		if seen[c.GetId()] {
			return fmt.Errorf("certificate %q listed twice", c.GetId())
		}
		seen[c.GetId()] = true
		if n := len(c.GetChainPem()); n == 0 || n > maxChainPEM {
			return fmt.Errorf("certificate %q: a chain of 1 to %d bytes is required", c.GetId(), maxChainPEM)
		}
	}
	return nil
}

// Apply implements actions.Action. It only reads: a repeat returns the
// same hashes, sealed anew. An item whose hash cannot be read is reported
// in failed; the others are still exported.
func (a *Export) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	r := a.req
	pub, err := sealKey(r.SealTo)
	if err != nil {
		return nil, err
	}
	res := &agentpb.ExportCredentialsResult{}
	fail := func(item string, err error) {
		res.Failed = append(res.Failed, &agentpb.BackupItemFailure{Item: item, Error: err.Error()})
	}
	for _, ad := range r.Mailboxes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		item := "mailbox:" + ad
		if a.m.mail == nil {
			fail(item, errors.New("no mail module on this node"))
			continue
		}
		h, ok, err := a.m.mail.MailboxPasswordHash(env, r.Username, ad)
		switch {
		case err != nil:
			fail(item, err)
		case !ok:
			fail(item, fmt.Errorf("no mailbox %s of %s on this node", ad, r.Username))
		default:
			sealed, err := pki.Seal(pub, []byte(h), agentpb.MailPasswordHashSealContext(ad))
			if err != nil {
				return nil, err
			}
			res.Mailboxes = append(res.Mailboxes, &agentpb.SealedHash{Name: ad, SealedHash: sealed})
		}
	}
	for i, u := range r.DatabaseUsers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		item := "database_user:" + u.GetName()
		if a.m.db == nil {
			fail(item, errors.New("no database module on this node"))
			continue
		}
		h, ok, err := a.m.db.UserPasswordHash(ctx, env, a.engines[i], r.Username, u.GetName())
		switch {
		case err != nil:
			fail(item, err)
		case !ok:
			fail(item, fmt.Errorf("no %s user %s on this node", a.engines[i], u.GetName()))
		default:
			sealed, err := pki.Seal(pub, []byte(h), agentpb.DatabasePasswordHashSealContext(u.GetName()))
			if err != nil {
				return nil, err
			}
			res.DatabaseUsers = append(res.DatabaseUsers, &agentpb.SealedHash{Name: u.GetName(), SealedHash: sealed})
		}
	}
	for _, c := range r.Certificates {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		item := "certificate:" + c.GetId()
		if a.m.certs == nil {
			fail(item, errors.New("no tls module on this node"))
			continue
		}
		der, err := a.m.certs.CertificateKey(ctx, env, c.GetId(), c.GetChainPem())
		if err != nil {
			fail(item, err)
			continue
		}
		sealed, err := pki.Seal(pub, der, agentpb.CertificateKeySealContext(c.GetId()))
		clear(der)
		if err != nil {
			return nil, err
		}
		res.Certificates = append(res.Certificates, &agentpb.SealedCertificateKey{Id: c.GetId(), SealedPrivateKey: sealed})
	}
	if n := len(res.Failed); n > 0 && env != nil && env.Logger != nil {
		env.Logger.Warn("credentials export partial", "username", r.Username, "failed", n)
	}
	return res, nil
}
