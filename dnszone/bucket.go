package dnszone

import (
	"hash/fnv"
	"strings"
)

// Bucket is the bucket of zone name among buckets, by FNV-1a of its name
// in lower case without the final dot. The control plane and the agents
// both compute it: a secondary's set of zones travels in buckets.
func Bucket(name string, buckets uint32) uint32 {
	if buckets <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(strings.TrimSuffix(strings.ToLower(name), ".")))
	return h.Sum32() % buckets
}
