package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Certificates: one per site (its id is the site's domain), spec and
// observed status in one record. The API writes the spec and bumps
// Generation for every "order (again)"; the certificate controller writes
// the status. Both go through UpdateCertificate, a compare-and-swap on the
// record, so neither loses the other's write. The private key is never
// here: an ordered key is made on the node, an installed one is sealed to
// the node (SealedKey) until the node has it.
const (
	prefixCerts     = prefix + "certificates/"
	certDoneKind    = "certificate"
	prefixDoneCerts = prefixDone + certDoneKind + "/"
	// maxCertEvents bounds the events a certificate keeps (newest last).
	maxCertEvents = 50
)

var (
	// KindCertificates: an event per certificate; Value decodes with
	// DecodeCertificate.
	KindCertificates = Kind{label: "certificates", prefix: prefixCerts}
	// KindCertificateOutcomes: finished tasks of certificates, named by
	// certificate id.
	KindCertificateOutcomes = Kind{label: "certificate-outcomes", prefix: prefixDoneCerts, name: firstSegment}
)

// CertState is a certificate's state (GraphQL CertificateStatus).
type CertState string

const (
	CertPending  CertState = "PENDING"  // no certificate issued yet; ordering
	CertIssued   CertState = "ISSUED"   // served
	CertRenewing CertState = "RENEWING" // the served one stays while a new one is ordered
	CertFailed   CertState = "FAILED"   // none issued and the last attempt failed
	CertRevoked  CertState = "REVOKED"
	CertExpired  CertState = "EXPIRED" // the served one expired without a renewal
)

// CertChallenge is how names are validated.
type CertChallenge string

const (
	ChallengeHTTP01 CertChallenge = "HTTP01"
	ChallengeDNS01  CertChallenge = "DNS01"
)

// CertEvent is one step of a certificate's history (certificateEvents).
type CertEvent struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"` // requested, ordering, issued, failed, renewing, revoked, installed, skipped, ...
	Message string    `json:"message,omitempty"`
}

// Certificate is one site's certificate.
type Certificate struct {
	ID      string `json:"id"` // the site's domain
	Account string `json:"account"`
	Node    string `json:"node"` // the node serving the site, which holds the key
	// Domains are the names wanted, the site's first.
	Domains   []string      `json:"domains"`
	Challenge CertChallenge `json:"challenge"`
	AutoRenew bool          `json:"autoRenew"`
	// Auto: requested by the control plane when the site was added (its
	// names follow the site's); false once a user requested or installed
	// one.
	Auto bool `json:"auto,omitempty"`
	Mail bool `json:"mail,omitempty"` // also served by Exim and Dovecot as mail.DOMAIN

	// Installed (not ordered) certificates: the chain, and the key sealed
	// to Node (agentpb.CertificateKeySealContext(ID)), dropped once the
	// node has installed it.
	Custom         bool   `json:"custom,omitempty"`
	CustomChainPEM string `json:"customChainPEM,omitempty"`
	SealedKey      []byte `json:"sealedKey,omitempty"`
	AllowUntrusted bool   `json:"allowUntrusted,omitempty"`

	// Revoke asks for revocation with RevokeReason (RFC 5280).
	Revoke       bool `json:"revoke,omitempty"`
	RevokeReason int  `json:"revokeReason,omitempty"`

	// Deleting asks the controller to stop serving the certificate on
	// Node (RemoveCertificateAction), then to delete the record. The API
	// sets it and bumps Generation (deleteCertificate).
	Deleting bool `json:"deleting,omitempty"`
	// SiteRemoved: the deletion is the controller's, because the site
	// was removed; it is cancelled if the site comes back before the
	// record is gone. A deletion asked for by a user never is.
	SiteRemoved bool `json:"siteRemoved,omitempty"`

	// OrderRequests are when the API ordered this certificate
	// (requestCertificate, renewCertificate) within the last week, oldest
	// first: the API refuses a user's order past a few a week, which keeps
	// the CA's duplicate-certificate limit (Let's Encrypt: 5 identical
	// name sets a week) out of a tenant's reach.
	OrderRequests []time.Time `json:"orderRequests,omitempty"`

	Generation int64     `json:"generation"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`

	Status CertStatus `json:"status"`
}

