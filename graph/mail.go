package graph

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const (
	// defaultMailQuotaMB is a new mailbox's quota when none is given.
	defaultMailQuotaMB = 1024
	// defaultSpamScoreTenths is the spam threshold of a new domain (5.0).
	defaultSpamScoreTenths = 50
	// mailUsageWait bounds how long a mailboxes page waits for the node's
	// usage; the page shows the last known values after it.
	mailUsageWait = 2 * time.Second
	// mailQueryWait bounds the wait for a node's answer to a log read,
	// scan, training or queue request; mailQueryTTL is the task's lease.
	mailQueryWait = 30 * time.Second
	mailQueryTTL  = 2 * time.Minute
	// maxMailboxPage bounds a mailboxes page (MailUsageAction takes at
	// most 1000 addresses).
	maxMailboxPage = 1000
	// mailRole is the node role mail needs.
	mailRole = "mail"
)

// mailDomainOf finds the account that holds domain and checks the caller
// may see it: another tenant's domain is NOT_FOUND, as for sites.
func (r *Resolver) mailDomainOf(ctx context.Context, action, domain string) (auth.Principal, *store.Account, string, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, "", err
	}
	d, err := validate.Domain(domain)
	if err != nil {
		return p, nil, "", err
	}
	a, _, err := r.siteOf(ctx, p, action, d)
	if err != nil {
		return p, nil, "", err
	}
	return p, a, d, nil
}

// mailboxOf validates an address and finds the account of its domain.
func (r *Resolver) mailboxOf(ctx context.Context, action, address string) (auth.Principal, *store.Account, string, error) {
	addr, _, domain, err := validate.MailAddress(address)
	if err != nil {
		return auth.Principal{}, nil, "", err
	}
	p, a, _, err := r.mailDomainOf(ctx, action, domain)
	return p, a, addr, err
}

// mailChange collects a mail mutation's specs; each spec written gets the
// next generation, which the mail controller converges the node to.
type mailChange struct {
	domains map[string]*store.MailDomain
	boxes   map[string]*store.Mailbox
	// read is other accounts' mail the change was decided on.
	read []*store.MailSet
}

// domain returns the spec of domain to change: a copy of the set's, or a
// new one with the default spam settings.
func (c *mailChange) domain(set *store.MailSet, name string) *store.MailDomain {
	if d, ok := c.domains[name]; ok {
		return d
	}
	var d *store.MailDomain
	if old, ok := set.Domains[name]; ok && !old.Deleted {
		d = cloneMailDomain(old)
	} else {
		d = &store.MailDomain{Domain: name, Spam: store.MailSpam{ScoreTenths: defaultSpamScoreTenths, Action: string(model.SpamActionTag)}}
		if old != nil {
			d.Generation, d.CreatedAt = old.Generation, time.Time{}
		}
	}
	d.Generation++
	c.domains[name] = d
	return d
}

// mailbox returns the spec of a mailbox of the set to change (a copy),
// NOT_FOUND when it has none, CONFLICT when it is being deleted, except for
// retryDelete (deleteMailbox) when its deletion failed: the copy is the
// deleted spec at its next generation, which sends the deletion again.
func (c *mailChange) mailbox(set *store.MailSet, address string, retryDelete bool) (*store.Mailbox, error) {
	if m, ok := c.boxes[address]; ok {
		return m, nil
	}
	old, ok := set.Mailboxes[address]
	if !ok {
		return nil, errorf(CodeNotFound, "mailbox "+quote(address)+" not found")
	}
	if st, _ := old.State(); old.Deleted && !(retryDelete && st == store.MailFailed) {
		return nil, fmt.Errorf("mailbox %s is being deleted: %w", address, store.ErrConflict)
	}
	m := *old
	m.SealedPassword = slices.Clone(old.SealedPassword)
	m.SealedPasswordHash = slices.Clone(old.SealedPasswordHash)
	if old.Autoresponder != nil {
		ar := *old.Autoresponder
		m.Autoresponder = &ar
	}
	m.Generation++
	c.boxes[address] = &m
	return &m, nil
}

func cloneMailDomain(d *store.MailDomain) *store.MailDomain {
	c := *d
	c.Aliases = make(map[string][]string, len(d.Aliases))
	for k, v := range d.Aliases {
		c.Aliases[k] = slices.Clone(v)
	}
	c.DKIM = slices.Clone(d.DKIM)
	return &c
}

