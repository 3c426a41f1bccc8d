package controlplane

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// TestAccountIndexList pages through every filter of the index with a
// cursor, after rows moved between statuses and nodes, and checks each page
// against a scan of the rows.
func TestAccountIndexList(t *testing.T) {
	ix := newAccountIndex(nil, nil)
	statuses := []store.AccountStatus{store.AccountPending, store.AccountActive, store.AccountSuspended}
	head := func(i, round int) store.AccountHead {
		id := fmt.Sprintf("acct%03d", i)
		return store.AccountHead{ID: id, Username: fmt.Sprintf("user%03d", i), Domain: fmt.Sprintf("d%03d.test", i),
			Owner: []string{"admin", "resa", "resb"}[i%3], Node: fmt.Sprintf("n%d", (i+round)%4), Status: statuses[(i+round)%3]}
	}
	for round := range 2 { // the second round moves every row
		for i := range 100 {
			ix.put(head(i, round))
		}
	}
	ix.remove("acct007")
	filters := []store.AccountFilter{{}, {Status: store.AccountActive}, {Node: "n2"}, {Owner: "resb"}, {Search: "user01"},
		{Owner: "resa", Status: store.AccountPending}, {Node: "nope"}, {ID: "acct042"}, {ID: "acct007"}}
	for _, f := range filters {
		var want []string
		for i := range 100 {
			h := head(i, 1)
			if h.ID == "acct007" {
				continue
			}
			if (f.Status == "" || h.Status == f.Status) && (f.Node == "" || h.Node == f.Node) && (f.Owner == "" || h.Owner == f.Owner) &&
				(f.ID == "" || h.ID == f.ID) && (f.Search == "" || strings.Contains(h.Username, f.Search) || strings.Contains(h.Domain, f.Search)) {
				want = append(want, h.ID)
			}
		}
		var got []string
		after := ""
		for {
			page, more := ix.list(f, after, 7)
			got = append(got, page...)
			if !more {
				break
			}
			after = page[len(page)-1]
		}
		if !slices.Equal(got, want) {
			t.Errorf("filter %+v: got %v, want %v", f, got, want)
		}
	}
	if n := ix.byStatus.Len() + ix.byNode.Len() + ix.byOwner.Len(); n != 3*99 {
		t.Errorf("filter indexes hold %d entries, want %d", n, 3*99)
	}
}
