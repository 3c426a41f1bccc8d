package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestZoneStateMatchesZone: every field of ZoneState is the Zone field of
// the same name, type and JSON key, so a state decodes what a zone wrote.
func TestZoneStateMatchesZone(t *testing.T) {
	zt := reflect.TypeFor[Zone]()
	st := reflect.TypeFor[ZoneState]()
	for i := range st.NumField() {
		f := st.Field(i)
		zf, ok := zt.FieldByName(f.Name)
		if !ok || zf.Type != f.Type || zf.Tag.Get("json") != f.Tag.Get("json") {
			t.Errorf("ZoneState.%s (%s, json %q) has no twin in Zone", f.Name, f.Type, f.Tag.Get("json"))
		}
	}
	z := Zone{Name: "example.com", Node: "n1", Deleted: true, Generation: 7, AppliedGeneration: 6, TaskID: "t1", Status: ZonePending, Serial: 2026112401,
		Records: []ZoneRecord{{ID: "r1", Name: "example.com.", Type: "A", Content: "192.0.2.1", TTL: 300}}, CreatedAt: time.Now()}
	var s ZoneState
	if err := json.Unmarshal([]byte(mustJSON(z)), &s); err != nil {
		t.Fatal(err)
	}
	want := ZoneState{Name: "example.com", Node: "n1", Deleted: true, Generation: 7, AppliedGeneration: 6, TaskID: "t1", Status: ZonePending, Serial: 2026112401}
	if s != want {
		t.Fatalf("decoded %+v, want %+v", s, want)
	}
	if got := z.State(); got != want {
		t.Fatalf("State() = %+v, want %+v", got, want)
	}
}
