package tls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/lego"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// Issue orders a certificate over ACME and serves it.
type Issue struct {
	m              *Module
	req            *agentpb.IssueCertificateAction
	allowTestNames bool
}

// NewIssue builds the action from its wire form.
func (m *Module) NewIssue(req *agentpb.IssueCertificateAction) *Issue {
	return &Issue{m: m, req: req}
}

func (a *Issue) Name() string        { return IssueName }
func (a *Issue) AllowTestUsernames() { a.allowTestNames = true }

// DNS-01 propagation: how long every nameserver may take to serve a value,
// and how often they are asked. Our nameservers get the record by NOTIFY
// and AXFR in well under a second; a minute covers a restart.
const (
	dnsPropagationTimeout  = 60 * time.Second
	dnsPropagationInterval = 250 * time.Millisecond
)

// maxReorders bounds the orders one action makes when names fail: each
// round drops at least one name, and a CA counts failed validations.
const maxReorders = 3

// Apply implements actions.Action.
func (a *Issue) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	r := a.req
	unlock, err := a.m.sites.Lock(ctx, r.Site)
	if err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	defer unlock()
	// Nothing is ordered that could not be served: a certificate the node
	// cannot install would be ordered again, and the CA counts duplicates.
	if a.m.web == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve web sites")
	}
	if r.Mail && a.m.mail == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "this agent does not serve mail")
	}

	// The certificate's key: made here, handed only to the installers.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var res *certificate.Resource
	var failed []*agentpb.FailedName
	var client *lego.Client // the one that got the certificate
	err = a.m.withAccount(ctx, env, r.Acme, func(s *session) error {
		sv := &solver{log: env.Logger}
		switch r.Challenge {
		case agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01:
			sv.kind, sv.provider = challenge.HTTP01, &httpProvider{dir: a.m.challengeDir(env)}
		case agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01:
			p := &dnsProvider{env: env, id: r.Id, nameservers: r.Nameservers, timeout: dnsPropagationTimeout, interval: dnsPropagationInterval}
			sv.kind, sv.provider, sv.ready = challenge.DNS01, p, p.waitServed
		default:
			return actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "unknown challenge %s", r.Challenge)
		}
		certifier, err := s.certifier(sv)
		if err != nil {
			return err
		}
		res, failed, err = obtain(ctx, certifier, r.Site, r.Domains, key, servedNames(env, r.Site))
		client = s.Client
		return err
	})
	if err != nil {
		return nil, err
	}
	chain, err := validChain(res.Certificate)
	if err != nil {
		return nil, fmt.Errorf("the CA returned an unusable chain: %w", err)
	}
	out := result(res.Certificate, chain[0])
	out.Failed = failed
	out.RenewAfterUnix = renewAfter(ctx, client, chain[0])

	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	reloaded, err := a.m.install(ctx, env, r.Site, r.Mail, res.Certificate, kp, chain[0])
	if err != nil {
		return nil, err
	}
	out.Reloaded = reloaded
	env.Logger.Info("certificate issued", "site", r.Site, "serial", out.Serial,
		"domains", out.Domains, "failed", len(out.Failed), "not_after", chain[0].NotAfter)
	return out, nil
}

// obtain orders a certificate for names. A name whose validation fails is
// dropped and the rest ordered again, up to maxReorders times; the site
// itself must validate. It returns the names it dropped with their errors.
//
// A name the served certificate covers (keep) is never dropped: a renewal
// without it would take it off a working certificate, so the renewal fails
// instead and the served certificate stays until the name validates.
func obtain(ctx context.Context, certifier *certificate.Certifier, site string, names []string, key crypto.Signer, keep func(string) bool) (*certificate.Resource, []*agentpb.FailedName, error) {
	var failed []*agentpb.FailedName
	for round := 0; ; round++ {
		res, err := certifier.Obtain(ctx, certificate.ObtainRequest{
			Domains:    names,
			PrivateKey: key,
			Bundle:     true,
		})
		if err == nil && res != nil {
			return res, failed, nil
		}
		if err == nil {
			err = errors.New("the CA returned no certificate")
		}
		var bad nameErrors
		errors.As(err, &bad)
		switch {
		case len(bad) == 0 || len(bad) == len(names):
			return nil, failed, classify(fmt.Errorf("order certificate for %s: %w", strings.Join(names, ", "), err))
		case bad[site] != nil || (names[0] != site && !coveredBy(remove(names, bad), site)):
			return nil, failed, classify(fmt.Errorf("order certificate: the site's name %s failed: %w", site, err))
		case slices.ContainsFunc(slices.Collect(maps.Keys(bad)), keep):
			return nil, failed, classify(fmt.Errorf("order certificate: a name the served certificate covers failed, so it stays served: %w", err))
		case round+1 >= maxReorders:
			return nil, failed, classify(fmt.Errorf("order certificate: names still failing after %d orders: %w", maxReorders, err))
		}
		for _, n := range names {
			if e, ok := bad[n]; ok {
				failed = append(failed, &agentpb.FailedName{Name: n, Error: reason(e)})
			}
		}
		names = remove(names, bad)
	}
}