// CertStatus is what the certificate controller observed; written by it
// only.
type CertStatus struct {
	State              CertState `json:"state,omitempty"`
	ObservedGeneration int64     `json:"observedGeneration,omitempty"`

	// The certificate being served (public).
	ChainPEM  string    `json:"chainPEM,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// IssuedDomains are the names the served certificate covers.
	IssuedDomains []string `json:"issuedDomains,omitempty"`
	// RenewAt is when the controller orders a renewal (a third of the
	// lifetime left, jittered, or the ACME server's renewal window).
	RenewAt time.Time `json:"renewAt,omitzero"`

	LastError string `json:"lastError,omitempty"`
	// Failures counts consecutive failed attempts; NextAttempt is the
	// backoff's next try.
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`

	// Challenges are the DNS-01 challenge records published for this
	// certificate and not withdrawn yet (PublishChallenge writes them in
	// the zone's transaction). The controller withdraws what is left when
	// the order's task finishes or the record goes: the agent may have
	// died mid-order.
	Challenges []CertChallengeRecord `json:"challenges,omitempty"`

	// PartialOrders counts the orders in a row that issued without some
	// of Domains (left out, or failed validation); the missing names are
	// ordered again from PartialRetryAt (a backoff), when one of them can
	// validate. Zero once the served certificate covers every name.
	PartialOrders  int       `json:"partialOrders,omitempty"`
	PartialRetryAt time.Time `json:"partialRetryAt,omitzero"`

	// The task in flight, if any (one at most).
	TaskID         string `json:"taskId,omitempty"`
	TaskGeneration int64  `json:"taskGeneration,omitempty"`

	Events []CertEvent `json:"events,omitempty"`
}

// CertChallengeRecord is one published DNS-01 TXT value.
type CertChallengeRecord struct {
	FQDN  string `json:"fqdn"` // _acme-challenge.NAME, no trailing dot
	Value string `json:"value"`
}

// SetChallenge records (or, with remove, forgets) a published value; it
// reports whether the status changed.
func (st *CertStatus) SetChallenge(fqdn, value string, remove bool) bool {
	rec := CertChallengeRecord{FQDN: fqdn, Value: value}
	i := slices.Index(st.Challenges, rec)
	switch {
	case remove && i >= 0:
		st.Challenges = slices.Delete(st.Challenges, i, i+1)
		return true
	case !remove && i < 0:
		st.Challenges = append(st.Challenges, rec)
		return true
	}
	return false
}

// PutCertificate adds c to the batch, provided it is still at rev.
func (b *Batch) PutCertificate(c *Certificate, rev int64) {
	c.UpdatedAt = b.now
	b.cmps = append(b.cmps, unchanged(certKey(c.ID), rev))
	b.ops = append(b.ops, clientv3.OpPut(certKey(c.ID), mustJSON(c)))
}

// AddEvent appends an event, keeping the newest maxCertEvents.
func (c *Certificate) AddEvent(at time.Time, kind, msg string) {
	c.Status.Events = append(c.Status.Events, CertEvent{At: at.UTC(), Kind: kind, Message: msg})
	if n := len(c.Status.Events) - maxCertEvents; n > 0 {
		c.Status.Events = slices.Delete(c.Status.Events, 0, n)
	}
}

func certKey(id string) string { return prefixCerts + id }

// CertificateObject is the task object of certificate id's tasks.
func CertificateObject(id string) string { return certDoneKind + "/" + id }

// DecodeCertificate decodes an event of KindCertificates.
func DecodeCertificate(ev Event) (*Certificate, error) {
	return decodeJSON[Certificate]([]byte(ev.Name), ev.Value)
}

// GetCertificate reads one certificate.
func (s *Store) GetCertificate(ctx context.Context, id string) (*Certificate, error) {
	c, _, err := getJSON[Certificate](ctx, s.cli, certKey(id))
	return c, err
}

// ListCertificates reads every certificate, in id order.
func (s *Store) ListCertificates(ctx context.Context) ([]Certificate, error) {
	cs, _, err := listJSON[Certificate](ctx, s.cli, prefixCerts)
	return cs, err
}

