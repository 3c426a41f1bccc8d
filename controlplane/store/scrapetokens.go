package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ScrapeTokenPrefix starts every scrape token, so that one pasted in the
// wrong place is recognised.
const ScrapeTokenPrefix = "nps_"

const prefixScrapeTokens = prefix + "scrapetokens/"

// Scrape scopes: what a scrape token opens.
const (
	ScrapeDiscovery = "discovery" // GET /v1/prometheus/sd
	ScrapeMetrics   = "metrics"   // the server's and the agents' /metrics
	ScrapeAlerts    = "alerts"    // POST /v1/alerts
)

// ScrapeScopes are every scope, in their canonical order.
var ScrapeScopes = []string{ScrapeDiscovery, ScrapeMetrics, ScrapeAlerts}

// ScrapeToken lets Prometheus discover and scrape the cluster (the SD
// endpoint, the server's and the agents' /metrics) and Alertmanager post
// alerts, each as far as its Scopes allow. Only the SHA-256 of the token
// is stored: agents receive the digests, never the token.
type ScrapeToken struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	SHA256 []byte `json:"sha256"`
	// Scopes in canonical order; a record written before scopes existed
	// has none and opens everything, as it did then.
	Scopes    []string  `json:"scopes,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// ScopeList is the token's scopes, all of them for a record without any.
func (t *ScrapeToken) ScopeList() []string {
	if len(t.Scopes) == 0 {
		return slices.Clone(ScrapeScopes) // callers keep and may change it
	}
	return t.Scopes
}

// KindScrapeTokens is every scrape token, by id; Value decodes with
// DecodeScrapeToken.
var KindScrapeTokens = Kind{label: "scrape-tokens", prefix: prefixScrapeTokens}

func scrapeTokenKey(id string) string { return prefixScrapeTokens + id }

// NewScrapeToken makes a token named name that opens scopes (checked by
// the caller, in canonical order): the secret to show once and the record
// to store.
func NewScrapeToken(name string, scopes []string) (string, ScrapeToken, error) {
	id, secret := make([]byte, 8), make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return "", ScrapeToken{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", ScrapeToken{}, err
	}
	tok := ScrapeTokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	sum := ScrapeTokenDigest(tok)
	return tok, ScrapeToken{ID: hex.EncodeToString(id), Name: name, SHA256: sum[:], Scopes: slices.Clone(scopes), CreatedAt: time.Now().UTC()}, nil
}

// ScrapeTokenDigest is what is stored of tok.
func ScrapeTokenDigest(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

// CreateScrapeToken stores t; a token of the same id is a conflict.
func (s *Store) CreateScrapeToken(ctx context.Context, t ScrapeToken, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(absent(scrapeTokenKey(t.ID))).
		Then(clientv3.OpPut(scrapeTokenKey(t.ID), mustJSON(t)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("create scrape token: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("create scrape token: %w", ErrConflict)
	}
	return nil
}

// ListScrapeTokens returns every scrape token, in id order.
func (s *Store) ListScrapeTokens(ctx context.Context) ([]ScrapeToken, error) {
	out, _, err := listJSON[ScrapeToken](ctx, s.cli, prefixScrapeTokens)
	return out, err
}

// DeleteScrapeToken deletes a token; scrapes with it are refused once
// the replicas and agents hear of it (a watch away).
func (s *Store) DeleteScrapeToken(ctx context.Context, id string, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(present(scrapeTokenKey(id))).
		Then(clientv3.OpDelete(scrapeTokenKey(id)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("delete scrape token: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("scrape token %q: %w", id, ErrNotFound)
	}
	return nil
}

// DecodeScrapeToken decodes a scrape token record from List or Watch.
func DecodeScrapeToken(b []byte) (ScrapeToken, error) {
	var t ScrapeToken
	err := json.Unmarshal(b, &t)
	return t, err
}
