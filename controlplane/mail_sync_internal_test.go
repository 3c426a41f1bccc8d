package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const testDomain = "alice.example.com"

func mailSet(suspended bool, domains []*store.MailDomain, boxes []*store.Mailbox) *store.MailSet {
	set := &store.MailSet{Account: &store.Account{ID: "a1", Username: "alice", Node: "n1", Suspended: suspended, Generation: 1, AppliedGeneration: 1},
		Domains: map[string]*store.MailDomain{}, Mailboxes: map[string]*store.Mailbox{}}
	for _, d := range domains {
		set.Domains[d.Domain] = d
	}
	for _, m := range boxes {
		set.Mailboxes[m.Address] = m
	}
	return set
}

func served(gen int64) store.MailStatus {
	return store.MailStatus{ObservedGeneration: gen, State: store.MailActive, Served: true, Node: "n1"}
}

func box(gen int64, st store.MailStatus) *store.Mailbox {
	return &store.Mailbox{Address: "bob@" + testDomain, Domain: testDomain, QuotaMB: 100, Node: "n1", Generation: gen,
		SealedPassword: []byte("sealed"), PasswordGeneration: 1, Status: st}
}

func mailResult(t *testing.T, r *agentpb.TaskResult) []byte {
	t.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSyncMailTasks: a task for every object behind its spec or the
// account's suspension, a mailbox only once its domain is served, a
// domain's deletion only once its mailboxes are gone, the sealed password
// only while not applied.
func TestSyncMailTasks(t *testing.T) {
	dom := func(gen int64, st store.MailStatus) *store.MailDomain {
		return &store.MailDomain{Domain: testDomain, Generation: gen, Status: st}
	}
	applied := store.MailStatus{ObservedGeneration: 1, State: store.MailActive, PasswordGeneration: 1, Node: "n1"}
	onN0 := func(st store.MailStatus) store.MailStatus { st.Node = "n0"; return st }
	cases := []struct {
		name      string
		set       *store.MailSet
		placed    bool
		want      []string
		password  bool // the mailbox ensure carries the sealed password
		suspended bool
	}{
		{"new domain and mailbox: the domain first", mailSet(false, []*store.MailDomain{dom(1, store.MailStatus{})}, []*store.Mailbox{box(1, store.MailStatus{})}), true, []string{"ensure_mail_domain"}, false, false},
		{"served domain, new mailbox", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(1, store.MailStatus{})}), true, []string{"ensure_mailbox"}, true, false},
		{"domain changed, served before", mailSet(false, []*store.MailDomain{dom(2, served(1))}, []*store.Mailbox{box(1, store.MailStatus{})}), true, []string{"ensure_mail_domain", "ensure_mailbox"}, true, false},
		{"converged", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(1, applied)}), true, nil, false, false},
		{"quota changed, password applied", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(2, applied)}), true, []string{"ensure_mailbox"}, false, false},
		{"account suspended", mailSet(true, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(1, applied)}), true, []string{"ensure_mail_domain", "ensure_mailbox"}, false, true},
		{"failed stays failed", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(2, store.MailStatus{ObservedGeneration: 2, State: store.MailFailed})}), true, nil, false, false},
		{"in flight", mailSet(false, []*store.MailDomain{dom(2, store.MailStatus{TaskID: "T1", TaskAction: store.MailTaskEnsure, Served: true})}, nil), true, nil, false, false},
		{"not placed", mailSet(false, []*store.MailDomain{dom(1, store.MailStatus{})}, nil), false, nil, false, false},
		{"placed, not applied on its node yet", func() *store.MailSet {
			set := mailSet(false, []*store.MailDomain{dom(1, store.MailStatus{})}, []*store.Mailbox{box(1, store.MailStatus{})})
			set.Account.AppliedGeneration = 0
			return set
		}(), true, nil, false, false},
		{"deleted mailbox", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{func() *store.Mailbox { m := box(2, applied); m.Deleted = true; return m }()}), true, []string{"delete_mailbox"}, false, false},
		{"deleted domain waits for its mailboxes", mailSet(false, []*store.MailDomain{func() *store.MailDomain { d := dom(2, served(1)); d.Deleted = true; return d }()}, []*store.Mailbox{box(1, applied)}), true, nil, false, false},
		{"account moved: the domain first", mailSet(false, []*store.MailDomain{dom(1, onN0(served(1)))}, []*store.Mailbox{box(1, onN0(applied))}), true, []string{"ensure_mail_domain"}, false, false},
		{"account moved: mailboxes with the password", mailSet(false, []*store.MailDomain{dom(1, served(1))}, []*store.Mailbox{box(1, onN0(applied))}), true, []string{"ensure_mailbox"}, true, false},
		{"deleted domain", mailSet(false, []*store.MailDomain{func() *store.MailDomain { d := dom(2, served(1)); d.Deleted = true; return d }()}, nil), true, []string{"delete_mail_domain"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !c.placed {
				c.set.Account.Node = ""
			}
			ch := syncMail(c.set, nil, nil, 1000, time.Now())
			var got []string
			for _, mt := range ch.Tasks {
				got = append(got, taskAction(mt.Spec))
				if e := mt.Spec.GetEnsureMailbox(); e != nil {
					if (len(e.GetSealedPassword()) > 0) != c.password {
						t.Errorf("sealed password sent: %v, want %v", len(e.GetSealedPassword()) > 0, c.password)
					}
					if e.GetSuspended() != c.suspended || e.GetUsername() != "alice" || e.GetQuotaMb() != 100 {
						t.Errorf("ensure_mailbox %v", e)
					}
				}
				if e := mt.Spec.GetEnsureMailDomain(); e != nil && e.GetSuspended() != c.suspended {
					t.Errorf("ensure_mail_domain suspended %v, want %v", e.GetSuspended(), c.suspended)
				}
				st := ch.Mailboxes[mt.Mailbox]
				if mt.Domain != "" {
					st = ch.Domains[mt.Domain]
				}
				if st == nil || st.TaskAction == "" || st.TaskGeneration != mt.Spec.GetGeneration() {
					t.Errorf("task %s: status %+v", taskAction(mt.Spec), st)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("tasks %v, want %v", got, c.want)
			}
		})
	}
}