func remove(names []string, bad nameErrors) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { _, ok := bad[n]; return ok })
}

// reason is a failed name's error as reported: short enough for a status.
func reason(err error) string {
	e := err.Error()
	if len(e) > 500 {
		e = strings.ToValidUTF8(e[:500], "") + "…"
	}
	return e
}

// result describes the chain the node serves.
func result(chainPEM []byte, leaf *x509.Certificate) *agentpb.CertificateResult {
	names := slices.Clone(leaf.DNSNames)
	return &agentpb.CertificateResult{
		ChainPem:      chainPEM,
		Serial:        leaf.SerialNumber.Text(16),
		Issuer:        leaf.Issuer.CommonName,
		NotBeforeUnix: leaf.NotBefore.Unix(),
		NotAfterUnix:  leaf.NotAfter.Unix(),
		Domains:       names,
	}
}

// renewAfter asks the CA's renewal information (ARI, RFC 9773) when to
// renew: a random time in its suggested window, as §4.2 asks, so that the
// CA's certificates do not all come back at once. 0 when the CA offers
// none; an ARI failure never fails the issue.
func renewAfter(ctx context.Context, cl *lego.Client, leaf *x509.Certificate) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := cl.Certificate.GetRenewalInfo(ctx, leaf)
	if err != nil || info == nil {
		return 0
	}
	start, end := info.SuggestedWindow.Start, info.SuggestedWindow.End
	if start.IsZero() || !end.After(start) {
		return start.Unix()
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(end.Sub(start)/time.Second)+1))
	if err != nil {
		return start.Unix()
	}
	return start.Add(time.Duration(n.Int64()) * time.Second).Unix()
}

// classify gives an ACME error its reason: UNAVAILABLE when the CA could
// not be reached or answered with a server error or a rate limit (the same
// task may succeed later), INVALID when the CA refused the request's
// content, INTERNAL otherwise.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var pd *acme.ProblemDetails
	if errors.As(err, &pd) {
		switch {
		case pd.HTTPStatus >= 500, pd.Type == acme.RateLimitedErrorType:
			return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
		case pd.Type == acme.RejectedIdentifierErrorType, pd.Type == acme.MalformedErrorType,
			pd.Type == acme.UnsupportedIdentifierErrorType, pd.Type == "urn:ietf:params:acme:error:caa",
			pd.Type == acme.BadRevocationReasonErrorType, pd.Type == acme.ExternalAccountRequiredErrorType:
			return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
		}
		return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INTERNAL, err)
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, err)
	}
	return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INTERNAL, err)
}

// servedNames reports whether the certificate the site serves now, when
// one was issued or installed (not self-signed) and is still valid,
// covers a name.
func servedNames(env *actions.Env, site string) func(string) bool {
	chainPath, _ := web.CertFiles(env.Profile.Web(), site)
	b, err := os.ReadFile(chainPath)
	if err != nil {
		return func(string) bool { return false }
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return func(string) bool { return false }
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil || bytes.Equal(leaf.RawIssuer, leaf.RawSubject) || time.Now().After(leaf.NotAfter) {
		return func(string) bool { return false }
	}
	return func(name string) bool { return leaf.VerifyHostname(name) == nil }
}