// CreateCertificate writes a new certificate; ErrConflict when the site
// has one.
func (s *Store) CreateCertificate(ctx context.Context, c *Certificate, audit AuditEvent) error {
	now := time.Now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	if c.Generation == 0 {
		c.Generation = 1
	}
	ops := []clientv3.Op{clientv3.OpPut(certKey(c.ID), mustJSON(c))}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(absent(certKey(c.ID))).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create certificate %s: %w", c.ID, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// UpdateCertificate applies fn to the current record and writes it back if
// nobody wrote it meanwhile, retrying otherwise. fn may return tasks for
// the certificate, written in the same transaction. An audit event with an
// Action is written with it.
func (s *Store) UpdateCertificate(ctx context.Context, id string, fn func(c *Certificate) (tasks []*CertTask, err error), audit AuditEvent) (*Certificate, error) {
	return s.UpdateCertificateIn(ctx, id, func(c *Certificate, b *Batch) ([]*CertTask, error) {
		if audit.Action != "" {
			b.Audit(audit)
		}
		return fn(c)
	})
}

// UpdateCertificateIn is UpdateCertificate whose fn also adds to a batch
// written in the same transaction: the audit events of what it recorded,
// the outcomes it consumed. A batch of an attempt that is retried is
// dropped; with ErrUnchanged nothing is written, the batch neither.
func (s *Store) UpdateCertificateIn(ctx context.Context, id string, fn func(c *Certificate, b *Batch) (tasks []*CertTask, err error)) (*Certificate, error) {
	return updateRecordIn(ctx, s, certKey(id), CertificateObject(id),
		func(c *Certificate, b *Batch) ([]*ObjectTask, error) {
			c.UpdatedAt = time.Now().UTC()
			return fn(c, b)
		},
		func(c *Certificate, task string, gen int64) { c.Status.TaskID, c.Status.TaskGeneration = task, gen })
}

// PutCertificate updates certificate id with fn, or creates it when there
// is none: fn is then given an empty record with only its ID and
// generation 1, and created true. A create that meets one created
// meanwhile updates that one. fn may return ErrUnchanged to write nothing
// (PutCertificate then returns the record as read, and no error); it must
// not return ErrNotFound. The audit event, if it has an Action, is written
// with the record.
func (s *Store) PutCertificate(ctx context.Context, id string, fn func(c *Certificate, created bool) error, audit AuditEvent) (*Certificate, error) {
	for range 3 {
		c, err := s.UpdateCertificate(ctx, id, func(c *Certificate) ([]*CertTask, error) { return nil, fn(c, false) }, audit)
		if !errors.Is(err, ErrNotFound) {
			return c, err
		}
		c = &Certificate{ID: id, Generation: 1}
		if err := fn(c, true); err != nil {
			return nil, err
		}
		err = s.CreateCertificate(ctx, c, audit)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("certificate %s was created and removed three times under the change: %w", id, ErrConflict)
}

// TaskLost reports whether task id will never finish: its record is gone,
// or it is still PENDING but no longer queued (its node was removed with
// its queue). Both are read at one revision, so a task completed between
// them is not taken for lost.
func (s *Store) TaskLost(ctx context.Context, id string) (bool, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(taskKey(id))).Commit()
	if err != nil {
		return false, fmt.Errorf("task %s: %w", id, err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return true, nil
	}
	t, err := decodeJSON[Task]([]byte(id), kvs[0].Value)
	if err != nil {
		return false, err
	}
	if t.Status != TaskPending {
		return false, nil // finished: its done notice brings the result
	}
	q, err := s.cli.Get(ctx, queueKey(t.Node, id), clientv3.WithCountOnly(), clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return false, fmt.Errorf("task %s: %w", id, err)
	}
	return q.Count == 0, nil
}

// CertTask is a task UpdateCertificate writes with the certificate.
type CertTask = ObjectTask

// DeleteCertificate removes the certificate and its done notices.
func (s *Store) DeleteCertificate(ctx context.Context, id string, audit AuditEvent) error {
	ops := []clientv3.Op{
		clientv3.OpDelete(certKey(id)),
		clientv3.OpDelete(prefixDoneCerts+id+"/", clientv3.WithPrefix()),
	}
	if audit.Action != "" {
		ops = append(ops, auditPut(audit))
	}
	resp, err := s.cli.Txn(ctx).If(present(certKey(id))).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("delete certificate %s: %w", id, err)
	}
	if !resp.Succeeded {
		return ErrNotFound
	}
	return nil
}

// CertificateOutcomes returns the ids of certificate id's finished tasks
// the controller has not consumed yet.
func (s *Store) CertificateOutcomes(ctx context.Context, id string) ([]string, error) {
	resp, err := s.cli.Get(ctx, prefixDoneCerts+id+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("certificate %s outcomes: %w", id, err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Value))
	}
	return out, nil
}

// ConsumeCertificateOutcomes deletes the done notices of certificate id's
// tasks once the batch's writer has acted on them.
func (b *Batch) ConsumeCertificateOutcomes(id string, tasks ...string) {
	for _, task := range tasks {
		b.Consume(doneKey(certDoneKind, id, task))
	}
}