// TestPlacementWatch: an account with mail is queued when its node
// applies it for the first time (mail waits for that), when it moves and
// when its suspension changes; not for other changes. An account without
// mail is not queued, and one whose mail is listed after its placement
// changed is queued by the listing and then by the next change.
func TestPlacementWatch(t *testing.T) {
	mail := &mailAccounts{has: map[string]bool{}}
	w := &placementWatch{mail: mail, seen: map[string]accountPlacement{}}
	ev := func(a store.Account) store.Event {
		v, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return store.Event{Name: a.ID, Value: v}
	}
	if _, queue, _ := w.handle(ev(store.Account{ID: "plain", Generation: 1, Node: "n1"})); queue {
		t.Error("an account without mail queued")
	}
	if _, queue, _ := w.handle(ev(store.Account{ID: "plain", Generation: 1, Node: "n2"})); queue {
		t.Error("an account without mail queued on a move")
	}
	if _, queue, _ := mail.change(store.Event{Name: "plain", Value: []byte(store.MailChangedStatus + " 2026-12-07T00:00:00Z")}); !queue {
		t.Error("an account listed with mail for the first time not queued")
	}
	if _, queue, _ := mail.change(store.Event{Name: "plain", Value: []byte(store.MailChangedStatus + " 2026-12-07T00:00:01Z")}); queue {
		t.Error("a status change of known mail queued")
	}
	if _, queue, _ := w.handle(ev(store.Account{ID: "plain", Generation: 1, Node: "n3"})); !queue {
		t.Error("a move after the mail was listed not queued")
	}
	if _, queue, _ := mail.change(store.Event{Name: "plain", Deleted: true}); queue || mail.contains("plain") {
		t.Error("a deleted account's mail kept")
	}
	mail.has["a1"] = true
	steps := []struct {
		name  string
		a     store.Account
		queue bool
	}{
		{"created", store.Account{ID: "a1", Generation: 1}, false},
		{"placed", store.Account{ID: "a1", Generation: 1, Node: "n1"}, true},
		{"provisioning", store.Account{ID: "a1", Generation: 1, Node: "n1", Status: store.AccountProvisioning}, false},
		{"applied", store.Account{ID: "a1", Generation: 1, AppliedGeneration: 1, Node: "n1", Status: store.AccountActive}, true},
		{"a new site applied", store.Account{ID: "a1", Generation: 2, AppliedGeneration: 2, Node: "n1", Status: store.AccountActive}, false},
		{"suspended", store.Account{ID: "a1", Generation: 3, AppliedGeneration: 2, Node: "n1", Suspended: true, Status: store.AccountActive}, true},
	}
	for _, s := range steps {
		if _, queue, _ := w.handle(ev(s.a)); queue != s.queue {
			t.Errorf("%s: queued %v, want %v", s.name, queue, s.queue)
		}
	}
}

