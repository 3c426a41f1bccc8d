package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/net/publicsuffix"
)

// The name tree indexes every name the cluster hosts — account domains,
// add-on domains and zones no account owns — by its labels reversed
// (names/tree/org/example/www/ → holder), so that one key range holds a
// name and everything under it. It exists for one rule: PowerDNS answers
// from the most specific zone and nginx picks a server block by exact name,
// so a tenant holding a name inside or above another tenant's name would
// take over part of it (its MX, its HTTP-01 challenges). A name is refused
// when it, a descendant, or an ancestor down to its registrable domain is
// held by another holder. The holder of an account's names is the account
// (two accounts of one reseller are two customers); zones only admins
// manage (reverse zones) are held by the cluster.
const prefixTree = prefixNames + "tree/"

// ClusterHolder holds the names of zones that belong to no account.
const ClusterHolder = "-cluster"

func treeKey(name string) string {
	labels := strings.Split(strings.TrimSuffix(name, "."), ".")
	var b strings.Builder
	b.Grow(len(prefixTree) + len(name) + 2)
	b.WriteString(prefixTree)
	for i := len(labels) - 1; i >= 0; i-- {
		b.WriteString(labels[i])
		b.WriteByte('/')
	}
	return b.String()
}

// NameAncestors returns the names above name that someone could hold,
// nearest first: its parents down to its registrable domain (eTLD+1, with
// the public suffix list's private suffixes counting as suffixes, so that
// a.github.io and b.github.io are unrelated). A public suffix is no
// parent: nobody holds co.uk.
func NameAncestors(name string) []string {
	name = strings.TrimSuffix(name, ".")
	reg, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil || !strings.HasSuffix(name, "."+reg) {
		return nil
	}
	var out []string
	for n := name; n != reg; {
		_, n, _ = strings.Cut(n, ".")
		out = append(out, n)
	}
	return out
}

// ErrNameOverlap marks a name refused because it is inside or above a name
// another holder holds. It wraps ErrConflict.
var ErrNameOverlap = fmt.Errorf("%w: overlapping name", ErrConflict)

// claimNames checks that holder may take names and returns what the
// transaction taking them must add: compares that fail if the part of the
// tree the decision was made on changed since (a new name inside or above
// any of them), and the puts of their tree keys. etcd cannot compare
// "no key exists in this range" directly, but a mod-revision compare over
// a range passes for an empty range and fails for any key written after the
// read, which is the same thing here. A refusal does not say who holds the
// other name.
func (s *Store) claimNames(ctx context.Context, holder string, names []string) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(names) == 0 {
		return nil, nil, nil
	}
	type span struct {
		name, key string
		prefix    bool // the name and every name under it
	}
	var spans []span
	seen := map[string]bool{}
	for _, n := range names {
		spans = append(spans, span{n, treeKey(n), true})
		for _, a := range NameAncestors(n) {
			if k := treeKey(a); !seen[k] {
				seen[k] = true
				spans = append(spans, span{n, k, false})
			}
		}
	}
	gets := make([]clientv3.Op, len(spans))
	for i, sp := range spans {
		if sp.prefix {
			gets[i] = clientv3.OpGet(sp.key, clientv3.WithPrefix())
		} else {
			gets[i] = clientv3.OpGet(sp.key)
		}
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("read name tree: %w", err)
	}
	for i, sp := range spans {
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			if string(kv.Value) == holder {
				continue
			}
			if string(kv.Key) == treeKey(sp.name) {
				return nil, nil, fmt.Errorf("domain %q is hosted already: %w", sp.name, ErrConflict)
			}
			if string(kv.Value) == ClusterHolder {
				return nil, nil, fmt.Errorf("domain %q overlaps a zone the cluster serves: %w", sp.name, ErrNameOverlap)
			}
			return nil, nil, fmt.Errorf("domain %q overlaps a domain hosted in another account: %w", sp.name, ErrNameOverlap)
		}
	}
	next := resp.Header.Revision + 1
	cmps := make([]clientv3.Cmp, 0, len(spans))
	for _, sp := range spans {
		c := clientv3.Compare(clientv3.ModRevision(sp.key), "<", next)
		if sp.prefix {
			c = c.WithPrefix()
		}
		cmps = append(cmps, c)
	}
	ops := make([]clientv3.Op, 0, len(names))
	for _, n := range names {
		ops = append(ops, clientv3.OpPut(treeKey(n), holder))
	}
	return cmps, ops, nil
}

// releaseName is the op that removes name from the tree.
func releaseName(name string) clientv3.Op { return clientv3.OpDelete(treeKey(name)) }

// BackfillNameTree gives every hosted name that has no tree key one: the
// domains of clusters created before the tree existed, or written by a
// replica of an older version during a rolling upgrade. Each key is put in
// a transaction that compares the record it derives from, so a domain or
// zone removed meanwhile is not resurrected in the tree. Running it again
// writes nothing. It returns the number of keys written.
func (s *Store) BackfillNameTree(ctx context.Context) (int, error) {
	have := map[string]bool{}
	if err := s.eachKey(ctx, prefixTree, true, func(key, _ []byte, _ int64) error {
		have[string(key)] = true
		return nil
	}); err != nil {
		return 0, err
	}
	written := 0
	// Every domain an account serves has its reservation, naming the account.
	err := s.eachKey(ctx, prefixNames+"domain/", false, func(key, value []byte, mod int64) error {
		d := strings.TrimPrefix(string(key), prefixNames+"domain/")
		if have[treeKey(d)] {
			return nil
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(string(key), mod)).Then(clientv3.OpPut(treeKey(d), string(value))).Commit()
		if err != nil {
			return fmt.Errorf("backfill name tree: %w", err)
		}
		if resp.Succeeded {
			have[treeKey(d)] = true
			written++
		}
		return nil
	})
	if err != nil {
		return written, err
	}
	// Zones no account owns; an account's zone has its account's name.
	err = s.eachKey(ctx, prefixZones, true, func(key, _ []byte, _ int64) error {
		name := strings.TrimPrefix(string(key), prefixZones)
		if have[treeKey(name)] {
			return nil
		}
		z, rev, err := getJSON[Zone](ctx, s.cli, string(key))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if z.Account != "" || z.Deleted {
			return nil
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(string(key), rev)).Then(clientv3.OpPut(treeKey(name), ClusterHolder)).Commit()
		if err != nil {
			return fmt.Errorf("backfill name tree: %w", err)
		}
		if resp.Succeeded {
			written++
		}
		return nil
	})
	return written, err
}

// eachKey calls fn for every key under pfx in pages.
func (s *Store) eachKey(ctx context.Context, pfx string, keysOnly bool, fn func(key, value []byte, mod int64) error) error {
	from, end := pfx, clientv3.GetPrefixRangeEnd(pfx)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return fmt.Errorf("list %s: %w", pfx, err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key, kv.Value, kv.ModRevision); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
