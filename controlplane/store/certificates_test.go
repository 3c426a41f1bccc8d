package store_test

import (
	"context"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// PutCertificate creates a record there is none of, updates the one there
// is, and writes nothing when fn says ErrUnchanged.
func TestPutCertificate(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	var createdSeen []bool
	put := func(fn func(c *store.Certificate) error) (*store.Certificate, error) {
		return s.PutCertificate(ctx, "example.com", func(c *store.Certificate, created bool) error {
			createdSeen = append(createdSeen, created)
			return fn(c)
		}, store.AuditEvent{})
	}
	if _, err := put(func(c *store.Certificate) error { c.Account, c.Domains = "a1", []string{"example.com"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := put(func(c *store.Certificate) error {
		c.Generation++
		c.Domains = append(c.Domains, "www.example.com")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, err := put(func(*store.Certificate) error { return store.ErrUnchanged }); err != nil || c.Generation != 2 {
		t.Fatalf("unchanged: %+v, %v", c, err)
	}
	c, err := s.GetCertificate(ctx, "example.com")
	if err != nil || c.Account != "a1" || len(c.Domains) != 2 || c.Generation != 2 {
		t.Fatalf("record %+v, %v", c, err)
	}
	if len(createdSeen) != 3 || !createdSeen[0] || createdSeen[1] || createdSeen[2] {
		t.Fatalf("created flags %v", createdSeen)
	}
}