// TestSyncMailOutcomes: finished tasks go into the statuses: ACTIVE with
// the DKIM keys the node reported, FAILED with its reason, the password
// generation applied and the usage of a mailbox, a successful delete drops
// the object; a lost task is sent again.
func TestSyncMailOutcomes(t *testing.T) {
	inFlight := func(id string, gen, pw int64, action string) store.MailStatus {
		return store.MailStatus{TaskID: id, TaskAction: action, TaskGeneration: gen, TaskPassword: pw}
	}
	set := mailSet(false,
		[]*store.MailDomain{{Domain: testDomain, Generation: 1, DKIM: []store.MailDKIM{{Selector: "np1"}}, Status: inFlight("TD", 1, 0, store.MailTaskEnsure)}},
		[]*store.Mailbox{box(1, inFlight("TB", 1, 1, store.MailTaskEnsure))})
	gone := box(3, inFlight("TG", 3, 0, store.MailTaskDelete))
	gone.Address, gone.Deleted = "gone@"+testDomain, true
	set.Mailboxes[gone.Address] = gone
	failed := box(1, inFlight("TF", 1, 1, store.MailTaskEnsure))
	failed.Address = "fail@" + testDomain
	set.Mailboxes[failed.Address] = failed
	lost := box(1, inFlight("TL", 1, 1, store.MailTaskEnsure))
	lost.Address = "lost@" + testDomain
	set.Mailboxes[lost.Address] = lost

	finished := map[string]*store.Task{
		"TD": {ID: "TD", Node: "n1", Status: store.TaskSucceeded, Result: mailResult(t, &agentpb.TaskResult{Result: &agentpb.TaskResult_MailDomain{MailDomain: &agentpb.MailDomainResult{
			Domain: testDomain, DkimKeys: []*agentpb.MailDKIMKey{{Selector: "np1", Txt: "v=DKIM1; k=rsa; p=AB"}}}}})},
		"TB": {ID: "TB", Node: "n1", Status: store.TaskSucceeded, FinishedAt: time.Now(), Result: mailResult(t, &agentpb.TaskResult{Result: &agentpb.TaskResult_Mailbox{Mailbox: &agentpb.MailboxResult{
			Address: "bob@" + testDomain, UsedBytes: 4096, Messages: 3, PasswordChanged: true}}})},
		"TG": {ID: "TG", Node: "n1", Status: store.TaskSucceeded},
		"TF": {ID: "TF", Node: "n1", Status: store.TaskFailed, Error: "quota out of range"},
		"TL": store.TaskLost,
	}
	ch := syncMail(set, finished, nil, 1000, time.Now())
	if d := ch.Domains[testDomain]; d == nil || d.State != store.MailActive || !d.Served || len(d.DKIM) != 1 || d.DKIM[0].TXT == "" || d.TaskID != "" {
		t.Errorf("domain status %+v", d)
	}
	if b := ch.Mailboxes["bob@"+testDomain]; b == nil || b.State != store.MailActive || b.PasswordGeneration != 1 || b.UsedBytes != 4096 || b.Messages != 3 {
		t.Errorf("mailbox status %+v", b)
	}
	if f := ch.Mailboxes[failed.Address]; f == nil || f.State != store.MailFailed || f.Reason != "quota out of range" || f.ObservedGeneration != 1 {
		t.Errorf("failed mailbox status %+v", f)
	}
	if !slices.Equal(ch.DroppedMailboxes, []string{gone.Address}) {
		t.Errorf("dropped %v", ch.DroppedMailboxes)
	}
	// The lost task's mailbox is sent again (the domain is served now: the
	// same sync recorded it).
	var again []string
	for _, mt := range ch.Tasks {
		again = append(again, mt.Mailbox)
	}
	if !slices.Equal(again, []string{lost.Address}) {
		t.Errorf("tasks written for %v, want the lost one's", again)
	}
	if !ch.Answered {
		t.Error("outcomes recorded without Answered")
	}
	if !ch.More {
		t.Error("a new DKIM key was reported and no round follows to publish it")
	}
}

