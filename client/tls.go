package client

import (
	"context"
	"encoding/json"
	"time"
)

// Certificate mirrors the GraphQL Certificate type.
type Certificate struct {
	ID                 string             `json:"id"`
	Domains            []string           `json:"domains"`
	Status             string             `json:"status"`
	Issuer             *string            `json:"issuer"`
	Serial             *string            `json:"serial"`
	NotBefore          *time.Time         `json:"notBefore"`
	NotAfter           *time.Time         `json:"notAfter"`
	AutoRenew          bool               `json:"autoRenew"`
	LastError          *string            `json:"lastError"`
	Events             []CertificateEvent `json:"events"`
	Account            string             `json:"account"`
	Node               *string            `json:"node"`
	Challenge          string             `json:"challenge"`
	Custom             bool               `json:"custom"`
	Auto               bool               `json:"auto"`
	Deleting           bool               `json:"deleting"`
	ChainPEM           *string            `json:"chainPEM,omitempty"`
	IssuedDomains      []string           `json:"issuedDomains"`
	RenewAt            *time.Time         `json:"renewAt"`
	Failures           int                `json:"failures"`
	Generation         int64              `json:"generation"`
	ObservedGeneration int64              `json:"observedGeneration"`
	CreatedAt          time.Time          `json:"createdAt"`
	UpdatedAt          time.Time          `json:"updatedAt"`
}

// CertificateEvent is one step of a certificate's history.
type CertificateEvent = Event

// CertificateFilter narrows Certificates; zero fields do not filter.
type CertificateFilter struct {
	Account            string
	Domain             string
	Status             string
	ExpiringWithinDays *int
}

// InstallCertificateInput is a certificate bought elsewhere. PrivateKeyPEM
// is sent once and never returned.
type InstallCertificateInput struct {
	Domain         string
	CertificatePEM string
	PrivateKeyPEM  string
	ChainPEM       string
	AllowUntrusted bool
}

const certEventFields = `at kind message`

// certFields leaves out chainPEM, which Certificate asks for alone.
const certFields = `id domains status issuer serial notBefore notAfter autoRenew lastError events{` + certEventFields + `}
	account node challenge custom auto deleting issuedDomains renewAt failures generation observedGeneration createdAt updatedAt`

// Certificate returns a certificate with its served chain; nil when there
// is none the caller may see.
func (c *Client) Certificate(ctx context.Context, id string) (*Certificate, error) {
	var out struct{ Certificate *Certificate }
	err := c.Do(ctx, `query($id:ID!){certificate(id:$id){`+certFields+` chainPEM}}`, map[string]any{"id": id}, &out)
	return out.Certificate, err
}

