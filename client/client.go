// Package client is a small Go client for the nPanel GraphQL API, used by the
// npanel CLI, the dev cluster, tests and the load generator.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client calls one server's /graphql endpoint.
type Client struct {
	url   string
	token string
	http  *http.Client
	// ws dials subscriptions: the same transport as http, without its
	// overall timeout, which a long subscription would outlive.
	ws *http.Client
}

// Option configures a Client.
type Option func(*http.Transport)

// WithTLS makes the client verify an https server with cfg: typically
// pki.PinnedTLSConfig for a server whose certificate the cluster's own CA
// issued, or a config with RootCAs for a private CA. Without it an https
// server is verified against the system roots.
func WithTLS(cfg *tls.Config) Option {
	return func(t *http.Transport) {
		t.TLSClientConfig = cfg.Clone()
		// A custom TLS config turns HTTP/2 off unless asked for.
		t.ForceAttemptHTTP2 = true
	}
}

// New returns a client for the server at base (e.g. https://127.0.0.1:8080).
func New(base, token string, opts ...Option) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	for _, o := range opts {
		o(tr)
	}
	return &Client{
		url:   strings.TrimRight(base, "/") + "/graphql",
		token: token,
		http:  &http.Client{Timeout: 5 * time.Minute, Transport: tr},
		ws:    &http.Client{Transport: tr},
	}
}

// HTTPClient is the client's HTTP client, with its TLS configuration, for
// the server's other endpoints (/healthz, /metrics).
func (c *Client) HTTPClient() *http.Client { return c.http }

// WithToken returns a copy that authenticates with token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// Error is a GraphQL error with its extensions.code.
type Error struct {
	Code    string
	Message string
	Path    []any
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errors holds every error of one response; its message is the first one's.
type Errors []*Error

func (es Errors) Error() string {
	if len(es) == 1 {
		return es[0].Error()
	}
	return fmt.Sprintf("%s (and %d more)", es[0].Error(), len(es)-1)
}

// Code returns the first error's code.
func (es Errors) Code() string { return es[0].Code }

// CodeOf returns the GraphQL error code of err, or "" if err is not one.
func CodeOf(err error) string {
	if es, ok := err.(Errors); ok && len(es) > 0 {
		return es.Code()
	}
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	return ""
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Path       []any          `json:"path"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

// Do runs query with vars and decodes "data" into out (which may be nil).
// GraphQL errors are returned as Errors.
func (c *Client) Do(ctx context.Context, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	var r gqlResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	if len(r.Errors) > 0 {
		es := make(Errors, 0, len(r.Errors))
		for _, e := range r.Errors {
			code, _ := e.Extensions["code"].(string)
			es = append(es, &Error{Code: code, Message: e.Message, Path: e.Path})
		}
		return es
	}
	if out != nil && len(r.Data) > 0 {
		if err := json.Unmarshal(r.Data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

// Login exchanges a password for a token and returns a client that uses it.
func (c *Client) Login(ctx context.Context, user, password string) (*Client, string, error) {
	var out struct {
		Login struct {
			Token string `json:"token"`
		} `json:"login"`
	}
	err := c.Do(ctx, `mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}`,
		map[string]any{"u": user, "p": password}, &out)
	if err != nil {
		return nil, "", err
	}
	return c.WithToken(out.Login.Token), out.Login.Token, nil
}