// TestSyncMailDKIM walks a selector through enable, publication and
// rotation: the node creates the key and reports its TXT, the record is
// published, then the selector signs in a new generation; a rotation's new
// selector signs only once published, and the old one stops signing and
// goes with its record after the grace period.
func TestSyncMailDKIM(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	d := &store.MailDomain{Domain: testDomain, Generation: 2, DKIM: []store.MailDKIM{{Selector: "np1"}},
		Status: store.MailStatus{ObservedGeneration: 2, State: store.MailActive, Served: true, Node: "n1",
			DKIM: []store.MailDKIMKey{{Selector: "np1", TXT: "v=DKIM1; k=rsa; p=AB"}}}}
	set := mailSet(false, []*store.MailDomain{d}, nil)
	recs := dkimRecords(set, now)
	if len(recs) != 1 || recs[0].Selector != "np1" || recs[0].TXT == "" || recs[0].Remove {
		t.Fatalf("records to publish %+v", recs)
	}
	busy := *d
	busy.Status.TaskID = "T9"
	if recs := dkimRecords(mailSet(false, []*store.MailDomain{&busy}, nil), now); len(recs) != 0 {
		t.Fatalf("published while a task is in flight: %+v", recs)
	}
	// Not published (the zone write failed): nothing advances.
	if ch := syncMail(set, nil, nil, 1000, now); len(ch.DomainSpecs)+len(ch.Tasks) != 0 {
		t.Fatalf("advanced without publication: %+v", ch)
	}
	ch := syncMail(set, nil, map[string]bool{testDomain + "/np1": true}, 1000, now)
	if len(ch.DomainSpecs) != 1 || len(ch.Tasks) != 1 {
		t.Fatalf("after publication: specs %d tasks %d", len(ch.DomainSpecs), len(ch.Tasks))
	}
	nd := ch.DomainSpecs[0]
	if nd.Generation != 3 || !nd.DKIM[0].Signing || !nd.DKIM[0].PublishedAt.Equal(now) {
		t.Fatalf("spec after publication %+v", nd)
	}
	sel := ch.Tasks[0].Spec.GetEnsureMailDomain().GetDkimSelectors()
	if len(sel) != 1 || !sel[0].GetSigning() || ch.Tasks[0].Spec.GetGeneration() != 3 {
		t.Fatalf("ensure after publication %v", ch.Tasks[0].Spec)
	}

	// Rotation: np2 added; the node reported its key.
	nd.DKIM = append(nd.DKIM, store.MailDKIM{Selector: "np2"})
	nd.Generation = 4
	nd.Status = store.MailStatus{ObservedGeneration: 4, State: store.MailActive, Served: true, Node: "n1", DKIM: []store.MailDKIMKey{
		{Selector: "np1", TXT: "v=DKIM1; k=rsa; p=AB", Signing: true}, {Selector: "np2", TXT: "v=DKIM1; k=rsa; p=CD"}}}
	set = mailSet(false, []*store.MailDomain{nd}, nil)
	if recs := dkimRecords(set, now); len(recs) != 1 || recs[0].Selector != "np2" {
		t.Fatalf("rotation publishes %+v", recs)
	}
	later := now.Add(time.Hour)
	ch = syncMail(set, nil, map[string]bool{testDomain + "/np2": true}, 1000, later)
	rd := ch.DomainSpecs[0]
	if rd.DKIM[0].Signing || !rd.DKIM[0].RetireAt.Equal(later.Add(dkimGrace)) || !rd.DKIM[1].Signing {
		t.Fatalf("after the rotation's publication %+v", rd.DKIM)
	}
	if signing := ch.Tasks[0].Spec.GetEnsureMailDomain().GetDkimSelectors(); signing[0].GetSigning() || !signing[1].GetSigning() {
		t.Fatalf("rotation ensure %v", signing)
	}

	// Within the grace period nothing is withdrawn; after it, np1 is.
	rd.Status = store.MailStatus{ObservedGeneration: rd.Generation, State: store.MailActive, Served: true, Node: "n1"}
	set = mailSet(false, []*store.MailDomain{rd}, nil)
	if recs := dkimRecords(set, later.Add(time.Hour)); len(recs) != 0 {
		t.Fatalf("withdrawn within the grace period: %+v", recs)
	}
	end := later.Add(dkimGrace)
	recs = dkimRecords(set, end)
	if len(recs) != 1 || !recs[0].Remove || recs[0].Selector != "np1" {
		t.Fatalf("after the grace period %+v", recs)
	}
	ch = syncMail(set, nil, map[string]bool{testDomain + "/np1": true}, 1000, end)
	if fd := ch.DomainSpecs[0]; len(fd.DKIM) != 1 || fd.DKIM[0].Selector != "np2" || !fd.DKIM[0].Signing {
		t.Fatalf("after withdrawal %+v", fd.DKIM)
	}
}

