package store

import (
	"math/rand/v2"
	"slices"
	"sync"
)

// zoneCache keeps zones decoded, each with the mod revision it is the
// value of. A zone of a few hundred records takes longer to decode than
// to fetch, and every change of it is read by the API, then by the zone
// controller when the node's result arrives, then by the API again for
// the next change: the controller's write and the API's next read meet
// here. A hit needs the revision etcd returned with the value, so a read
// is as linearizable as without the cache.
type zoneCache struct {
	mu      sync.Mutex
	m       map[string]cachedZone
	records int // held in m, bounded by zoneCacheRecords
}

type cachedZone struct {
	rev int64
	z   *Zone
}

// zoneCacheRecords bounds the records the cache holds (about 150 bytes
// each): the zones being edited now fit many times over, all of a large
// cluster's do not.
const zoneCacheRecords = 200_000

// zoneCacheMinRecords is the smallest zone worth caching: a new account's
// zone of a handful of records decodes in microseconds, and a hundred
// thousand of them would only give the collector more to scan.
const zoneCacheMinRecords = 32

// get returns a copy of the zone stored under key at rev, or nil.
func (c *zoneCache) get(key string, rev int64) *Zone {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if !ok || e.rev != rev {
		return nil
	}
	return e.z.clone()
}

// cacheable reports whether z is worth a place in the cache.
func cacheable(z *Zone) bool {
	return len(z.Records) >= zoneCacheMinRecords && len(z.Records) <= zoneCacheRecords/10
}

// put remembers a copy of z as the value of key at rev, unless the cache
// already has a newer one.
func (c *zoneCache) put(key string, rev int64, z *Zone) {
	if cacheable(z) {
		z = z.clone()
	}
	c.putOwned(key, rev, z)
}

// putOwned is put of a zone nobody else holds.
func (c *zoneCache) putOwned(key string, rev int64, z *Zone) {
	if !cacheable(z) {
		c.drop(key) // what the cache held for key is older
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedZone{}
	}
	if old, ok := c.m[key]; ok {
		if old.rev > rev {
			return
		}
		c.records -= len(old.z.Records)
	}
	for c.records+len(z.Records) > zoneCacheRecords && len(c.m) > 0 {
		c.evictOne()
	}
	c.m[key] = cachedZone{rev, z}
	c.records += len(z.Records)
}

// drop forgets key (the zone was deleted).
func (c *zoneCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[key]; ok {
		c.records -= len(old.z.Records)
		delete(c.m, key)
	}
}

// evictOne drops a random entry: map order is random, and the zones being
// edited are put back on their next read.
func (c *zoneCache) evictOne() {
	skip := rand.IntN(len(c.m))
	for k, e := range c.m {
		if skip == 0 {
			c.records -= len(e.z.Records)
			delete(c.m, k)
			return
		}
		skip--
	}
}

// clone is a deep copy of z as decoding its JSON would give it: no
// monotonic clock readings. TestZoneCloneIsDeep keeps it in step with
// Zone's fields.
func (z *Zone) clone() *Zone {
	c := *z
	c.Records = slices.Clone(z.Records)
	c.DS = slices.Clone(z.DS)
	c.RotateAfter = z.RotateAfter.Round(0)
	c.CreatedAt = z.CreatedAt.Round(0)
	c.UpdatedAt = z.UpdatedAt.Round(0)
	return &c
}
