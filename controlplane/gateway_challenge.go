package controlplane

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

// acmeChallengeLabel starts the owner name of a DNS-01 challenge record.
const acmeChallengeLabel = "_acme-challenge."

// A DNS-01 challenge value is the base64url (unpadded) SHA-256 digest of
// the key authorization (RFC 8555 §8.4): 43 characters, nothing else. At
// most maxChallengeValues sit at one name: a wildcard and its apex share
// it, and a node cannot fill a zone with TXT records.
var challengeValueRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

const maxChallengeValues = 2

// PublishChallenge publishes (or withdraws) a DNS-01 challenge record for
// a certificate the calling node is ordering. The caller is the node its
// certificate names (identityFrom: the verified peer certificate, never a
// request field); the record goes only to _acme-challenge.NAME of one of
// the certificate's names, in the account's own zone that holds NAME, as
// exactly one TXT value beside any others there (a wildcard and its apex
// share a name). It returns once the zone's new generation is in etcd;
// the node then polls our nameservers itself.
//
// A withdrawal is accepted after the order finished too: the node cleans
// up after the ACME server answered, and a record must not outlive it.
func (g *gateway) PublishChallenge(ctx context.Context, req *agentpb.PublishChallengeRequest) (*agentpb.PublishChallengeResponse, error) {
	node := identityFrom(ctx).name
	if node == "" {
		return nil, status.Error(codes.Unauthenticated, "a node certificate is required")
	}
	fqdn := strings.ToLower(strings.TrimSuffix(req.GetFqdn(), "."))
	value := req.GetValue()
	switch {
	case req.GetCertificateId() == "":
		return nil, status.Error(codes.InvalidArgument, "certificate_id is required")
	case !strings.HasPrefix(fqdn, acmeChallengeLabel):
		return nil, status.Errorf(codes.InvalidArgument, "fqdn %q is not an %sNAME record", bound(req.GetFqdn()), acmeChallengeLabel)
	case !challengeValueOK(value):
		return nil, status.Error(codes.InvalidArgument, "value must be an ACME DNS-01 digest: 43 base64url characters")
	}
	base := strings.TrimPrefix(fqdn, acmeChallengeLabel)
	c, err := g.store.GetCertificate(ctx, req.GetCertificateId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "certificate %q not found", bound(req.GetCertificateId()))
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, "cluster store unavailable")
	}
	if c.Node != node {
		return nil, status.Errorf(codes.PermissionDenied, "certificate %s is not served by node %s", c.ID, node)
	}
	if !certHasName(c.Domains, base) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a name of certificate %s", base, c.ID)
	}
	if !req.GetRemove() {
		if err := g.ordering(ctx, c); err != nil {
			return nil, err
		}
	}
	z, err := g.challengeZone(ctx, c, base)
	if err != nil {
		return nil, err
	}
	action := "certificate.publishChallenge"
	if req.GetRemove() {
		action = "certificate.withdrawChallenge"
	}
	ev := store.NewAuditEvent("node:"+node, peerAddr(ctx), action, c.ID+"/"+fqdn, "ok")
	// The canonical content, as the zone stores it: the match below
	// touches that one value and no other at the name.
	rec, err := dnszone.ValidateRecord(z.Name, dnszone.Record{Name: fqdn + ".", Type: dnszone.TypeTXT, Content: value}, dnszone.DefaultTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "challenge record: %v", err)
	}
	content := rec.Content
	if req.GetRemove() {
		content = ""
	}
	zones := &zoneWriter{store: g.store, views: &g.s.dnsViews, ctl: &g.s.zoneCtl}
	// The certificate's status records the value in the zone's
	// transaction, so that the controller can withdraw what the agent
	// leaves behind.
	remember := func(b *store.Batch) error {
		cur, rev, err := g.store.GetCertificateRev(ctx, c.ID)
		if err != nil {
			return err
		}
		if cur.Status.SetChallenge(fqdn, value, req.GetRemove()) {
			b.PutCertificate(cur, rev)
		}
		return nil
	}
	_, err = zones.ChangeZoneWith(ctx, z.Name, ev, func(z *store.Zone) error {
		if z.Account != c.Account {
			return store.ErrConflict
		}
		if !req.GetRemove() && challengeValuesAt(z, fqdn+".", rec.Content) >= maxChallengeValues {
			return fmt.Errorf("%w: %s has %d challenge values already", store.ErrQuotaExceeded, fqdn, maxChallengeValues)
		}
		return replaceTXT(z, fqdn+".", content, func(cur string) bool { return cur == rec.Content })
	}, remember)
	if errors.Is(err, errTXTUnchanged) {
		// As asked already (a retry): no zone change to write; the status
		// still follows, and it is audited.
		_, err = g.store.UpdateCertificate(ctx, c.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
			if !c.Status.SetChallenge(fqdn, value, req.GetRemove()) {
				return nil, store.ErrUnchanged
			}
			return nil, nil
		}, store.AuditEvent{})
		if err == nil {
			_ = g.store.AppendAudit(ctx, ev)
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "no DNS zone of the account holds %s", base)
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrQuotaExceeded):
		return nil, status.Errorf(codes.FailedPrecondition, "zone %s refuses the challenge record: %v", z.Name, err)
	case err != nil:
		g.log.Warn("publish challenge", "node", node, "certificate", c.ID, "fqdn", fqdn, "err", err)
		return nil, status.Error(codes.Unavailable, "cluster store unavailable")
	}
	return &agentpb.PublishChallengeResponse{}, nil
}