// TestSyncMailBudget: a sync larger than its budget writes a part and says
// there is more.
func TestSyncMailBudget(t *testing.T) {
	set := mailSet(false, []*store.MailDomain{{Domain: testDomain, Generation: 1, Status: served(1)}}, nil)
	for i := range 100 {
		m := box(1, store.MailStatus{})
		m.Address = fmt.Sprintf("u%03d@%s", i, testDomain)
		set.Mailboxes[m.Address] = m
	}
	ch := syncMail(set, nil, nil, 40, time.Now())
	if !ch.More || len(ch.Tasks) == 0 || len(ch.Tasks)*(costTask+costStatus) > 40 {
		t.Fatalf("budget 40: %d tasks, more %v", len(ch.Tasks), ch.More)
	}
	for _, mt := range ch.Tasks {
		if ch.Mailboxes[mt.Mailbox] == nil {
			t.Fatalf("task for %s without its status", mt.Mailbox)
		}
	}
	if len(ch.Mailboxes) != len(ch.Tasks) {
		t.Fatalf("%d statuses for %d tasks", len(ch.Mailboxes), len(ch.Tasks))
	}

	// Outcomes that drop their object stay within the budget too.
	set = mailSet(false, []*store.MailDomain{{Domain: testDomain, Generation: 1, Status: served(1)}}, nil)
	finished := map[string]*store.Task{}
	for i := range 100 {
		m := box(2, store.MailStatus{TaskID: fmt.Sprintf("T%d", i), TaskAction: store.MailTaskDelete, TaskGeneration: 2})
		m.Address, m.Deleted = fmt.Sprintf("u%03d@%s", i, testDomain), true
		set.Mailboxes[m.Address] = m
		finished[m.Status.TaskID] = &store.Task{ID: m.Status.TaskID, Node: "n1", Status: store.TaskSucceeded}
	}
	ch = syncMail(set, finished, nil, 41, time.Now())
	cost := len(ch.Mailboxes)*costStatus + len(ch.DroppedMailboxes)*costDrop + len(ch.Tasks)*costTask
	if !ch.More || len(ch.DroppedMailboxes) == 0 || cost > 41 {
		t.Fatalf("drops: %d dropped, cost %d of 41, more %v", len(ch.DroppedMailboxes), cost, ch.More)
	}
}

// The default records of an account's zone publish SPF with the node's
// address (ip4: or ip6:) and a DMARC policy.
func TestDefaultMailRecords(t *testing.T) {
	for _, c := range []struct{ host, spf string }{
		{"192.0.2.10", `"v=spf1 mx a ip4:192.0.2.10 ~all"`},
		{"2001:db8::10", `"v=spf1 mx a ip6:2001:db8::10 ~all"`},
	} {
		if err := validate.SPF(defaultSPF(c.host)); err != nil {
			t.Errorf("default SPF refused by setSPF's check: %v", err)
		}
		if err := validate.DMARC(defaultDMARC("example.com")); err != nil {
			t.Errorf("default DMARC refused by setDMARC's check: %v", err)
		}
		z := &store.Zone{Name: "example.com"}
		rs := defaultRecords(z, c.host)
		has := func(name, content string) bool {
			return slices.ContainsFunc(rs, func(r store.ZoneRecord) bool { return r.Name == name && r.Type == "TXT" && r.Content == content })
		}
		if !has("example.com.", c.spf) {
			t.Errorf("%s: no SPF %s in %+v", c.host, c.spf, rs)
		}
		if !has("_dmarc.example.com.", `"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"`) {
			t.Errorf("%s: no DMARC in %+v", c.host, rs)
		}
	}
}

