package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ZoneStatus is where a zone is on its primary node.
type ZoneStatus string

const (
	// ZonePending: not yet served as written (waiting for placement, for a
	// node with a DNS server, or for the node to apply the change).
	ZonePending ZoneStatus = "PENDING"
	ZoneActive  ZoneStatus = "ACTIVE"
	ZoneFailed  ZoneStatus = "FAILED"
)

// ZoneRecord is one record of a zone as the API manages it. Names are
// absolute ("www.example.com."); content is in PowerDNS form without the
// priority (dnszone.Record).
type ZoneRecord struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Content  string `json:"content"`
	TTL      uint32 `json:"ttl"`
	Priority uint32 `json:"priority,omitempty"`
}

// Zone is an authoritative DNS zone: the desired records the API writes and
// what the primary node reported, in one record (like Account).
type Zone struct {
	// Name is canonical without the trailing dot ("example.com").
	Name string `json:"name"`
	// Account owns the zone (the account whose domain it is); "" for zones
	// only admins manage (reverse zones).
	Account string `json:"account,omitempty"`
	// Owner is the account's owner (a reseller or admin), for listing.
	Owner string `json:"owner,omitempty"`
	// Node serves the zone as primary: the account's node when that runs a
	// DNS server, else the first DNS server; fixed once served.
	Node string `json:"node,omitempty"`
	// Address is where the account's sites are served, for the records
	// the zone starts with (Defaults).
	Address string       `json:"address,omitempty"`
	Reverse bool         `json:"reverse,omitempty"`
	Records []ZoneRecord `json:"records"`
	// Defaults is set until the controller has filled in the records every
	// account zone starts with (they need the node's address).
	Defaults bool `json:"defaults,omitempty"`
	DNSSEC   bool `json:"dnssec,omitempty"`
	// RotateStep is the next step of a ZSK rollover in progress (1 publish,
	// 2 activate, 3 retire; 0: none), due from RotateAfter.
	RotateStep  int       `json:"rotateStep,omitempty"`
	RotateAfter time.Time `json:"rotateAfter,omitzero"`
	// Deleted asks the controller to remove the zone from its node, then
	// the record.
	Deleted bool  `json:"deleted,omitempty"`
	NextID  int64 `json:"nextId"`

	// Generation counts changes of the desired zone (records, DNSSEC,
	// deletion): the API bumps it with each, the zone controller when what
	// the primary must hold changes otherwise (defaults filled in, other
	// DNS servers, a drifted primary). The fields from AppliedGeneration on
	// are the observed status, written by the zone controller from its
	// tasks' typed results.
	Generation int64 `json:"generation"`
	// AppliedGeneration is the observed generation: the last one the
	// primary applied. Status and Reason say where the zone stands.
	AppliedGeneration int64 `json:"appliedGeneration,omitempty"`
	// Servers identifies the DNS servers and nameservers the last ensure
	// was built for: a zone names its secondaries (AXFR, NOTIFY) and, by
	// default, one nameserver on each, so a change of servers re-ensures it.
	Servers   string     `json:"servers,omitempty"`
	TaskID    string     `json:"taskId,omitempty"`
	Attempts  int        `json:"attempts,omitempty"`
	Status    ZoneStatus `json:"status"`
	Reason    string     `json:"reason,omitempty"`
	Serial    uint32     `json:"serial,omitempty"`
	DS        []string   `json:"ds,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
}

// NewRecordID numbers a zone's records; ids are stable across edits.
func (z *Zone) NewRecordID() string {
	z.NextID++
	return fmt.Sprintf("r%d", z.NextID)
}

// Nameservers is the cluster's NS set for new and existing zones.
type Nameservers struct {
	Names     []string  `json:"names"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// prefixZones holds every zone; the zone controller follows it (KindZones).
const prefixZones = prefix + "zones/"

const keyNameservers = prefix + "cluster/nameservers"

func zoneKey(name string) string { return prefixZones + strings.TrimSuffix(name, ".") }

// zoneOps are the operations that create zone z if no zone of its name
// exists, for a caller that adds them to its own transaction.
func zoneOps(z *Zone) (clientv3.Cmp, clientv3.Op) {
	return absent(zoneKey(z.Name)), clientv3.OpPut(zoneKey(z.Name), mustJSON(z))
}

// CreateZone writes a new zone unless one of that name exists, or a name
// inside or above it is held by another holder than the zone's (its
// account, or the cluster for a zone no account owns).
func (s *Store) CreateZone(ctx context.Context, z *Zone, audit AuditEvent) error {
	holder := z.Account
	if holder == "" {
		holder = ClusterHolder
	}
	for {
		tcmps, tops, err := s.claimNames(ctx, holder, []string{z.Name})
		if err != nil {
			return err
		}
		cmp, op := zoneOps(z)
		resp, err := s.cli.Txn(ctx).If(append(tcmps, cmp)...).Then(append(tops, op, auditPut(audit))...).
			Else(clientv3.OpGet(zoneKey(z.Name), clientv3.WithCountOnly())).Commit()
		if err != nil {
			return fmt.Errorf("create zone %s: %w", z.Name, err)
		}
		if resp.Succeeded {
			return nil
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("zone %s exists already: %w", z.Name, ErrConflict)
		}
		// A name near it was taken meanwhile: decide again.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// GetZone returns a zone and its revision.
func (s *Store) GetZone(ctx context.Context, name string) (*Zone, int64, error) {
	key := zoneKey(name)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("zone %s: %w", name, ErrNotFound)
	}
	kv := resp.Kvs[0]
	if z := s.zones.get(key, kv.ModRevision); z != nil {
		return z, kv.ModRevision, nil
	}
	z, err := decodeJSON[Zone](kv.Key, kv.Value)
	if err != nil {
		return nil, 0, err
	}
	s.zones.put(key, kv.ModRevision, z)
	return z, kv.ModRevision, nil
}

// UpdateZone applies fn to the zone and writes it back, with audit, if it
// did not change meanwhile, retrying on conflict; fn's error aborts.
func (s *Store) UpdateZone(ctx context.Context, name string, fn func(*Zone) error, audit AuditEvent) (*Zone, error) {
	for {
		z, rev, err := s.GetZone(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := fn(z); err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(zoneKey(name), rev)).Then(clientv3.OpPut(zoneKey(name), mustJSON(z)), auditPut(audit)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update zone %s: %w", name, err)
		}
		if resp.Succeeded {
			s.zones.put(zoneKey(name), resp.Header.Revision, z)
			return z, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// PutZone writes z if its key is still at rev, with extra ops; false on a
// conflict.
func (s *Store) PutZone(ctx context.Context, z *Zone, rev int64, extra ...Op) (bool, error) {
	resp, err := s.cli.Txn(ctx).If(unchanged(zoneKey(z.Name), rev)).
		Then(append([]clientv3.Op{clientv3.OpPut(zoneKey(z.Name), mustJSON(z))}, rawOps(extra)...)...).Commit()
	if err != nil {
		return false, fmt.Errorf("write zone %s: %w", z.Name, err)
	}
	return resp.Succeeded, nil
}

// DeleteZone removes a zone record (the controller has removed it from the
// nodes first) together with its unconsumed done notices.
func (s *Store) DeleteZone(ctx context.Context, name string, rev int64, audit AuditEvent) (bool, error) {
	ops := []clientv3.Op{
		clientv3.OpDelete(zoneKey(name)),
		clientv3.OpDelete(prefixDone+ZoneObject(name)+"/", clientv3.WithPrefix()),
		auditPut(audit),
	}
	// A zone no account owns holds its name itself; an account's zone
	// holds none (its account's domain does, released with the account).
	z, zrev, err := s.GetZone(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if err == nil && zrev == rev && z.Account == "" {
		ops = append(ops, releaseName(name))
	}
	resp, err := s.cli.Txn(ctx).If(unchanged(zoneKey(name), rev)).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("delete zone %s: %w", name, err)
	}
	if resp.Succeeded {
		s.zones.drop(zoneKey(name))
	}
	return resp.Succeeded, nil
}

// ZonePage lists zones in name order after the given name (exclusive).
func (s *Store) ZonePage(ctx context.Context, after string, limit int) ([]*Zone, bool, error) {
	from := prefixZones
	if after != "" {
		from = zoneKey(after) + "\x00"
	}
	resp, err := s.cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixZones)), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, false, fmt.Errorf("list zones: %w", err)
	}
	out := make([]*Zone, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		z, err := DecodeZone(kv.Value)
		if err != nil {
			return nil, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, z)
	}
	return out, resp.More, nil
}

// ZoneState is the part of a zone the controller's scans of every zone look
// at. Decoding it skips the records, which are most of a zone.
type ZoneState struct {
	Name              string     `json:"name"`
	Node              string     `json:"node,omitempty"`
	Deleted           bool       `json:"deleted,omitempty"`
	Generation        int64      `json:"generation"`
	AppliedGeneration int64      `json:"appliedGeneration,omitempty"`
	TaskID            string     `json:"taskId,omitempty"`
	Status            ZoneStatus `json:"status"`
	Serial            uint32     `json:"serial,omitempty"`
}

// State is z's ZoneState.
func (z *Zone) State() ZoneState {
	return ZoneState{Name: z.Name, Node: z.Node, Deleted: z.Deleted, Generation: z.Generation,
		AppliedGeneration: z.AppliedGeneration, TaskID: z.TaskID, Status: z.Status, Serial: z.Serial}
}

// ListZoneStates returns the state of every zone and the revision read.
func (s *Store) ListZoneStates(ctx context.Context) ([]ZoneState, int64, error) {
	resp, err := s.cli.Get(ctx, prefixZones, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list zones: %w", err)
	}
	out := make([]ZoneState, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
	}
	return out, resp.Header.Revision, nil
}

// ZoneDone returns the finished tasks the zone controller has not consumed.
func (s *Store) ZoneDone(ctx context.Context, name string) ([]Done, error) {
	resp, err := s.cli.Get(ctx, prefixDone+ZoneObject(name)+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	return s.readDone(ctx, resp.Kvs)
}

// DecodeZone decodes a zone record.
func DecodeZone(b []byte) (*Zone, error) {
	var z Zone
	if err := json.Unmarshal(b, &z); err != nil {
		return nil, err
	}
	return &z, nil
}

// GetNameservers returns the cluster's nameserver names (nil when unset).
func (s *Store) GetNameservers(ctx context.Context) ([]string, error) {
	ns, _, err := getJSON[Nameservers](ctx, s.cli, keyNameservers)
	if err == ErrNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ns.Names, nil
}

// SetNameservers replaces the cluster's nameserver names.
func (s *Store) SetNameservers(ctx context.Context, names []string, audit AuditEvent) error {
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(keyNameservers, mustJSON(Nameservers{Names: names, UpdatedAt: time.Now().UTC()})),
		auditPut(audit),
	).Commit()
	return err
}

// prefixDoneZones is where finished zone tasks are announced.
const prefixDoneZones = prefixDone + "zone/"

// prefixDoneDNSNodes is where finished checks of a node's primary zones are
// announced (done/dnsnode/<node>/<task>).
const prefixDoneDNSNodes = prefixDone + "dnsnode/"

// NodeDone is a finished task about a node as a whole (a check of its
// primary zones), with the node it was for.
type NodeDone struct {
	Node string
	Done
}

// DNSNodeDone returns the finished checks of primary zones the zone
// controller has not consumed.
func (s *Store) DNSNodeDone(ctx context.Context) ([]NodeDone, error) {
	resp, err := s.cli.Get(ctx, prefixDoneDNSNodes, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	done, err := s.readDone(ctx, resp.Kvs)
	if err != nil {
		return nil, err
	}
	out := make([]NodeDone, len(done))
	for i, d := range done {
		out[i] = NodeDone{Node: KindDNSChecks.nameOf(d.Key), Done: d}
	}
	return out, nil
}

// ZoneObject is the task object of zone name: its tasks' done notices
// come back as KindZoneOutcomes under the zone's name.
func ZoneObject(name string) string { return "zone/" + strings.TrimSuffix(name, ".") }

// DNSNodeObject is the task object of the checks of node's primary zones:
// their done notices come back as KindDNSChecks under the node's name.
func DNSNodeObject(node string) string { return "dnsnode/" + node }

// PutZone adds zone z to the batch, provided it is still at rev.
func (b *Batch) PutZone(z *Zone, rev int64) {
	b.cmps = append(b.cmps, unchanged(zoneKey(z.Name), rev))
	b.ops = append(b.ops, clientv3.OpPut(zoneKey(z.Name), mustJSON(z)))
	// The cache takes a copy as written (the caller may change z); a zone
	// too small to cache is recorded too, so that the commit drops what
	// the cache held for it.
	if cacheable(z) {
		z = z.clone()
	}
	b.zones = append(b.zones, z)
}

// PutNewZone adds a zone created by the account controller at placement to
// the batch. It has no compare: forward zones are created only there, once
// per account, and the domain's cluster-wide reservation and its name-tree
// key (taken at account creation) already exclude another account's zone of
// that name, or inside or above it.
func (b *Batch) PutNewZone(z *Zone) {
	b.ops = append(b.ops, clientv3.OpPut(zoneKey(z.Name), mustJSON(z)))
}

// zoneDeletion marks an account's zone for removal from its node, for the
// transaction that deletes the account; none when it has no zone.
func (s *Store) zoneDeletion(ctx context.Context, domain string) ([]clientv3.Cmp, []clientv3.Op, error) {
	z, rev, err := getJSON[Zone](ctx, s.cli, zoneKey(domain))
	if err == ErrNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	z.Deleted = true
	z.UpdatedAt = time.Now().UTC()
	return []clientv3.Cmp{unchanged(zoneKey(domain), rev)}, []clientv3.Op{clientv3.OpPut(zoneKey(domain), mustJSON(z))}, nil
}

// releaseDomains frees the names of a deleted account's domains (its
// primary, add-on and alias domains) and marks their zones for removal, in
// as many transactions as etcd's operation limit needs: an account may
// hold more domains than one transaction fits. Each name is released only
// while it still names this account, so a retry after the names were
// taken by another account touches nothing of the new holder's; running
// it again writes nothing.
func (s *Store) releaseDomains(ctx context.Context, a *Account) error {
	const perTxn = MaxTxnOps / 3 // name, tree key and zone of each domain
	sites := a.AllSites()
	for len(sites) > 0 {
		chunk := sites[:min(len(sites), perTxn)]
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, site := range chunk {
			held, err := s.cli.Get(ctx, domainNameKey(site.Domain))
			if err != nil {
				return fmt.Errorf("read domain %s: %w", site.Domain, err)
			}
			if len(held.Kvs) == 0 || string(held.Kvs[0].Value) != a.ID {
				continue // released already (and perhaps taken since)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.Value(domainNameKey(site.Domain)), "=", a.ID))
			ops = append(ops, clientv3.OpDelete(domainNameKey(site.Domain)), releaseName(site.Domain))
			c, o, err := s.zoneDeletion(ctx, site.Domain)
			if err != nil {
				return err
			}
			cmps, ops = append(cmps, c...), append(ops, o...)
		}
		if len(ops) > 0 {
			resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				return fmt.Errorf("release domains of account %s: %w", a.Username, err)
			}
			if !resp.Succeeded {
				if err := ctx.Err(); err != nil {
					return err
				}
				continue // a zone changed meanwhile: read the chunk again
			}
		}
		sites = sites[len(chunk):]
	}
	return nil
}
