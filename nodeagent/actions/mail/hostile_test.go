package mail

import (
	"strings"
	"testing"
	"unicode"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// Hostile inputs are refused by Validate before anything is touched: header
// injection with CR/LF, path traversal in local parts and domains, lookup
// file injection with ':' and newlines, Exim expansion and pipe syntax,
// over-long values.
func TestHostileInputsRefused(t *testing.T) {
	m := NewModule()
	const user = "alice"
	long := strings.Repeat("a", 65)
	dom := func(mod func(r *agentpb.EnsureMailDomainAction)) actions.Action {
		r := &agentpb.EnsureMailDomainAction{Username: user, Domain: "example.com"}
		mod(r)
		return m.NewEnsureMailDomain(r)
	}
	alias := func(local string, targets ...string) actions.Action {
		return dom(func(r *agentpb.EnsureMailDomainAction) {
			r.Aliases = []*agentpb.MailAlias{{LocalPart: local, Targets: targets}}
		})
	}
	box := func(mod func(r *agentpb.EnsureMailboxAction)) actions.Action {
		r := &agentpb.EnsureMailboxAction{Username: user, Address: "bob@example.com", QuotaMb: 100}
		mod(r)
		return m.NewEnsureMailbox(r)
	}
	addr := func(a string) actions.Action { return box(func(r *agentpb.EnsureMailboxAction) { r.Address = a }) }
	auto := func(subject, body, from string) actions.Action {
		return box(func(r *agentpb.EnsureMailboxAction) {
			r.Autoresponder = &agentpb.MailAutoresponder{Subject: subject, Body: body, From: from}
		})
	}
	cases := map[string]actions.Action{
		"domain traversal":             dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "../etc" }),
		"domain slash":                 dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "a/b.com" }),
		"domain newline":               dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "example.com\nevil.com" }),
		"domain colon":                 dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "example.com:x" }),
		"domain upper case":            dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "Example.com" }),
		"domain empty":                 dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "" }),
		"domain dollar":                dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = "${run{x}}.com" }),
		"domain overlong":              dom(func(r *agentpb.EnsureMailDomainAction) { r.Domain = strings.Repeat("a", 300) + ".com" }),
		"username traversal":           dom(func(r *agentpb.EnsureMailDomainAction) { r.Username = "../root" }),
		"username root":                dom(func(r *agentpb.EnsureMailDomainAction) { r.Username = "root" }),
		"username newline":             dom(func(r *agentpb.EnsureMailDomainAction) { r.Username = "alice\nbob" }),
		"username test prefix":         dom(func(r *agentpb.EnsureMailDomainAction) { r.Username = "nptabc" }),
		"alias colon":                  alias("a:b", "x@example.org"),
		"alias newline key":            alias("a\nroot", "x@example.org"),
		"alias star":                   alias("*", "x@example.org"),
		"alias upper":                  alias("Sales", "x@example.org"),
		"alias overlong":               alias(long, "x@example.org"),
		"alias dot start":              alias(".a", "x@example.org"),
		"alias no targets":             alias("sales"),
		"target pipe":                  alias("sales", "|/bin/sh@example.org"),
		"target file":                  alias("sales", "/etc/passwd"),
		"target newline":               alias("sales", "x@example.org\nroot: x@evil.com"),
		"target colon":                 alias("sales", ":include:/etc/shadow"),
		"target comma":                 alias("sales", "x@example.org, y@evil.com"),
		"target expansion":             alias("sales", "${run{/bin/sh}}@example.org"),
		"target fail":                  alias("sales", ":fail:"),
		"target quote":                 alias("sales", `"a b"@example.org`),
		"target crlf":                  alias("sales", "x@example.org\r\nBcc: y@evil.com"),
		"target upper (not canonical)": alias("sales", "X@example.org"),
		"alias twice": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.Aliases = []*agentpb.MailAlias{{LocalPart: "a", Targets: []string{"x@example.org"}}, {LocalPart: "a", Targets: []string{"y@example.org"}}}
		}),
		"catch-all other domain": dom(func(r *agentpb.EnsureMailDomainAction) { r.CatchAll = "x@evil.com" }),
		"catch-all pipe":         dom(func(r *agentpb.EnsureMailDomainAction) { r.CatchAll = "|/bin/sh" }),
		"catch-all newline":      dom(func(r *agentpb.EnsureMailDomainAction) { r.CatchAll = "a\nb" }),
		"catch-all include":      dom(func(r *agentpb.EnsureMailDomainAction) { r.CatchAll = ":include:/etc/passwd" }),
		"dkim selector traversal": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.DkimSelectors = []*agentpb.MailDKIMSelector{{Selector: "../x"}}
		}),
		"dkim selector dot": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.DkimSelectors = []*agentpb.MailDKIMSelector{{Selector: "a.b"}}
		}),
		"dkim selector empty": dom(func(r *agentpb.EnsureMailDomainAction) { r.DkimSelectors = []*agentpb.MailDKIMSelector{{Selector: ""}} }),
		"dkim two signing": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.DkimSelectors = []*agentpb.MailDKIMSelector{{Selector: "a", Signing: true}, {Selector: "b", Signing: true}}
		}),
		"spam score too low": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.Spam = &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 1}
		}),
		"spam score too high": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.Spam = &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 100000}
		}),
		"spam unknown action": dom(func(r *agentpb.EnsureMailDomainAction) {
			r.Spam = &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: 99}
		}),
		"address traversal":        addr("../../etc@example.com"),
		"address slash":            addr("a/b@example.com"),
		"address percent":          addr("a%d@example.com"),
		"address colon":            addr("a:b@example.com"),
		"address newline":          addr("a\n@example.com"),
		"address crlf":             addr("a\r\nRCPT TO:<x>@example.com"),
		"address plus":             addr("a+b@example.com"),
		"address upper":            addr("Bob@example.com"),
		"address no at":            addr("bob"),
		"address overlong":         addr(long + "@example.com"),
		"address dot dot":          addr("a..b@example.com"),
		"address domain traversal": addr("bob@.."),
		"address nul":              addr("bob\x00@example.com"),
		"quota zero":               box(func(r *agentpb.EnsureMailboxAction) { r.QuotaMb = 0 }),
		"quota huge":               box(func(r *agentpb.EnsureMailboxAction) { r.QuotaMb = 1 << 30 }),
		"sealed overlong":          box(func(r *agentpb.EnsureMailboxAction) { r.SealedPassword = make([]byte, maxSealed+1) }),
		"autoreply subject crlf":   auto("Away\r\nBcc: victim@example.org", "body", ""),
		"autoreply subject lf":     auto("Away\nX: y", "body", ""),
		"autoreply subject long":   auto(strings.Repeat("s", 201), "body", ""),
		"autoreply body long":      auto("Away", strings.Repeat("b", 8<<10+1), ""),
		"autoreply body nul":       auto("Away", "a\x00b", ""),
		"autoreply empty subject":  auto("", "body", ""),
		"autoreply from crlf":      auto("Away", "body", "a@example.com\r\nBcc: x@evil.com"),
		"autoreply from garbage":   auto("Away", "body", "not an address"),
		"delete traversal":         m.NewDeleteMailbox(&agentpb.DeleteMailboxAction{Username: user, Address: "../x@example.com"}),
		"delete domain traversal":  m.NewDeleteMailDomain(&agentpb.DeleteMailDomainAction{Username: user, Domain: "../../etc"}),
		"usage too many":           m.NewMailUsage(&agentpb.MailUsageAction{Username: user, Addresses: make([]string, 1001)}),
		"usage bad address":        m.NewMailUsage(&agentpb.MailUsageAction{Username: user, Addresses: []string{"a/../b@example.com"}}),
		"log lines zero":           m.NewReadMailLog(&agentpb.ReadMailLogAction{Username: user, Address: "bob@example.com", Hours: 1}),
		"log hours huge":           m.NewReadMailLog(&agentpb.ReadMailLogAction{Username: user, Address: "bob@example.com", Hours: 10000, Lines: 10}),
		"log address injection":    m.NewReadMailLog(&agentpb.ReadMailLogAction{Username: user, Address: ".*@example.com", Hours: 1, Lines: 10}),
		"queue limit zero":         m.NewMailQueue(&agentpb.MailQueueAction{}),
		"queue limit huge":         m.NewMailQueue(&agentpb.MailQueueAction{Limit: 100000}),
		"train uid zero":           m.NewTrainMail(&agentpb.TrainMailAction{Username: user, Address: "bob@example.com"}),
		"train traversal":          m.NewTrainMail(&agentpb.TrainMailAction{Username: user, Address: "../bob@example.com", Uid: 1}),
		"scan traversal":           m.NewScanMailbox(&agentpb.ScanMailboxAction{Username: user, Address: "bob@../example.com"}),
	}
	if len(cases) < 50 {
		t.Fatalf("only %d cases", len(cases))
	}
	for name, a := range cases {
		if err := a.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The renderers keep what Validate let through on one line of its file:
// accepted values cannot add lines, headers or Sieve commands.
func TestRenderersHarmless(t *testing.T) {
	r := &agentpb.EnsureMailDomainAction{Username: "alice", Domain: "example.com", CatchAll: ":fail:",
		Aliases: []*agentpb.MailAlias{{LocalPart: "sales", Targets: []string{"a+b=c@example.org", "x@example.com"}}}}
	if err := NewModule().NewEnsureMailDomain(r).Validate(); err != nil {
		t.Fatal(err)
	}
	al, err := renderAliases(r)
	if err != nil {
		t.Fatal(err)
	}
	if al != "sales: a+b=c@example.org, x@example.com\n*: :fail: no such user here\n" {
		t.Fatalf("aliases: %q", al)
	}
	v := renderVacation("bob@example.com", &agentpb.MailAutoresponder{Subject: `He said "hi" \ bye`, Body: "line\";\ndiscard;\n"})
	if !strings.HasSuffix(v, "\"line\\\";\ndiscard;\n\";\n}\n") || !strings.Contains(v, `"He said \"hi\" \\ bye"`) {
		t.Fatalf("vacation script: %s", v)
	}
	u := userLine{local: "bob", hash: "$2a$10$x", uid: 1000, gid: 1000, digest: "d", home: "/home/a/mail/example.com/bob", quotaMB: 50, nologin: "mailbox-disabled"}
	back, err := parseUserLine(u.String())
	if err != nil || back != u {
		t.Fatalf("passwd line round trip: %v %+v != %+v", err, back, u)
	}
	if strings.Contains(u.String(), "\n") {
		t.Fatal("passwd line holds a newline")
	}
}

// exim -bp output as Exim 4.96 prints it.
func TestParseQueue(t *testing.T) {
	out := " 0m   1.5K 1xZxGA-0002qd-1I <> *** frozen ***\n          alice@example.com\n\n25h    12M 1xZxGB-0002qe-2J <bob@example.com>\n        D carol@example.org\n          dave@example.org\n\n"
	q := parseQueue(out)
	if len(q) != 2 || !q[0].Frozen || q[0].Sender != "" || q[0].SizeBytes != 1536 || q[1].AgeSeconds != 25*3600 ||
		len(q[1].Recipients) != 1 || q[1].Recipients[0] != "dave@example.org" {
		t.Fatalf("parse: %v", q)
	}
}

// parseQueue reads exim's output; whatever it gets, it must not panic.
func FuzzParseQueue(f *testing.F) {
	f.Add(" 0m   1.5K 1xZxGA-0002qd-1I <> *** frozen ***\n          alice@example.com\n\n")
	f.Add("25h 12M x <a@b>\n  D c@d\n  e@f\n")
	f.Fuzz(func(t *testing.T, s string) { _ = parseQueue(s) })
}

// A passwd-file line the agent wrote reads back as it was written.
func FuzzUserLineRoundTrip(f *testing.F) {
	f.Add("bob", "$2a$10$abc", "digest", uint32(50), "mailbox-disabled")
	f.Fuzz(func(t *testing.T, local, hash, digest string, quota uint32, nologin string) {
		for _, s := range []string{local, hash, digest, nologin} {
			if strings.ContainsRune(s, ':') || strings.ContainsFunc(s, unicode.IsSpace) || s == "" {
				return // fields the agent writes never hold these
			}
		}
		if strings.HasPrefix(hash, "{") || strings.HasPrefix(nologin, "reason=") {
			return
		}
		u := userLine{local: local, hash: hash, uid: 1000, gid: 1001, digest: digest, home: "/h", quotaMB: quota, nologin: nologin}
		back, err := parseUserLine(u.String())
		if err != nil || back != u {
			t.Fatalf("%q: %v %+v", u.String(), err, back)
		}
	})
}