// ordering refuses a publication unless c has an order in flight.
func (g *gateway) ordering(ctx context.Context, c *store.Certificate) error {
	refuse := status.Errorf(codes.PermissionDenied, "certificate %s is not being ordered", c.ID)
	if c.Status.TaskID == "" {
		return refuse
	}
	t, _, err := g.store.GetTask(ctx, c.Status.TaskID)
	if errors.Is(err, store.ErrNotFound) {
		return refuse
	}
	if err != nil {
		return status.Error(codes.Unavailable, "cluster store unavailable")
	}
	if t.Action != actionIssueCert || t.Status != store.TaskPending {
		return refuse
	}
	return nil
}

// challengeZone is the account's zone that holds name: the longest
// suffix of name that is a zone of ours. A zone of another tenant there
// is refused, never written.
func (g *gateway) challengeZone(ctx context.Context, c *store.Certificate, name string) (*store.Zone, error) {
	for cand := name; strings.Contains(cand, "."); {
		z, _, err := g.store.GetZone(ctx, cand)
		switch {
		case err == nil && z.Account != c.Account:
			return nil, status.Errorf(codes.PermissionDenied, "zone %s, which holds %s, belongs to another account", z.Name, name)
		case err == nil && z.Deleted:
			return nil, status.Errorf(codes.NotFound, "zone %s is being deleted", z.Name)
		case err == nil:
			return z, nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, status.Error(codes.Unavailable, "cluster store unavailable")
		}
		_, cand, _ = strings.Cut(cand, ".")
	}
	return nil, status.Errorf(codes.NotFound, "no DNS zone of ours holds %s", name)
}

// certHasName reports whether name is one of domains, a
// wildcard's "*." removed.
func certHasName(domains []string, name string) bool {
	for _, d := range domains {
		if strings.EqualFold(strings.TrimPrefix(d, "*."), name) {
			return true
		}
	}
	return false
}

func challengeValueOK(v string) bool { return challengeValueRE.MatchString(v) }

// challengeValuesAt counts the TXT values at name other than content.
func challengeValuesAt(z *store.Zone, name, content string) int {
	n := 0
	for _, r := range z.Records {
		if r.Type == dnszone.TypeTXT && strings.EqualFold(r.Name, name) && r.Content != content {
			n++
		}
	}
	return n
}

// bound shortens what a caller sent for an error message.
func bound(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