// changeMail runs a mail mutation for the caller: fn sees the account's
// mail (specs with statuses) and adds the specs it changes to c, written
// with the audit event in one transaction (store.ChangeMail). It returns
// the set as it stands after the write, for the payload.
func (r *Resolver) changeMail(ctx context.Context, p auth.Principal, a *store.Account, action, target string, fn func(set *store.MailSet, c *mailChange) error) (*store.MailSet, error) {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username+"/"+target, "ok")
	ev.Detail = map[string]string{"id": a.ID}
	err := r.Store.ChangeMail(ctx, a.ID, func(set *store.MailSet) (*store.MailChange, error) {
		if set.Account.Deleted {
			return nil, fmt.Errorf("account %s is being deleted: %w", set.Account.Username, store.ErrConflict)
		}
		if set.Account.Node == "" {
			return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, store.ErrNotYet)
		}
		c := &mailChange{domains: map[string]*store.MailDomain{}, boxes: map[string]*store.Mailbox{}}
		if err := fn(set, c); err != nil {
			return nil, err
		}
		// The domain may have been removed from the account since the
		// caller resolved it: the account's revision is compared, so this
		// check holds at the commit.
		for _, d := range c.domains {
			if err := stillSite(set.Account, d.Domain, d.Deleted); err != nil {
				return nil, err
			}
		}
		for _, m := range c.boxes {
			if err := stillSite(set.Account, m.Domain, m.Deleted); err != nil {
				return nil, err
			}
		}
		out := &store.MailChange{Read: c.read}
		for _, name := range slices.Sorted(maps.Keys(c.domains)) {
			out.Domains = append(out.Domains, c.domains[name])
		}
		for _, addr := range slices.Sorted(maps.Keys(c.boxes)) {
			out.Mailboxes = append(out.Mailboxes, c.boxes[addr])
		}
		return out, nil
	}, ev)
	if err != nil {
		return nil, err
	}
	return r.Store.GetMail(context.WithoutCancel(ctx), a.ID)
}

// stillSite refuses mail for a domain the account no longer serves (a
// deletion excepted).
func stillSite(a *store.Account, domain string, deleted bool) error {
	if deleted || a.SiteIndex(domain) >= 0 {
		return nil
	}
	return fmt.Errorf("%s is no longer one of the domains of account %s: %w", domain, a.Username, store.ErrConflict)
}

// checkMailNode refuses mail on an account whose node lacks the mail role.
func (r *Resolver) checkMailNode(ctx context.Context, a *store.Account) error {
	if a.Node == "" {
		return fmt.Errorf("account %s is not placed on a node yet: %w", a.Username, store.ErrNotYet)
	}
	n, err := r.Store.GetNode(ctx, a.Node)
	if err != nil {
		return err
	}
	if !slices.Contains(n.Roles, mailRole) {
		return &validate.Error{Field: "account", Reason: "node " + a.Node + " of account " + a.Username + " has no mail role; an operator must add the role mail to it (or move the account) first"}
	}
	return nil
}

// sealMailPassword seals a mailbox password to the key of the account's
// node (pki.SealDER, context agentpb.MailPasswordSealContext(address)):
// only the node can open it, and it is stored and sent only sealed.
func (r *Resolver) sealMailPassword(ctx context.Context, a *store.Account, address, password string) ([]byte, error) {
	st, _, err := r.Store.GetNodeState(ctx, a.Node)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if st == nil || len(st.PublicKey) == 0 {
		return nil, fmt.Errorf("node %s has not connected yet, so a password cannot be sealed to it; try again when it is READY: %w", a.Node, store.ErrNotYet)
	}
	return pki.SealDER(st.PublicKey, []byte(password), agentpb.MailPasswordSealContext(address))
}

// mailPassword validates a caller's password or generates one; generated
// reports whether it must be shown to the caller.
func mailPassword(password *string, address string) (pw string, generated bool, err error) {
	if password == nil {
		return validate.GenerateMailPassword(address), true, nil
	}
	if err := validate.MailPassword(*password, address); err != nil {
		return "", false, err
	}
	return *password, false, nil
}

