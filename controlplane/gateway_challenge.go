package controlplane

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

// acmeChallengeLabel starts the owner name of a DNS-01 challenge record.
const acmeChallengeLabel = "_acme-challenge."

// maxChallengeValue bounds a challenge value: ACME's is the 43-character
// base64url of a SHA-256 digest.
const maxChallengeValue = 128

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
		return nil, status.Error(codes.InvalidArgument, "value must be 1 to 128 printable ASCII characters without quotes, backslashes or spaces")
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
	_, err = zones.ChangeZone(ctx, z.Name, ev, func(z *store.Zone) error {
		if z.Account != c.Account {
			return store.ErrConflict
		}
		return replaceTXT(z, fqdn+".", content, func(cur string) bool { return cur == rec.Content })
	})
	switch {
	case errors.Is(err, errTXTUnchanged):
		// As asked already (a retry): no change to write, still audited.
		_ = g.store.AppendAudit(ctx, ev)
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

func challengeValueOK(v string) bool {
	if v == "" || len(v) > maxChallengeValue {
		return false
	}
	for i := 0; i < len(v); i++ {
		if b := v[i]; b <= ' ' || b >= 0x7f || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

// bound shortens what a caller sent for an error message.
func bound(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
