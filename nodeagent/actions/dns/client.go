package dns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// Client talks to one PowerDNS server's HTTP API (/api/v1/servers/localhost).
// The API key is sent in X-API-Key and appears in no error or log.
type Client struct {
	base string // http://host:port/api/v1/servers/localhost
	key  string
	hc   *http.Client
	st   *zoneState // the zone locks and applied state of the client's module
}

func newTransport() *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}
}

func newClient(addr, key string, t *http.Transport, st *zoneState) *Client {
	return &Client{
		base: "http://" + addr + "/api/v1/servers/localhost",
		key:  key,
		hc:   &http.Client{Transport: t, Timeout: 60 * time.Second},
		st:   st,
	}
}

// APIError is an error answer of the API.
type APIError struct {
	Method, Path string
	Status       int
	Msg          string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("powerdns %s %s: %d %s", e.Method, e.Path, e.Status, e.Msg)
}

// IsNotFound reports whether err is the API's 404 (or 422 "Could not find
// domain", which some endpoints answer for a missing zone).
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusNotFound || (ae.Status == http.StatusUnprocessableEntity && ae.Msg == "Could not find domain"))
}

// lockedRetries bounds retries of a request that failed in the backend.
const lockedRetries = 6

// do sends one request. With the gsqlite3 backend an API write that meets
// a running zone transfer fails with "database is locked" and a 500 (the
// transaction was rolled back, nothing changed): 500s are retried with
// backoff, about 0.6 s in all.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	wait := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, method, path, body, out)
		var ae *APIError
		// PowerDNS answers a failed backend transaction (above all SQLite's
		// "database is locked") with a bare 500 after rolling it back.
		if attempt >= lockedRetries || !errors.As(err, &ae) || ae.Status != http.StatusInternalServerError {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

func (c *Client) once(ctx context.Context, method, path string, in []byte, out any) error {
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error names the URL, which holds no secret.
		return actions.WithReason(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, fmt.Errorf("powerdns %s %s: %w", method, path, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("powerdns %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := resp.Status
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		} else if t := strings.TrimSpace(string(data)); t != "" && len(t) < 200 && !strings.Contains(t, "<") {
			msg += ": " + t
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Msg: msg}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("powerdns %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Wire types of the API (only the fields nPanel uses).
type (
	pdnsZone struct {
		ID         string      `json:"id,omitempty"`
		Name       string      `json:"name"`
		Kind       string      `json:"kind,omitempty"`
		Serial     uint32      `json:"serial,omitempty"`
		Masters    []string    `json:"masters"`
		DNSSEC     bool        `json:"dnssec,omitempty"`
		SOAEditAPI *string     `json:"soa_edit_api,omitempty"`
		APIRectify *bool       `json:"api_rectify,omitempty"`
		RRsets     []pdnsRRset `json:"rrsets,omitempty"`
	}
	pdnsRRset struct {
		Name       string       `json:"name"`
		Type       string       `json:"type"`
		TTL        uint32       `json:"ttl,omitempty"`
		ChangeType string       `json:"changetype,omitempty"`
		Records    []pdnsRecord `json:"records"`
	}
	pdnsRecord struct {
		Content  string `json:"content"`
		Disabled bool   `json:"disabled"`
	}
	pdnsMeta struct {
		Kind     string   `json:"kind"`
		Metadata []string `json:"metadata"`
	}
	pdnsKey struct {
		ID        int      `json:"id,omitempty"`
		KeyType   string   `json:"keytype,omitempty"`
		Active    bool     `json:"active"`
		Published bool     `json:"published"`
		DNSKey    string   `json:"dnskey,omitempty"`
		DS        []string `json:"ds,omitempty"`
		Algorithm string   `json:"algorithm,omitempty"`
	}
	pdnsServer struct {
		Version string `json:"version"`
	}
)

func zonePath(name string) string { return "/zones/" + url.PathEscape(name) }

// Version returns the server's version; it doubles as a readiness probe.
func (c *Client) Version(ctx context.Context) (string, error) {
	var s pdnsServer
	if err := c.do(ctx, http.MethodGet, "", nil, &s); err != nil {
		return "", err
	}
	return s.Version, nil
}

func (c *Client) zone(ctx context.Context, name string) (*pdnsZone, error) {
	var z pdnsZone
	if err := c.do(ctx, http.MethodGet, zonePath(name), nil, &z); err != nil {
		return nil, err
	}
	return &z, nil
}

// zoneMeta is zone without its rrsets: kind, serial, masters and DNSSEC,
// for actions that do not look at the records (a secondary's, a large
// zone's, cost most of the request).
func (c *Client) zoneMeta(ctx context.Context, name string) (*pdnsZone, error) {
	var z pdnsZone
	if err := c.do(ctx, http.MethodGet, zonePath(name)+"?rrsets=false", nil, &z); err != nil {
		return nil, err
	}
	return &z, nil
}

func (c *Client) zones(ctx context.Context) ([]pdnsZone, error) {
	var zs []pdnsZone
	err := c.do(ctx, http.MethodGet, "/zones", nil, &zs)
	return zs, err
}

func (c *Client) createZone(ctx context.Context, z *pdnsZone) error {
	return c.do(ctx, http.MethodPost, "/zones", z, nil)
}

func (c *Client) putZone(ctx context.Context, name string, z *pdnsZone) error {
	return c.do(ctx, http.MethodPut, zonePath(name), z, nil)
}

func (c *Client) patchZone(ctx context.Context, name string, rrsets []pdnsRRset) error {
	return c.do(ctx, http.MethodPatch, zonePath(name), map[string]any{"rrsets": rrsets}, nil)
}

func (c *Client) deleteZone(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, zonePath(name), nil, nil)
}

func (c *Client) notify(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPut, zonePath(name)+"/notify", nil, nil)
}

// flushCache drops the server's cached answers for name and every name
// below it. PowerDNS caches answers, negative ones included, for up to a
// minute. A PATCH purges its zone's entries itself, but a query that read
// the zone just before the PATCH committed can store its answer after that
// purge, and a new zone's name may have a REFUSED cached from before it
// existed: only a flush after the change drops those.
func (c *Client) flushCache(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPut, "/cache/flush?domain="+url.QueryEscape(name), nil, nil)
}

func (c *Client) axfrRetrieve(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPut, zonePath(name)+"/axfr-retrieve", nil, nil)
}

func (c *Client) rectify(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPut, zonePath(name)+"/rectify", nil, nil)
}