// setPassword seals pw into m as its password from m's generation on; the
// controller sends it until the node has applied that generation.
func setPassword(m *store.Mailbox, sealed []byte, node string) {
	m.SealedPassword, m.SealedPasswordHash, m.PasswordGeneration, m.Node = sealed, nil, m.Generation, node
}

// checkMailQuota refuses a mailbox quota out of range or above the plan's disk.
func checkMailQuota(mb int, plan *store.Plan) error {
	if err := validate.MailQuotaMB(mb); err != nil {
		return err
	}
	if plan.DiskMB > 0 && int64(mb) > plan.DiskMB {
		return fmt.Errorf("%w: a quota of %d MB exceeds the %d MB of disk plan %s allows", store.ErrQuotaExceeded, mb, plan.DiskMB, plan.Name)
	}
	return nil
}

// mailboxModel shows m of set: a mailbox waiting for its domain, which
// failed on the node, shows the domain's reason.
func mailboxModel(set *store.MailSet, m *store.Mailbox) *model.Mailbox {
	st, reason := m.State()
	if d, ok := set.Domains[m.Domain]; ok && st == store.MailPending && reason == "" {
		if dst, dreason := d.State(); dst == store.MailFailed {
			reason = "domain " + m.Domain + " failed: " + dreason
		}
	}
	out := &model.Mailbox{Address: m.Address, Domain: m.Domain, QuotaMb: m.QuotaMB, Status: mailStatusModel(st),
		Reason: strPtr(reason), CreatedAt: m.CreatedAt}
	if !m.Status.MeasuredAt.IsZero() {
		used, msgs := int64(m.Status.UsedBytes), int64(m.Status.Messages)
		out.UsedBytes, out.Messages = &used, &msgs
	}
	if ar := m.Autoresponder; ar != nil {
		out.Autoresponder = &model.Autoresponder{Subject: ar.Subject, Body: ar.Body, From: strPtr(ar.From), Until: timePtr(ar.Until)}
	}
	return out
}

func mailStatusModel(st store.MailState) model.MailboxStatus {
	switch st {
	case store.MailActive:
		return model.MailboxStatusActive
	case store.MailDisabled:
		return model.MailboxStatusDisabled
	case store.MailFailed:
		return model.MailboxStatusFailed
	case store.MailDeleting, store.MailDeleted:
		return model.MailboxStatusDeleting
	}
	return model.MailboxStatusPending
}

// mailDomainModel shows a domain's spec, with the SPF and DMARC records of
// its zone (z; nil: none found).
func mailDomainModel(d *store.MailDomain, z *store.Zone) *model.MailDomain {
	st, reason := d.State()
	if reason == "" {
		reason = d.Status.DKIMReason
	}
	out := &model.MailDomain{Domain: d.Domain, Status: mailStatusModel(st), Reason: strPtr(reason),
		Webmail: d.Webmail, Dkim: []*model.DKIMSelector{},
		SpamFilter: &model.SpamFilter{Enabled: d.Spam.Enabled, Score: float64(d.Spam.ScoreTenths) / 10, Action: model.SpamAction(d.Spam.Action)}}
	if !out.SpamFilter.Action.IsValid() {
		out.SpamFilter.Action = model.SpamActionTag
	}
	switch d.CatchAll {
	case "":
	case validate.CatchAllFail, validate.CatchAllBlackhole:
		out.CatchAll = strPtr(d.CatchAll)
	default:
		out.CatchAll = strPtr(d.CatchAll + "@" + d.Domain)
	}
	for _, k := range d.DKIM {
		sel := &model.DKIMSelector{Selector: k.Selector, Signing: k.Signing, PublishedAt: timePtr(k.PublishedAt), RetireAt: timePtr(k.RetireAt)}
		for _, rk := range d.Status.DKIM {
			if rk.Selector == k.Selector && rk.TXT != "" {
				sel.Txt = strPtr(rk.TXT)
			}
		}
		out.Dkim = append(out.Dkim, sel)
	}
	if z != nil {
		out.Spf = zoneTXT(z, d.Domain+".", "v=spf1")
		out.Dmarc = zoneTXT(z, "_dmarc."+d.Domain+".", "v=DMARC1")
	}
	return out
}