// Certificates lists a page of the certificates the caller may see and
// the cursor of the next page ("" when this is the last).
func (c *Client) Certificates(ctx context.Context, f CertificateFilter, first int, after string) ([]Certificate, string, error) {
	filter := map[string]any{"account": optional(f.Account), "domain": optional(f.Domain), "status": optional(f.Status)}
	if f.ExpiringWithinDays != nil {
		filter["expiringWithinDays"] = *f.ExpiringWithinDays
	}
	var out struct {
		Certificates struct {
			Edges    []struct{ Node Certificate }
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	err := c.Do(ctx, `query($f:CertificateFilter,$n:Int,$c:String){certificates(filter:$f,first:$n,after:$c){edges{node{`+certFields+`}} pageInfo{hasNextPage endCursor}}}`,
		map[string]any{"f": filter, "n": first, "c": optional(after)}, &out)
	if err != nil {
		return nil, "", err
	}
	list := make([]Certificate, 0, len(out.Certificates.Edges))
	for _, e := range out.Certificates.Edges {
		list = append(list, e.Node)
	}
	next := ""
	if out.Certificates.PageInfo.HasNextPage && out.Certificates.PageInfo.EndCursor != nil {
		next = *out.Certificates.PageInfo.EndCursor
	}
	return list, next, nil
}

// RequestCertificate orders a certificate for a site; challenge "" is
// HTTP01.
func (c *Client) RequestCertificate(ctx context.Context, domain string, sans []string, challenge string) (*Certificate, error) {
	in := map[string]any{"domain": domain, "sans": sans}
	if challenge != "" {
		in["challenge"] = challenge
	}
	if sans == nil {
		in["sans"] = []string{}
	}
	var out struct{ RequestCertificate Certificate }
	err := c.Do(ctx, `mutation($in:RequestCertificateInput!){requestCertificate(input:$in){`+certFields+`}}`, map[string]any{"in": in}, &out)
	return &out.RequestCertificate, err
}

// RenewCertificate orders the certificate again now.
func (c *Client) RenewCertificate(ctx context.Context, id string) (*Certificate, error) {
	var out struct{ RenewCertificate Certificate }
	err := c.Do(ctx, `mutation($id:ID!){renewCertificate(id:$id){`+certFields+`}}`, map[string]any{"id": id}, &out)
	return &out.RenewCertificate, err
}

// RevokeCertificate revokes the certificate; reason "" is UNSPECIFIED.
func (c *Client) RevokeCertificate(ctx context.Context, id, reason string) (*Certificate, error) {
	vars := map[string]any{"id": id, "r": "UNSPECIFIED"}
	if reason != "" {
		vars["r"] = reason
	}
	var out struct{ RevokeCertificate Certificate }
	err := c.Do(ctx, `mutation($id:ID!,$r:RevocationReason){revokeCertificate(id:$id,reason:$r){`+certFields+`}}`, vars, &out)
	return &out.RevokeCertificate, err
}

// DeleteCertificate removes the certificate from its node and the cluster.
func (c *Client) DeleteCertificate(ctx context.Context, id string) (*Certificate, error) {
	var out struct{ DeleteCertificate Certificate }
	err := c.Do(ctx, `mutation($id:ID!){deleteCertificate(id:$id){`+certFields+`}}`, map[string]any{"id": id}, &out)
	return &out.DeleteCertificate, err
}

// SetAutoRenew turns automatic renewal on or off.
func (c *Client) SetAutoRenew(ctx context.Context, id string, on bool) (*Certificate, error) {
	var out struct{ SetAutoRenew Certificate }
	err := c.Do(ctx, `mutation($id:ID!,$on:Boolean!){setAutoRenew(id:$id,on:$on){`+certFields+`}}`, map[string]any{"id": id, "on": on}, &out)
	return &out.SetAutoRenew, err
}

// InstallCertificate installs a certificate bought elsewhere.
func (c *Client) InstallCertificate(ctx context.Context, in InstallCertificateInput) (*Certificate, error) {
	vars := map[string]any{"in": map[string]any{"domain": in.Domain, "certificatePEM": in.CertificatePEM,
		"privateKeyPEM": in.PrivateKeyPEM, "chainPEM": optional(in.ChainPEM), "allowUntrusted": in.AllowUntrusted}}
	var out struct{ InstallCertificate Certificate }
	err := c.Do(ctx, `mutation($in:InstallCertificateInput!){installCertificate(input:$in){`+certFields+`}}`, vars, &out)
	return &out.InstallCertificate, err
}

// TLSDomain is a domain with its HTTPS settings.
type TLSDomain struct {
	Domain
	HTTPSRedirect bool `json:"httpsRedirect"`
	HSTSMaxAge    int  `json:"hstsMaxAge"`
}

const tlsDomainFields = domainFields + ` httpsRedirect hstsMaxAge`

// SetHTTPSRedirect turns the redirect of plain HTTP to HTTPS on or off.
func (c *Client) SetHTTPSRedirect(ctx context.Context, domain string, on bool) (*TLSDomain, error) {
	var out struct{ SetHTTPSRedirect TLSDomain }
	err := c.Do(ctx, `mutation($d:String!,$on:Boolean!){setHTTPSRedirect(domain:$d,on:$on){`+tlsDomainFields+`}}`, map[string]any{"d": domain, "on": on}, &out)
	return &out.SetHTTPSRedirect, err
}

// SetHSTS sets the Strict-Transport-Security max-age (0: off).
func (c *Client) SetHSTS(ctx context.Context, domain string, maxAge int) (*TLSDomain, error) {
	var out struct{ SetHSTS TLSDomain }
	err := c.Do(ctx, `mutation($d:String!,$m:Int!){setHSTS(domain:$d,maxAge:$m){`+tlsDomainFields+`}}`, map[string]any{"d": domain, "m": maxAge}, &out)
	return &out.SetHSTS, err
}

// CertificateEvents follows a certificate's events until ctx ends or the
// server ends the subscription.
func (c *Client) CertificateEvents(ctx context.Context, id string) (<-chan CertificateEvent, error) {
	raw, err := c.Subscribe(ctx, `subscription($id:ID!){certificateEvents(id:$id){`+certEventFields+`}}`, map[string]any{"id": id})
	if err != nil {
		return nil, err
	}
	out := make(chan CertificateEvent)
	go func() {
		defer close(out)
		for data := range raw {
			var d struct{ CertificateEvents CertificateEvent }
			if json.Unmarshal(data, &d) != nil {
				return
			}
			select {
			case out <- d.CertificateEvents:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