// replaceTXT bumps the zone's generation for a change only.
func TestReplaceTXT(t *testing.T) {
	z := &store.Zone{Name: "example.com", Generation: 3}
	if err := replaceTXT(z, "np1._domainkey.example.com.", "v=DKIM1; k=rsa; p=AB", nil); err != nil || z.Generation != 4 || len(z.Records) != 1 {
		t.Fatalf("publish: %v, generation %d, %+v", err, z.Generation, z.Records)
	}
	if err := replaceTXT(z, "np1._domainkey.example.com.", "v=DKIM1; k=rsa; p=AB", nil); !errors.Is(err, errTXTUnchanged) || z.Generation != 4 {
		t.Fatalf("again: %v, generation %d", err, z.Generation)
	}
	z.Deleted = true
	if err := replaceTXT(z, "np1._domainkey.example.com.", "", nil); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("deleted zone: %v", err)
	}
}

// TestSyncMailFailureSettles: an ensure that fails on a suspended or moved
// account is recorded with what it attempted, so the next syncs send
// nothing new until the object changes (no retry loop); a new generation
// is sent again.
func TestSyncMailFailureSettles(t *testing.T) {
	inFlight := func(node string, suspended bool) store.MailStatus {
		return store.MailStatus{ObservedGeneration: 1, State: store.MailActive, Served: true, Node: node, PasswordGeneration: 1,
			TaskID: "TF", TaskAction: store.MailTaskEnsure, TaskGeneration: 2, TaskSuspended: suspended}
	}
	failed := map[string]*store.Task{"TF": {ID: "TF", Node: "n1", Status: store.TaskFailed, Error: "disk full"}}
	cases := []struct {
		name      string
		suspended bool
		node      string // where the object was applied before
		domain    bool   // the domain fails (else the mailbox)
	}{
		{"suspended account, domain", true, "n1", true},
		{"suspended account, mailbox", true, "n1", false},
		{"moved account, domain", false, "n0", true},
		{"moved account, mailbox", false, "n0", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &store.MailDomain{Domain: testDomain, Generation: 1, Status: store.MailStatus{ObservedGeneration: 1, State: store.MailActive, Served: true, Node: "n1", Suspended: c.suspended}}
			m := box(1, store.MailStatus{ObservedGeneration: 1, State: store.MailActive, Node: "n1", PasswordGeneration: 1, Suspended: c.suspended})
			if c.domain {
				d.Generation, d.Status = 2, inFlight(c.node, c.suspended)
			} else {
				m.Generation, m.Status = 2, inFlight(c.node, c.suspended)
			}
			set := mailSet(c.suspended, []*store.MailDomain{d}, []*store.Mailbox{m})
			ch := syncMail(set, failed, nil, 1000, time.Now())
			for _, mt := range ch.Tasks {
				t.Errorf("task %s sent with the failure recorded", taskAction(mt.Spec))
			}
			for name, st := range ch.Domains {
				set.Domains[name].Status = *st
			}
			for addr, st := range ch.Mailboxes {
				set.Mailboxes[addr].Status = *st
			}
			for i := range 3 {
				if ch := syncMail(set, nil, nil, 1000, time.Now()); len(ch.Tasks) > 0 {
					t.Fatalf("sync %d after the failure sent %s", i, taskAction(ch.Tasks[0].Spec))
				}
			}
			var st store.MailState
			if c.domain {
				st, _ = set.Domains[testDomain].State()
				set.Domains[testDomain].Generation = 3
			} else {
				st, _ = set.Mailboxes[m.Address].State()
				set.Mailboxes[m.Address].Generation = 3
			}
			if st != store.MailFailed {
				t.Errorf("state %s, want FAILED", st)
			}
			if ch := syncMail(set, nil, nil, 1000, time.Now()); len(ch.Tasks) != 1 {
				t.Fatalf("a new generation sent %d tasks, want 1", len(ch.Tasks))
			}
		})
	}
}