// zoneTXT returns the text of the TXT record at name that starts with
// prefix, its strings joined; nil when there is none.
func zoneTXT(z *store.Zone, name, prefix string) *string {
	match := store.TXTHasPrefix(prefix)
	for _, r := range z.Records {
		if r.Type == dnszone.TypeTXT && strings.EqualFold(r.Name, name) && match(r.Content) {
			s := joinTXT(r.Content)
			return &s
		}
	}
	return nil
}

// joinTXT turns quoted TXT strings ("a" "b") into the text they publish
// (ab); escapes are kept as written.
func joinTXT(c string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(c); i++ {
		switch ch := c[i]; {
		case ch == '\\' && in && i+1 < len(c):
			b.WriteByte(ch)
			b.WriteByte(c[i+1])
			i++
		case ch == '"':
			in = !in
		case in:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// zoneOfDomain returns the zone that holds domain: the zone of its name or
// of the nearest parent; nil when none does.
func (r *Resolver) zoneOfDomain(ctx context.Context, domain string) (*store.Zone, error) {
	for name := domain; strings.Contains(name, "."); {
		z, _, err := r.Store.GetZone(ctx, name)
		if err == nil {
			return z, nil
		}
		if !isNotFound(err) {
			return nil, err
		}
		_, name, _ = strings.Cut(name, ".")
	}
	return nil, nil
}

// setDomainTXT replaces the TXT record at name of the zone holding domain
// (those whose text starts with prefix) with content, through the zone
// API's own path (RBAC, record checks, audit).
func (r *Resolver) setDomainTXT(ctx context.Context, action, domain, name, prefix, content string) error {
	z, err := r.zoneOfDomain(ctx, domain)
	if err != nil {
		return err
	}
	if z == nil {
		return errorf(CodeNotFound, "no DNS zone holds "+domain)
	}
	_, err = r.changeZone(ctx, action, z.Name, checkAt(name), func(z *store.Zone) error {
		_, err := z.SetTXT(name, content, store.TXTHasPrefix(prefix))
		return err
	})
	return err
}

// forwarderLoop reports whether mail to from, forwarded to targets, comes
// back to from through the forwarders next gives (address → targets).
func forwarderLoop(next func(string) []string, from string, targets []string) bool {
	seen := map[string]bool{}
	stack := slices.Clone(targets)
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if t == from {
			return true
		}
		if seen[t] {
			continue
		}
		seen[t] = true
		stack = append(stack, next(t)...)
	}
	return false
}

// maxForeignAccounts bounds the other accounts a forwarder loop check
// reads.
const maxForeignAccounts = 16

// forwardsOf returns the forwarders a loop check walks for account a: its
// own (own, the change's view) and, for a target whose domain another
// account of the cluster hosts, that account's, read once each (at most
// maxForeignAccounts; best effort: one that cannot be read counts as
// none). Nothing of them is shown to the caller. Those read are kept in c:
// the change commits only if none of them changed meanwhile, so two
// accounts cannot each add half of a loop at once.
func (r *Resolver) forwardsOf(ctx context.Context, a *store.Account, own map[string][]string, c *mailChange) func(string) []string {
	byDomain := map[string]map[string][]string{}
	read := 0
	return func(addr string) []string {
		if ts, ok := own[addr]; ok {
			return ts
		}
		_, domain, ok := strings.Cut(addr, "@")
		if !ok || a.SiteIndex(domain) >= 0 {
			return nil
		}
		if m, ok := byDomain[domain]; ok {
			return m[addr]
		}
		byDomain[domain] = nil
		if read >= maxForeignAccounts {
			return nil
		}
		id, err := r.Store.AccountIDByDomain(ctx, domain)
		if err != nil || id == a.ID {
			return nil
		}
		read++
		set, err := r.Store.GetMail(ctx, id)
		if err != nil {
			return nil
		}
		c.read = append(c.read, set)
		for name, d := range set.Domains {
			if d.Deleted {
				continue
			}
			m := map[string][]string{}
			for local, ts := range d.Aliases {
				m[local+"@"+name] = ts
			}
			byDomain[name] = m
		}
		return byDomain[domain][addr]
	}
}

// accountAliases flattens an account's forwarders to address → targets.
func accountAliases(set *store.MailSet, c *mailChange) map[string][]string {
	out := map[string][]string{}
	add := func(d *store.MailDomain) {
		for local, ts := range d.Aliases {
			out[local+"@"+d.Domain] = ts
		}
	}
	for name, d := range set.Domains {
		if cd, ok := c.domains[name]; ok {
			d = cd
		}
		if !d.Deleted {
			add(d)
		}
	}
	return out
}

func forwarderModels(set *store.MailSet) []*model.Forwarder {
	out := []*model.Forwarder{}
	for _, name := range slices.Sorted(maps.Keys(set.Domains)) {
		d := set.Domains[name]
		if d.Deleted {
			continue
		}
		for _, local := range slices.Sorted(maps.Keys(d.Aliases)) {
			out = append(out, &model.Forwarder{From: local + "@" + name, To: slices.Clone(d.Aliases[local])})
		}
	}
	return out
}

// newDKIMSelector names a new selector: "np" and the date, with a letter
// when a selector of that day exists.
func newDKIMSelector(d *store.MailDomain, now time.Time) string {
	base := "np" + now.UTC().Format("20060102")
	taken := func(s string) bool {
		return slices.ContainsFunc(d.DKIM, func(k store.MailDKIM) bool { return k.Selector == s })
	}
	if !taken(base) {
		return base
	}
	for c := 'b'; c <= 'z'; c++ {
		if s := base + string(c); !taken(s) {
			return s
		}
	}
	return fmt.Sprintf("%s%d", base, now.UnixNano()%1000000)
}

// spamTenths turns a score in points into tenths.
func spamTenths(score *float64) (int, error) {
	if score == nil {
		return defaultSpamScoreTenths, nil
	}
	if math.IsNaN(*score) || math.IsInf(*score, 0) {
		return 0, &validate.Error{Field: "score", Reason: "must be a number"}
	}
	n := int(math.Round(*score * 10))
	return n, validate.SpamScoreTenths(n)
}

// mailQuery sends a read (or one-shot) task to node and waits for its
// answer; UNAVAILABLE when the node does not answer in time. The task is
// forgotten once read.
func (r *Resolver) mailQuery(ctx context.Context, p auth.Principal, node string, spec *agentpb.Task, action string, wait time.Duration) (*store.Task, error) {
	t, err := r.Store.EnqueueQueryTask(ctx, node, spec, action, p.Name, mailQueryTTL)
	if err != nil {
		return nil, err
	}
	queued := t
	defer func() { _ = r.Store.ForgetTask(context.WithoutCancel(ctx), queued) }()
	t, err = r.Store.WaitTask(ctx, t.ID, wait)
	if err != nil || t == nil || (t.Status != store.TaskSucceeded && t.Status != store.TaskFailed) {
		return nil, errorf(CodeUnavailable, "node "+node+" did not answer within "+wait.String())
	}
	return t, nil
}

// usageGates holds each Resolver's gate of live usage reads (one per
// account at a time, a few per user per second). It lives beside the
// Resolver, gqlgen's root, whose zero value must serve.
var usageGates sync.Map // *Resolver -> *logReadGate

// mailRequestGates holds each Resolver's gate of one-shot mailbox requests
// (scans, spam and ham training): each is a task through etcd and the
// node's queue, so they are gated as log reads are (one per account at a
// time, a few per user per second).
var mailRequestGates sync.Map // *Resolver -> *logReadGate

// startMailRequest admits a one-shot mailbox request of user on account,
// or refuses it RATE_LIMITED; done ends an admitted one.
func (r *Resolver) startMailRequest(user, account string) (done func(), err error) {
	g, _ := mailRequestGates.LoadOrStore(r, &logReadGate{what: "mailbox scan or training"})
	return g.(*logReadGate).start(user, account)
}

// liveUsage asks the account's node for the usage of a page of mailboxes
// in one task; nil (no error) when it cannot answer in time, so the page
// shows the last known values instead.
func (r *Resolver) liveUsage(ctx context.Context, p auth.Principal, a *store.Account, addrs []string) map[string]*agentpb.MailboxUsage {
	if a.Node == "" || len(addrs) == 0 {
		return nil
	}
	if st, _, err := r.Store.GetNodeState(ctx, a.Node); err != nil || st.Status != store.NodeReady {
		return nil
	}
	// Each read is a task through etcd and the node's queue: a client
	// looping on the listing must not flood them (issue 23's lesson), so
	// reads are gated as log reads are, and a read the gate refuses shows
	// the last known values.
	g, _ := usageGates.LoadOrStore(r, &logReadGate{})
	done, err := g.(*logReadGate).start(p.Name, a.ID)
	if err != nil {
		return nil
	}
	defer done()
	spec := &agentpb.Task{Action: &agentpb.Task_MailUsage{MailUsage: &agentpb.MailUsageAction{Username: a.Username, Addresses: addrs}}}
	t, err := r.mailQuery(ctx, p, a.Node, spec, "mailUsage", mailUsageWait)
	if err != nil {
		return nil
	}
	res, err := t.MailUsageResult()
	if err != nil {
		return nil
	}
	out := map[string]*agentpb.MailboxUsage{}
	for _, u := range res.GetMailboxes() {
		if u.GetExists() {
			out[u.GetAddress()] = u
		}
	}
	return out
}

// auditMail records a one-shot mail request (a scan, a training, a queue
// flush, a log read) that changes no spec.
func (r *Resolver) auditMail(ctx context.Context, p auth.Principal, action, target string, detail map[string]string) error {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, target, "ok")
	ev.Detail = detail
	return r.Store.AppendAudit(ctx, ev)
}

// mailNode checks node exists for an admin's queue request.
func (r *Resolver) mailNode(ctx context.Context, node string) error {
	if _, err := r.Store.GetNode(ctx, node); err != nil {
		if isNotFound(err) {
			return errorf(CodeNotFound, "node "+quote(node)+" not found")
		}
		return err
	}
	return nil
}

// taskFailure turns a failed one-shot task into the caller's error.
func taskFailure(node string, t *store.Task) error {
	if t.Status == store.TaskFailed {
		return errorf(CodeUnavailable, "node "+node+": "+t.Error)
	}
	return nil
}

// mailboxMutation changes one mailbox: fn edits m (a copy of its spec at
// its next generation).
func (r *Resolver) mailboxMutation(ctx context.Context, action, address string, fn func(set *store.MailSet, c *mailChange, m *store.Mailbox) error) (out *model.Mailbox, err error) {
	defer func() { r.auditFailure(ctx, "", action, address, err) }()
	p, a, addr, err := r.mailboxOf(ctx, action, address)
	if err != nil {
		return nil, err
	}
	set, err := r.changeMail(ctx, p, a, action, addr, func(set *store.MailSet, c *mailChange) error {
		m, err := c.mailbox(set, addr, action == "deleteMailbox")
		if err != nil {
			return err
		}
		return fn(set, c, m)
	})
	if err != nil {
		return nil, err
	}
	m, ok := set.Mailboxes[addr]
	if !ok {
		return nil, errorf(CodeNotFound, "mailbox "+quote(addr)+" was deleted meanwhile")
	}
	return mailboxModel(set, m), nil
}

// domainMutation changes one mail domain of an account: fn edits d (its
// spec at its next generation; a new one when the domain has no mail yet).
func (r *Resolver) domainMutation(ctx context.Context, action, domain string, fn func(set *store.MailSet, c *mailChange, d *store.MailDomain) error) (out *model.MailDomain, err error) {
	defer func() { r.auditFailure(ctx, "", action, domain, err) }()
	p, a, d, err := r.mailDomainOf(ctx, action, domain)
	if err != nil {
		return nil, err
	}
	if err = r.checkMailNode(ctx, a); err != nil {
		return nil, err
	}
	set, err := r.changeMail(ctx, p, a, action, d, func(set *store.MailSet, c *mailChange) error {
		return fn(set, c, c.domain(set, d))
	})
	if err != nil {
		return nil, err
	}
	return r.mailDomainPayload(ctx, set, d)
}

func (r *Resolver) mailDomainPayload(ctx context.Context, set *store.MailSet, domain string) (*model.MailDomain, error) {
	md, ok := set.Domains[domain]
	if !ok {
		return nil, errorf(CodeNotFound, "mail domain "+quote(domain)+" not found")
	}
	z, err := r.zoneOfDomain(ctx, domain)
	if err != nil {
		return nil, err
	}
	return mailDomainModel(md, z), nil
}

// yet shows the defaults.
func (r *Resolver) domainView(ctx context.Context, a *store.Account, domain string) (*model.MailDomain, error) {
	set, err := r.Store.GetMail(ctx, a.ID)
	if err != nil {
		return nil, err
	}
	z, err := r.zoneOfDomain(ctx, domain)
	if err != nil {
		return nil, err
	}
	d, ok := set.Domains[domain]
	if !ok {
		d = &store.MailDomain{Domain: domain, Spam: store.MailSpam{ScoreTenths: defaultSpamScoreTenths, Action: string(model.SpamActionTag)}}
	}
	return mailDomainModel(d, z), nil
}

// trainMail feeds one message to the spam filter as spam or ham.
func (r *Resolver) trainMail(ctx context.Context, action, address string, uid int, spam bool) (out *model.TrainMailPayload, err error) {
	defer func() { r.auditFailure(ctx, "", action, address, err) }()
	if uid <= 0 || uid > 1<<32-1 {
		err = &validate.Error{Field: "messageUid", Reason: "must be an IMAP UID (1 to 4294967295)"}
		return nil, err
	}
	p, a, addr, err := r.mailboxOf(ctx, action, address)
	if err != nil {
		return nil, err
	}
	if err = r.knownMailbox(ctx, a, addr); err != nil {
		return nil, err
	}
	done, err := r.startMailRequest(p.Name, a.ID)
	if err != nil {
		return nil, err
	}
	defer done()
	spec := &agentpb.Task{Action: &agentpb.Task_TrainMail{TrainMail: &agentpb.TrainMailAction{Username: a.Username, Address: addr, Uid: uint32(uid), Spam: spam}}}
	t, err := r.mailQuery(ctx, p, a.Node, spec, action, mailQueryWait)
	if err != nil {
		return nil, err
	}
	if err = taskFailure(a.Node, t); err != nil {
		return nil, err
	}
	res, err := t.TrainMailResult()
	if err != nil {
		return nil, errorf(CodeUnavailable, "node "+a.Node+": "+err.Error())
	}
	if err = r.auditMail(ctx, p, action, a.Username+"/"+addr, map[string]string{"id": a.ID, "uid": fmt.Sprint(uid)}); err != nil {
		return nil, err
	}
	return &model.TrainMailPayload{Learned: res.GetLearned()}, nil
}

// knownMailbox refuses a one-shot request for a mailbox the account does
// not have (or that is not on its node yet).
func (r *Resolver) knownMailbox(ctx context.Context, a *store.Account, addr string) error {
	set, err := r.Store.GetMail(ctx, a.ID)
	if err != nil {
		return err
	}
	m, ok := set.Mailboxes[addr]
	if !ok || m.Deleted {
		return errorf(CodeNotFound, "mailbox "+quote(addr)+" not found")
	}
	if a.Node == "" {
		return fmt.Errorf("account %s is not placed on a node yet: %w", a.Username, store.ErrNotYet)
	}
	return nil
}

// setMailTXT validates a mail TXT record of a domain (SPF, DMARC) with
// check and replaces the one at name(domain) whose text starts with prefix
// ("": any) in the zone holding the domain.
func (r *Resolver) setMailTXT(ctx context.Context, action, domain, record string, check func(string) error, name func(string) string, prefix string) (out *model.MailDomain, err error) {
	defer func() { r.auditFailure(ctx, "", action, domain, err) }()
	_, a, d, err := r.mailDomainOf(ctx, action, domain)
	if err != nil {
		return nil, err
	}
	if err = check(record); err != nil {
		return nil, err
	}
	if err = r.setDomainTXT(ctx, action, d, name(d), prefix, record); err != nil {
		return nil, err
	}
	return r.domainView(ctx, a, d)
}

// autoresponderFrom accepts the From address of a mailbox's vacation
// replies: an address of one of the account's domains, so that replies
// never speak for another tenant's name.
func autoresponderFrom(set *store.MailSet, f string) (string, error) {
	from, err := validate.MailTarget(f)
	if err != nil {
		return "", &validate.Error{Field: "from", Reason: err.(*validate.Error).Reason}
	}
	if set.Account.SiteIndex(from[strings.LastIndexByte(from, '@')+1:]) < 0 {
		return "", &validate.Error{Field: "from", Reason: quote(from) + " is not an address of one of the account's domains"}
	}
	return from, nil
}