func (c *Client) metadata(ctx context.Context, name string) ([]pdnsMeta, error) {
	var ms []pdnsMeta
	err := c.do(ctx, http.MethodGet, zonePath(name)+"/metadata", nil, &ms)
	return ms, err
}

func (c *Client) putMetadata(ctx context.Context, name, kind string, values []string) error {
	return c.do(ctx, http.MethodPut, zonePath(name)+"/metadata/"+url.PathEscape(kind), pdnsMeta{Kind: kind, Metadata: values}, nil)
}

func (c *Client) deleteMetadata(ctx context.Context, name, kind string) error {
	return c.do(ctx, http.MethodDelete, zonePath(name)+"/metadata/"+url.PathEscape(kind), nil, nil)
}

func (c *Client) keys(ctx context.Context, name string) ([]pdnsKey, error) {
	var ks []pdnsKey
	err := c.do(ctx, http.MethodGet, zonePath(name)+"/cryptokeys", nil, &ks)
	return ks, err
}

func (c *Client) addKey(ctx context.Context, name string, k pdnsKey) (pdnsKey, error) {
	var out pdnsKey
	err := c.do(ctx, http.MethodPost, zonePath(name)+"/cryptokeys", k, &out)
	return out, err
}

func (c *Client) setKey(ctx context.Context, name string, id int, active, published bool) error {
	return c.do(ctx, http.MethodPut, fmt.Sprintf("%s/cryptokeys/%d", zonePath(name), id), map[string]bool{"active": active, "published": published}, nil)
}

func (c *Client) deleteKey(ctx context.Context, name string, id int) error {
	return c.do(ctx, http.MethodDelete, fmt.Sprintf("%s/cryptokeys/%d", zonePath(name), id), nil, nil)
}
