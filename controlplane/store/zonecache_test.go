package store

import (
	"reflect"
	"testing"
	"time"
)

// TestZoneCloneIsDeep fails when Zone gains a field that shares memory
// between copies (slice, map, pointer) and clone does not copy it: a cached
// zone would then change under its readers.
func TestZoneCloneIsDeep(t *testing.T) {
	copied := map[string]bool{"Records": true, "DS": true}
	typ := reflect.TypeFor[Zone]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		switch f.Type.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface, reflect.Chan:
			if !copied[f.Name] {
				t.Errorf("Zone.%s (%s) is not copied by clone", f.Name, f.Type)
			}
		case reflect.Struct:
			if f.Type != reflect.TypeFor[time.Time]() {
				for j := range f.Type.NumField() {
					switch f.Type.Field(j).Type.Kind() {
					case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface, reflect.Chan:
						t.Errorf("Zone.%s.%s is not copied by clone", f.Name, f.Type.Field(j).Name)
					}
				}
			}
		}
	}
	z := &Zone{Name: "example.com", Records: []ZoneRecord{{ID: "r1", Name: "example.com.", Type: "A", Content: "192.0.2.1", TTL: 300}},
		DS: []string{"1 13 2 ab"}, CreatedAt: time.Now(), UpdatedAt: time.Now().UTC()}
	c := z.clone()
	c.Records[0].Content = "192.0.2.2"
	c.DS[0] = "changed"
	if z.Records[0].Content != "192.0.2.1" || z.DS[0] != "1 13 2 ab" {
		t.Fatal("clone shares memory with the original")
	}
	// Decoding a zone's JSON drops monotonic clock readings; so does clone.
	if c.CreatedAt != c.CreatedAt.Round(0) {
		t.Error("clone keeps a monotonic clock reading")
	}
}

func TestZoneCacheBound(t *testing.T) {
	var c zoneCache
	big := &Zone{Records: make([]ZoneRecord, zoneCacheRecords/20)}
	for i := range 100 {
		c.put(string(rune('a'+i%26))+string(rune('a'+i/26)), int64(i+1), big)
	}
	if c.records > zoneCacheRecords {
		t.Fatalf("cache holds %d records, bound %d", c.records, zoneCacheRecords)
	}
	n := 0
	for _, e := range c.m {
		n += len(e.z.Records)
	}
	if n != c.records {
		t.Fatalf("count %d, held %d", c.records, n)
	}
	recs := make([]ZoneRecord, zoneCacheMinRecords)
	c.put("new", 5, &Zone{Name: "new", Records: recs})
	c.put("new", 4, &Zone{Name: "old", Records: recs})
	if z := c.get("new", 5); z == nil || z.Name != "new" {
		t.Fatalf("an older revision replaced a newer one: %+v", z)
	}
	if c.get("new", 4) != nil {
		t.Fatal("a revision not held was answered")
	}
	c.drop("new")
	if c.get("new", 5) != nil {
		t.Fatal("dropped zone still answered")
	}
	c.put("new", 6, &Zone{Name: "new", Records: recs})
	c.put("new", 7, &Zone{Name: "new", Records: recs[:1]})
	if c.get("new", 6) != nil || c.get("new", 7) != nil {
		t.Fatal("a zone too small to cache left or took an entry")
	}
}
