package tls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/acme/api"
	"github.com/go-acme/lego/v5/challenge"
)

// Polling of an authorization once its challenge is accepted: from
// pollFirst, doubling to pollMax, unless the CA asks for longer with
// Retry-After. lego's own prober validates authorizations one after
// another and waits 5 s before its first look when the CA sends no
// Retry-After, as neither Let's Encrypt nor Pebble does on a challenge:
// a site and its www name cost 10 s of waiting for a validation the CA
// finishes in well under one.
const (
	pollFirst       = 250 * time.Millisecond
	pollMax         = 2 * time.Second
	validateTimeout = 2 * time.Minute
)

// provider publishes and withdraws one challenge response.
type provider interface {
	Present(ctx context.Context, domain, token, keyAuth string) error
	CleanUp(ctx context.Context, domain, token, keyAuth string) error
}

// solver validates an order's authorizations together, for lego's
// Certifier (its resolver): every response is published, waited for
// (ready: DNS-01's nameservers), then every challenge is accepted and
// polled at once. A name that fails does not stop the others; the names
// that failed come back as one nameErrors.
type solver struct {
	core     *api.Core
	kind     challenge.Type
	provider provider
	// ready, when set, returns once domain's response is served
	// everywhere the CA may look.
	ready func(ctx context.Context, domain, keyAuth string) error
	log   *slog.Logger
}

// nameErrors maps each name whose validation failed to its reason.
type nameErrors map[string]error

func (e nameErrors) Error() string {
	var b strings.Builder
	b.WriteString("one or more names failed validation:")
	for _, n := range slices.Sorted(maps.Keys(e)) {
		fmt.Fprintf(&b, " [%s: %v]", n, e[n])
	}
	return b.String()
}

// Unwrap lets errors.As find the CA's problem behind any of the names.
func (e nameErrors) Unwrap() []error {
	var out []error
	for _, n := range slices.Sorted(maps.Keys(e)) {
		out = append(out, e[n])
	}
	return out
}

type authzWork struct {
	domain, token, keyAuth, url string
}

// Solve implements lego's resolver.
func (s *solver) Solve(ctx context.Context, authzs []acme.Authorization) error {
	failed := nameErrors{}
	var work []authzWork
	for _, az := range authzs {
		domain := challenge.GetTargetedDomain(az)
		if az.Status == acme.StatusValid {
			continue // validated for this account within the CA's reuse window
		}
		ch, err := challenge.FindChallenge(s.kind, az)
		if err != nil {
			failed[domain] = err
			continue
		}
		keyAuth, err := s.core.GetKeyAuthorization(ch.Token)
		if err != nil {
			failed[domain] = err
			continue
		}
		work = append(work, authzWork{domain: domain, token: ch.Token, keyAuth: keyAuth, url: ch.URL})
	}
	var presented []authzWork
	defer func() {
		for _, w := range presented {
			// The order's outcome stands: a response left behind is
			// harmless, and a DNS one is withdrawn by the control plane.
			if err := s.provider.CleanUp(ctx, identifier(w.domain), w.token, w.keyAuth); err != nil {
				s.log.Warn("ACME challenge response not withdrawn", "name", w.domain, "err", err)
			}
		}
	}()
	for _, w := range work {
		if err := s.provider.Present(ctx, identifier(w.domain), w.token, w.keyAuth); err != nil {
			failed[w.domain] = err
			continue
		}
		presented = append(presented, w)
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, w := range presented {
		wg.Go(func() {
			err := s.validate(ctx, w)
			if err != nil {
				mu.Lock()
				failed[w.domain] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		return failed
	}
	return nil
}

// identifier is the name a provider is given: the authorization's
// identifier, without a wildcard's "*." (both share one DNS-01 record).
func identifier(domain string) string { return strings.TrimPrefix(domain, "*.") }

// validate waits for w's response to be served, accepts the challenge and
// polls its authorization until the CA has decided.
func (s *solver) validate(ctx context.Context, w authzWork) error {
	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel()
	if s.ready != nil {
		if err := s.ready(ctx, w.domain, w.keyAuth); err != nil {
			return err
		}
	}
	ch, err := s.core.Challenges.New(ctx, w.url)
	if err != nil {
		return fmt.Errorf("accept the challenge: %w", err)
	}
	switch ch.Status {
	case acme.StatusValid:
		return nil
	case acme.StatusInvalid:
		return fmt.Errorf("invalid challenge: %w", ch.Err())
	}
	wait := max(pollFirst, ch.RetryAfter)
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the CA did not decide in %s: %w", validateTimeout, ctx.Err())
		case <-time.After(wait):
		}
		az, err := s.core.Authorizations.Get(ctx, ch.AuthorizationURL)
		if err != nil {
			return err
		}
		switch az.Status {
		case acme.StatusValid:
			return nil
		case acme.StatusPending, acme.StatusProcessing:
		case acme.StatusInvalid:
			for _, c := range az.Challenges {
				if c.Status == acme.StatusInvalid && c.Error != nil {
					return fmt.Errorf("invalid authorization: %w", c.Err())
				}
			}
			return errors.New("invalid authorization")
		default:
			return fmt.Errorf("the authorization is %s", az.Status)
		}
		wait = min(wait*2, max(pollMax, ch.RetryAfter))
	}
}