// TestSyncMailDKIMDrift: a published selector whose key the node reports
// differently (the account moved, the node lost its key) stops signing,
// its new TXT is published again, and it signs again; a node that has not
// reported a selector's key is sent it non-signing.
func TestSyncMailDKIMDrift(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	const oldTXT, newTXT = "v=DKIM1; k=rsa; p=OLD", "v=DKIM1; k=rsa; p=NEW"
	d := &store.MailDomain{Domain: testDomain, Generation: 5, DKIM: []store.MailDKIM{{Selector: "np1", Signing: true, PublishedAt: now.Add(-time.Hour), TXT: oldTXT}},
		Status: store.MailStatus{ObservedGeneration: 5, State: store.MailActive, Served: true, Node: "n0", DKIM: []store.MailDKIMKey{{Selector: "np1", TXT: oldTXT, Signing: true}}}}
	set := mailSet(false, []*store.MailDomain{d}, nil)
	// Moved to n1: the ensure sends np1 non-signing.
	ch := syncMail(set, nil, nil, 1000, now)
	if len(ch.Tasks) != 1 {
		t.Fatalf("tasks %d", len(ch.Tasks))
	}
	if sel := ch.Tasks[0].Spec.GetEnsureMailDomain().GetDkimSelectors(); len(sel) != 1 || sel[0].GetSigning() {
		t.Fatalf("a node that has not reported the key is told to sign: %v", sel)
	}
	// n1 reports another key: the selector is unpublished and not signing.
	d.Status = store.MailStatus{ObservedGeneration: 5, State: store.MailActive, Served: true, Node: "n1", DKIM: []store.MailDKIMKey{{Selector: "np1", TXT: newTXT}}}
	ch = syncMail(set, nil, nil, 1000, now)
	if len(ch.DomainSpecs) != 1 {
		t.Fatalf("no spec change on a new key: %+v", ch)
	}
	nd := ch.DomainSpecs[0]
	if k := nd.DKIM[0]; k.Signing || !k.PublishedAt.IsZero() || nd.Generation != 6 {
		t.Fatalf("after the drift %+v gen %d", k, nd.Generation)
	}
	if sel := ch.Tasks[0].Spec.GetEnsureMailDomain().GetDkimSelectors(); sel[0].GetSigning() {
		t.Fatalf("drifted selector sent signing: %v", sel)
	}
	// The new TXT is published, then it signs.
	nd.Status = store.MailStatus{ObservedGeneration: 6, State: store.MailActive, Served: true, Node: "n1", DKIM: []store.MailDKIMKey{{Selector: "np1", TXT: newTXT}}}
	set = mailSet(false, []*store.MailDomain{nd}, nil)
	if recs := dkimRecords(set, now); len(recs) != 1 || recs[0].TXT != newTXT {
		t.Fatalf("republish %+v", recs)
	}
	ch = syncMail(set, nil, map[string]bool{testDomain + "/np1": true}, 1000, now)
	if len(ch.DomainSpecs) != 1 || !ch.DomainSpecs[0].DKIM[0].Signing || ch.DomainSpecs[0].DKIM[0].TXT != newTXT {
		t.Fatalf("after republication %+v", ch.DomainSpecs)
	}
	if sel := ch.Tasks[0].Spec.GetEnsureMailDomain().GetDkimSelectors(); !sel[0].GetSigning() {
		t.Fatalf("republished selector not signing: %v", sel)
	}
	// Converged: the node signs with the published key; nothing more.
	sd := ch.DomainSpecs[0]
	sd.Status = store.MailStatus{ObservedGeneration: sd.Generation, State: store.MailActive, Served: true, Node: "n1", DKIM: []store.MailDKIMKey{{Selector: "np1", TXT: newTXT, Signing: true}}}
	if ch := syncMail(mailSet(false, []*store.MailDomain{sd}, nil), nil, nil, 1000, now); len(ch.DomainSpecs)+len(ch.Tasks) != 0 {
		t.Fatalf("converged domain changed: %+v", ch)
	}
}

// fakeZones is a mailZones over zones in memory.
type fakeZones struct{ zones map[string]*store.Zone }

func (f *fakeZones) ChangeZone(_ context.Context, name string, _ store.AuditEvent, fn func(*store.Zone) error) (*store.Zone, error) {
	z, ok := f.zones[name]
	if !ok {
		return nil, fmt.Errorf("zone %s: %w", name, store.ErrNotFound)
	}
	c := *z
	c.Records = slices.Clone(z.Records)
	if err := fn(&c); err != nil {
		return nil, err
	}
	f.zones[name] = &c
	return &c, nil
}

// TestPublishDKIMServed: a DKIM record counts as published only once the
// zone that holds it is served at a generation that has it (not FAILED);
// the zone's record checks refuse a TXT record beside a CNAME; a parent
// zone of another account is never written.
func TestPublishDKIMServed(t *testing.T) {
	ctx := context.Background()
	a := &store.Account{ID: "a1", Username: "alice"}
	zones := &fakeZones{zones: map[string]*store.Zone{"example.com": {Name: "example.com", Account: "a1", Generation: 3, AppliedGeneration: 3}}}
	rec := dkimRecord{Domain: "example.com", Selector: "np1", TXT: "v=DKIM1; k=rsa; p=AB"}
	if served, err := publishDKIM(ctx, zones, a, rec); err != nil || served {
		t.Fatalf("first write: served %v, %v", served, err)
	}
	if served, err := publishDKIM(ctx, zones, a, rec); err != nil || served {
		t.Fatalf("written, not applied: served %v, %v", served, err)
	}
	zones.zones["example.com"].AppliedGeneration = 4
	zones.zones["example.com"].Status = store.ZoneFailed
	if served, _ := publishDKIM(ctx, zones, a, rec); served {
		t.Fatal("a FAILED zone serves the record")
	}
	zones.zones["example.com"].Status = store.ZoneActive
	if served, err := publishDKIM(ctx, zones, a, rec); err != nil || !served {
		t.Fatalf("applied: served %v, %v", served, err)
	}

	// A CNAME at the selector's name: refused, the zone is left alone.
	z := zones.zones["example.com"]
	z.Records = append(z.Records, store.ZoneRecord{ID: "9", Name: "np2._domainkey.example.com.", Type: "CNAME", Content: "elsewhere.example.net.", TTL: 3600})
	gen := z.Generation
	if _, err := publishDKIM(ctx, zones, a, dkimRecord{Domain: "example.com", Selector: "np2", TXT: "v=DKIM1; k=rsa; p=CD"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("TXT beside a CNAME: %v", err)
	}
	if zones.zones["example.com"].Generation != gen {
		t.Fatal("the refused record was written")
	}

	// sub.example.com has no zone; its parent is another account's.
	other := &store.Account{ID: "a2", Username: "bob"}
	if _, err := publishDKIM(ctx, zones, other, dkimRecord{Domain: "sub.example.com", Selector: "np1", TXT: "v=DKIM1; k=rsa; p=EF"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("another account's parent zone: %v", err)
	}
	if zones.zones["example.com"].Generation != gen {
		t.Fatal("another account's zone was written")
	}
}

// TestNoteDKIMRefusals: a refused DKIM record's reason is written on the
// domain's status, and cleared once the record is published.
func TestNoteDKIMRefusals(t *testing.T) {
	d := &store.MailDomain{Domain: testDomain, Generation: 1, Status: served(1)}
	set := mailSet(false, []*store.MailDomain{d}, nil)
	ch := store.NewMailSync()
	noteDKIMRefusals(set, ch, map[string]string{testDomain: "CNAME at the name"})
	if st := ch.Domains[testDomain]; st == nil || st.DKIMReason != "CNAME at the name" || st.ObservedGeneration != 1 {
		t.Fatalf("refusal not noted: %+v", st)
	}
	d.Status.DKIMReason = "CNAME at the name"
	ch = store.NewMailSync()
	noteDKIMRefusals(set, ch, map[string]string{testDomain: "CNAME at the name"})
	if len(ch.Domains) != 0 {
		t.Fatal("an unchanged refusal written again")
	}
	noteDKIMRefusals(set, ch, nil)
	if st := ch.Domains[testDomain]; st == nil || st.DKIMReason != "" {
		t.Fatalf("refusal not cleared: %+v", st)
	}
}
