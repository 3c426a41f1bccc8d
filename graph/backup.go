package graph

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

// Backups: the API writes Backup and Restore records (PENDING) and flags
// on them (VerifyRequested, Deleting); the backup controller on the
// leader does the work and writes their status. Nothing here sends a
// task to a node.
//
// Who may see a backup is decided from the account while it exists (its
// owner, its reseller, admins, as canSee), and from the record's
// AccountID and Owner once it is deleted: a deleted account's backups
// stay visible to the same people, and a username taken again by another
// account does not hand the new owner the old account's backups.

const (
	// maxBackupPage bounds a backups page.
	maxBackupPage = 1000
	// maxBackupTargetName is a target's longest name (a DNS label).
	maxBackupTargetName = 63
	// maxRestorePath bounds a FILES restore's path.
	maxRestorePath = 4096
	// maxS3Prefix bounds an S3 key prefix.
	maxS3Prefix = 512
	// DefaultBackupTarget is the target createBackup uses for an account
	// whose plan names none.
	DefaultBackupTarget = "default"
	// Retention ranges of setPlanBackup.
	maxKeepDaily   = 366
	maxKeepWeekly  = 520
	maxKeepMonthly = 240
)

// backupHooks holds what tests replace: how often a backupEvents
// subscription checks its session and the caller's access.
var backupHooks = struct {
	sync.Mutex
	recheck time.Duration
}{recheck: SessionRecheck}

// backupSubscriptions counts each user's live backupEvents subscriptions:
// each holds an etcd watch of its own.
var backupSubscriptions = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func holdBackupSubscription(user string) (release func(), err error) {
	backupSubscriptions.Lock()
	defer backupSubscriptions.Unlock()
	if backupSubscriptions.n[user] >= MaxSubscriptionsPerUser {
		return nil, errorf(codeQuotaExceeded, "too many live backup subscriptions: at most "+strconv.Itoa(MaxSubscriptionsPerUser)+" per user; close some first")
	}
	backupSubscriptions.n[user]++
	return func() {
		backupSubscriptions.Lock()
		defer backupSubscriptions.Unlock()
		if backupSubscriptions.n[user]--; backupSubscriptions.n[user] <= 0 {
			delete(backupSubscriptions.n, user)
		}
	}, nil
}

// --- models ---

func backupStatusModel(s store.BackupState) model.BackupStatus {
	st := model.BackupStatus(s)
	if !st.IsValid() {
		return model.BackupStatusPending
	}
	return st
}

func backupEventModels(evs []store.BackupEvent) []*model.BackupEvent {
	out := make([]*model.BackupEvent, len(evs))
	for i, e := range evs {
		out[i] = backupEventModel(e)
	}
	return out
}

func backupEventModel(e store.BackupEvent) *model.BackupEvent {
	return &model.BackupEvent{At: e.At, Kind: e.Kind, Message: strPtr(e.Message)}
}

func failureModels(fs []store.BackupItemFailure) []*model.BackupItemFailure {
	out := make([]*model.BackupItemFailure, len(fs))
	for i, f := range fs {
		out[i] = &model.BackupItemFailure{Item: f.Item, Error: f.Error}
	}
	return out
}

func progressModel(p *store.BackupProgress) *model.BackupProgress {
	if p == nil {
		return nil
	}
	return &model.BackupProgress{FilesDone: clampInt64(p.FilesDone), BytesDone: clampInt64(p.BytesDone),
		TotalFiles: clampInt64(p.TotalFiles), TotalBytes: clampInt64(p.TotalBytes)}
}

func clampInt64(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}

func backupModel(b *store.Backup) *model.Backup {
	st := b.Status
	return &model.Backup{
		ID: b.ID, Account: b.Account, AccountID: b.AccountID, Target: b.Target, Node: b.Node,
		Status: backupStatusModel(st.State), Scheduled: b.Scheduled, CreatedAt: b.CreatedAt,
		StartedAt: timePtr(st.StartedAt), FinishedAt: timePtr(st.FinishedAt),
		SizeBytes: clampInt64(st.SizeBytes), AddedBytes: clampInt64(st.AddedBytes), FileCount: clampInt64(st.FileCount),
		Contents: &model.BackupContents{Files: st.Contents.Files, Databases: nonNil(st.Contents.Databases),
			Mailboxes: nonNil(st.Contents.Mailboxes), Zones: nonNil(st.Contents.Zones)},
		Failed: failureModels(st.Failed), VerifiedAt: timePtr(st.VerifiedAt), Verified: st.VerifyOK,
		VerifyProblems: nonNil(st.VerifyProblems), Error: strPtr(st.Error), Progress: progressModel(st.Progress),
		Events: backupEventModels(st.Events),
	}
}

func restoreModel(r *store.Restore) *model.Restore {
	st := r.Status
	into := model.RestoreIntoSideBySide
	if r.InPlace {
		into = model.RestoreIntoInPlace
	}
	what := model.RestoreWhat(r.What)
	if !what.IsValid() {
		what = model.RestoreWhatAll
	}
	return &model.Restore{
		ID: r.ID, Backup: r.Backup, Account: r.Account, What: what, Into: into,
		Path: strPtr(r.Path), Database: strPtr(r.Database), DatabaseInto: strPtr(r.DatabaseInto), Mailbox: strPtr(r.Mailbox),
		Node: r.Node, Status: backupStatusModel(st.State), Restored: nonNil(st.Restored), Failed: failureModels(st.Failed),
		Error: strPtr(st.Error), Step: strPtr(st.Step), CreatedAt: r.CreatedAt,
		StartedAt: timePtr(st.StartedAt), FinishedAt: timePtr(st.FinishedAt), Events: backupEventModels(st.Events),
	}
}

// backupTargetModel never carries the sealed secret key: the API has no
// field for it.
func backupTargetModel(t *store.BackupTarget) *model.BackupTarget {
	return &model.BackupTarget{
		Name: t.Name, Kind: model.BackupTargetKind(t.Kind), Node: strPtr(t.Node), SftpAddress: strPtr(t.SFTPAddress),
		HostKey: strPtr(t.HostKey), AccessError: strPtr(t.AccessErr), Endpoint: strPtr(t.Endpoint), Bucket: strPtr(t.Bucket),
		Prefix: strPtr(t.Prefix), Region: strPtr(t.Region), AccessKeyID: strPtr(t.AccessKeyID), CreatedAt: t.CreatedAt,
	}
}

func planBackupModel(p *store.BackupPolicy) *model.PlanBackup {
	if p == nil {
		return nil
	}
	m := &model.PlanBackup{Target: p.Target, KeepDaily: p.KeepDaily, KeepWeekly: p.KeepWeekly,
		KeepMonthly: p.KeepMonthly, Enabled: !p.Disabled}
	if p.Hour >= 0 && p.Hour <= 23 {
		h := p.Hour
		m.Hour = &h
	}
	return m
}

// --- access ---

// backupAccess reports whether p may see (and so act on) a backup or
// restore of account accountID owned by owner: from the account while
// it exists, from the record once it is gone.
func (r *Resolver) backupAccess(ctx context.Context, p auth.Principal, accountID, owner string) (bool, error) {
	if p.Role == store.RoleAdmin {
		return true, nil
	}
	a, _, err := r.Store.GetAccount(ctx, accountID)
	if err == nil {
		return canSee(p, a), nil
	}
	if !isNotFound(err) {
		return false, err
	}
	switch p.Role {
	case store.RoleReseller:
		return owner != "" && owner == p.Name, nil
	case store.RoleUser:
		return accountID != "" && accountID == p.Account, nil
	}
	return false, nil
}

// accessCache remembers backupAccess's answers within one request (a
// page of one account's backups costs one account read).
type accessCache map[[2]string]bool

func (r *Resolver) cachedAccess(ctx context.Context, c accessCache, p auth.Principal, accountID, owner string) (bool, error) {
	k := [2]string{accountID, owner}
	if ok, seen := c[k]; seen {
		return ok, nil
	}
	ok, err := r.backupAccess(ctx, p, accountID, owner)
	if err != nil {
		return false, err
	}
	c[k] = ok
	return ok, nil
}

// backupOf reads a backup the caller may see; any other is NOT_FOUND, as
// one that does not exist (the refusal recorded under action).
func (r *Resolver) backupOf(ctx context.Context, action, id string) (auth.Principal, *store.Backup, int64, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, 0, err
	}
	notFound := errorf(CodeNotFound, "backup "+quote(id)+" not found")
	b, rev, err := r.Store.GetBackupRev(ctx, id)
	if isNotFound(err) {
		return p, nil, 0, notFound
	}
	if err != nil {
		return p, nil, 0, err
	}
	ok, err := r.backupAccess(ctx, p, b.AccountID, b.Owner)
	if err != nil {
		return p, nil, 0, err
	}
	if !ok {
		r.refusedRead(ctx, action, id, CodeNotFound)
		return p, nil, 0, notFound
	}
	return p, b, rev, nil
}

// restoreOf is backupOf for restores.
func (r *Resolver) restoreOf(ctx context.Context, action, id string) (auth.Principal, *store.Restore, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, err
	}
	notFound := errorf(CodeNotFound, "restore "+quote(id)+" not found")
	rs, _, err := r.Store.GetRestoreRev(ctx, id)
	if isNotFound(err) {
		return p, nil, notFound
	}
	if err != nil {
		return p, nil, err
	}
	ok, err := r.backupAccess(ctx, p, rs.AccountID, rs.Owner)
	if err != nil {
		return p, nil, err
	}
	if !ok {
		r.refusedRead(ctx, action, id, CodeNotFound)
		return p, nil, notFound
	}
	return p, rs, nil
}

// backupAccountName resolves the account argument of backups and
// restores to the username their records are kept under: a live
// account's (by id or username, NOT_FOUND unless the caller may see it),
// or, for a deleted account, the username as given. The records are then
// filtered one by one (backupAccess).
func (r *Resolver) backupAccountName(ctx context.Context, p auth.Principal, action, ref string) (string, error) {
	id, err := r.resolveAccountRef(ctx, ref)
	if err == nil {
		a, _, err := r.Store.GetAccount(ctx, id)
		if err != nil && !isNotFound(err) {
			return "", err
		}
		if err == nil {
			if !canSee(p, a) {
				r.refusedRead(ctx, action, ref, CodeNotFound)
				return "", errorf(CodeNotFound, "account "+quote(ref)+" not found")
			}
			return a.Username, nil
		}
	} else if !isNotFound(err) {
		return "", err
	}
	if r.validUsername(ref) != nil {
		return "", errorf(CodeNotFound, "account "+quote(ref)+" not found")
	}
	return ref, nil
}

// liveBackupAccount resolves an account reference (id or username) the
// caller may see, refusing one being deleted.
func (r *Resolver) liveBackupAccount(ctx context.Context, p auth.Principal, ref string) (*store.Account, error) {
	id, err := r.resolveAccountRef(ctx, ref)
	if err != nil {
		if isNotFound(err) {
			return nil, errorf(CodeNotFound, "account "+quote(ref)+" not found")
		}
		return nil, err
	}
	a, err := r.visibleAccount(ctx, p, id)
	if isNotFound(err) {
		return nil, errorf(CodeNotFound, "account "+quote(ref)+" not found")
	}
	if err != nil {
		return nil, err
	}
	if err := accountLive(a); err != nil {
		return nil, err
	}
	return a, nil
}

// busy reports whether a backup or restore state is one still to finish.
func busy(s store.BackupState) bool {
	return s == "" || s == store.BackupPending || s == store.BackupRunning
}

// restorable refuses a backup that holds nothing to restore (yet).
func restorable(b *store.Backup) error {
	if b.Deleting {
		return fmt.Errorf("backup %s is being deleted: %w", b.ID, store.ErrConflict)
	}
	if b.Status.State != store.BackupSucceeded && b.Status.State != store.BackupPartial {
		return fmt.Errorf("backup %s is %s; only a SUCCEEDED or PARTIAL backup can be restored or verified: %w",
			b.ID, backupStatusModel(b.Status.State), store.ErrConflict)
	}
	return nil
}

// backupAudit is the audit event of a backup mutation on account.
func backupAudit(ctx context.Context, p auth.Principal, action, account, id string, detail map[string]string) store.AuditEvent {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, account+"/"+id, "ok")
	ev.Detail = map[string]string{}
	for k, v := range detail {
		if v != "" {
			ev.Detail[k] = v
		}
	}
	return ev
}

// --- targets and validators ---

// ValidateBackupTargetName accepts a target's name: lowercase letters,
// digits and '-', starting with a letter, not ending with '-', at most
// 63 bytes (it is part of etcd keys and of the paths nodes use).
func ValidateBackupTargetName(s string) error {
	if s == "" {
		return &validate.Error{Field: "name", Reason: "must not be empty"}
	}
	if len(s) > maxBackupTargetName {
		return &validate.Error{Field: "name", Reason: fmt.Sprintf("%d bytes long; at most %d", len(s), maxBackupTargetName)}
	}
	if s[0] < 'a' || s[0] > 'z' {
		return &validate.Error{Field: "name", Reason: quote(s) + " must start with a lowercase letter"}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return &validate.Error{Field: "name", Reason: quote(s) + ": use lowercase letters a-z, digits 0-9 and -"}
		}
	}
	if s[len(s)-1] == '-' {
		return &validate.Error{Field: "name", Reason: quote(s) + " must not end with -"}
	}
	return nil
}

// ValidateS3Endpoint accepts an S3 endpoint URL and returns it
// normalised (no trailing slash): https://host[:port], or http:// for a
// loopback host only (a test server or a local gateway; credentials
// never cross a network in clear). No user info, path, query or
// fragment.
func ValidateS3Endpoint(s string) (string, error) {
	bad := func(reason string) error { return &validate.Error{Field: "endpoint", Reason: reason} }
	if s == "" {
		return "", bad("required for an S3 target (https://host[:port])")
	}
	if len(s) > 2048 || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", bad("not a URL (https://host[:port])")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", bad("not a URL (https://host[:port])")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", bad("the scheme must be https (or http for a loopback address)")
	}
	if u.Opaque != "" || u.User != nil {
		return "", bad("give https://host[:port] without user info")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.Contains(s, "#") {
		return "", bad("give https://host[:port] only; the bucket and prefix are fields of their own")
	}
	host := u.Hostname()
	if host == "" {
		return "", bad("no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", bad("the port must be 1 to 65535")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return "", bad("an empty port")
	}
	ip := net.ParseIP(host)
	if ip == nil {
		if strings.Contains(host, ":") || strings.Contains(host, "%") {
			return "", bad("not a host name or address")
		}
		if !hostName(host) {
			return "", bad("the host " + quote(host) + " is not a valid name")
		}
	} else if strings.Contains(host, "%") {
		return "", bad("no zoned addresses")
	}
	if u.Scheme == "http" && !(host == "localhost" || ip != nil && ip.IsLoopback()) {
		return "", bad("http is allowed for loopback addresses only; use https")
	}
	return u.Scheme + "://" + strings.ToLower(u.Host), nil
}

// hostName reports whether s is an ASCII host name: labels of letters,
// digits and '-', 1 to 63 bytes, not beginning or ending with '-'.
func hostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i] | 0x20
			if !(c >= 'a' && c <= 'z' || l[i] >= '0' && l[i] <= '9' || l[i] == '-') {
				return false
			}
		}
	}
	return true
}

// ValidateS3Bucket accepts a bucket name per the S3 naming rules: 3 to
// 63 lowercase letters, digits, '.' and '-', beginning and ending with a
// letter or digit, no "..", not shaped like an IPv4 address, none of the
// reserved prefixes and suffixes.
func ValidateS3Bucket(s string) error {
	bad := func(reason string) error { return &validate.Error{Field: "bucket", Reason: reason} }
	if len(s) < 3 || len(s) > 63 {
		return bad("3 to 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return bad(quote(s) + ": use lowercase letters, digits, . and -")
		}
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return bad(quote(s) + " must begin and end with a letter or digit")
	}
	if strings.Contains(s, "..") || strings.Contains(s, ".-") || strings.Contains(s, "-.") {
		return bad(quote(s) + ": no two adjacent periods, nor a period beside a dash")
	}
	if ip := net.ParseIP(s); ip != nil {
		return bad("must not be formatted as an IP address")
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(s, p) {
			return bad("the prefix " + p + " is reserved")
		}
	}
	for _, sfx := range []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"} {
		if strings.HasSuffix(s, sfx) {
			return bad("the suffix " + sfx + " is reserved")
		}
	}
	return nil
}

// ValidateS3Prefix accepts a key prefix within the bucket: empty, or
// segments of letters, digits, '.', '_' and '-' joined by '/', none
// empty, "." or "..", no leading slash; a trailing slash is dropped.
func ValidateS3Prefix(s string) (string, error) {
	bad := func(reason string) error { return &validate.Error{Field: "prefix", Reason: reason} }
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return "", nil
	}
	if len(s) > maxS3Prefix {
		return "", bad(fmt.Sprintf("at most %d bytes", maxS3Prefix))
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", bad(quote(s) + ": no empty, . or .. segments, nor a leading /")
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return "", bad(quote(s) + ": use letters, digits, . _ - and / between segments")
			}
		}
	}
	return s, nil
}

// ValidateS3Region accepts a region name (us-east-1, eu-central-003, auto).
func ValidateS3Region(s string) error {
	if s == "" || len(s) > 64 {
		return &validate.Error{Field: "region", Reason: "required for an S3 target, at most 64 characters"}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return &validate.Error{Field: "region", Reason: quote(s) + ": use lowercase letters, digits and -"}
		}
	}
	return nil
}

// validS3Credentials checks the key id and the secret's shape. The
// secret is never quoted in an error.
func validS3Credentials(id, secret string) error {
	if id == "" || len(id) > 128 {
		return &validate.Error{Field: "accessKeyId", Reason: "required for an S3 target, at most 128 characters"}
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return &validate.Error{Field: "accessKeyId", Reason: "printable ASCII without spaces only"}
		}
	}
	if secret == "" || len(secret) > 256 {
		return &validate.Error{Field: "secretAccessKey", Reason: "required for an S3 target, at most 256 characters"}
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c <= ' ' || c >= 0x7f {
			return &validate.Error{Field: "secretAccessKey", Reason: "printable ASCII without spaces only"}
		}
	}
	return nil
}

// ValidateRestorePath accepts the path of a FILES restore, relative to
// the account's home, and returns it cleaned ("" for the whole home). It
// refuses absolute paths, ".." anywhere, NUL and control characters; the
// node resolves it through os.Root as well.
func ValidateRestorePath(s string) (string, error) {
	bad := func(reason string) error { return &validate.Error{Field: "path", Reason: reason} }
	if s == "" || s == "." || s == "./" {
		return "", nil
	}
	if len(s) > maxRestorePath {
		return "", bad(fmt.Sprintf("at most %d bytes", maxRestorePath))
	}
	if !utf8.ValidString(s) {
		return "", bad("not UTF-8")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", bad("control characters are not allowed")
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "~") {
		return "", bad("give a path relative to the home, not " + quote(s))
	}
	if strings.Contains(s, `\`) {
		return "", bad("use / between folders")
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == ".." {
			return "", bad("no .. in the path")
		}
	}
	c := path.Clean(s)
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") || path.IsAbs(c) {
		return "", bad("the path must stay within the home")
	}
	return c, nil
}

// planBackupPolicy validates setPlanBackup's input (the target's
// existence is checked by the caller).
func planBackupPolicy(in *model.PlanBackupInput) (*store.BackupPolicy, error) {
	if err := ValidateBackupTargetName(in.Target); err != nil {
		return nil, &validate.Error{Field: "target", Reason: err.(*validate.Error).Reason}
	}
	pol := &store.BackupPolicy{Target: in.Target, Hour: -1, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 3}
	if in.Hour != nil {
		if *in.Hour < 0 || *in.Hour > 23 {
			return nil, &validate.Error{Field: "hour", Reason: fmt.Sprintf("%d: give a UTC hour 0 to 23, or null for the default window", *in.Hour)}
		}
		pol.Hour = *in.Hour
	}
	for _, k := range []struct {
		field string
		in    *int
		out   *int
		max   int
	}{{"keepDaily", in.KeepDaily, &pol.KeepDaily, maxKeepDaily}, {"keepWeekly", in.KeepWeekly, &pol.KeepWeekly, maxKeepWeekly},
		{"keepMonthly", in.KeepMonthly, &pol.KeepMonthly, maxKeepMonthly}} {
		if k.in == nil {
			continue
		}
		if *k.in < 0 || *k.in > k.max {
			return nil, &validate.Error{Field: k.field, Reason: fmt.Sprintf("%d: give 0 to %d", *k.in, k.max)}
		}
		*k.out = *k.in
	}
	if pol.KeepDaily == 0 && pol.KeepWeekly == 0 && pol.KeepMonthly == 0 {
		return nil, &validate.Error{Field: "keepDaily", Reason: "keepDaily, keepWeekly and keepMonthly are all 0: every backup would be removed"}
	}
	if in.Enabled != nil && !*in.Enabled {
		pol.Disabled = true
	}
	return pol, nil
}

// backupTargetFromInput validates createBackupTarget's input into a
// record (the secret not sealed yet) and returns the secret apart.
func (r *Resolver) backupTargetFromInput(ctx context.Context, in model.CreateBackupTargetInput) (*store.BackupTarget, []byte, error) {
	if err := ValidateBackupTargetName(in.Name); err != nil {
		return nil, nil, err
	}
	val := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	node, endpoint, bucket, prefix, region, keyID, secret := val(in.Node), val(in.Endpoint), val(in.Bucket), val(in.Prefix),
		val(in.Region), val(in.AccessKeyID), val(in.SecretAccessKey)
	s3Given := endpoint != "" || bucket != "" || prefix != "" || region != "" || keyID != "" || secret != ""
	t := &store.BackupTarget{Name: in.Name, Kind: store.BackupTargetKind(in.Kind)}
	switch in.Kind {
	case model.BackupTargetKindLocal:
		if node != "" || s3Given {
			return nil, nil, &validate.Error{Field: "kind", Reason: "a LOCAL target takes no node, endpoint, bucket, prefix, region or credentials"}
		}
	case model.BackupTargetKindNode:
		if s3Given {
			return nil, nil, &validate.Error{Field: "kind", Reason: "a NODE target takes a node only"}
		}
		if node == "" {
			return nil, nil, &validate.Error{Field: "node", Reason: "required for a NODE target: a node with role backup"}
		}
		n, err := r.Store.GetNode(ctx, node)
		if isNotFound(err) {
			return nil, nil, &validate.Error{Field: "node", Reason: "no node named " + quote(node)}
		}
		if err != nil {
			return nil, nil, err
		}
		if !slices.Contains(n.Roles, "backup") {
			return nil, nil, &validate.Error{Field: "node", Reason: "node " + quote(node) + " does not have the backup role (it has " + listOrNone(n.Roles) + ")"}
		}
		t.Node = node
	case model.BackupTargetKindS3:
		if node != "" {
			return nil, nil, &validate.Error{Field: "node", Reason: "an S3 target takes no node"}
		}
		var err error
		if t.Endpoint, err = ValidateS3Endpoint(endpoint); err != nil {
			return nil, nil, err
		}
		if err = ValidateS3Bucket(bucket); err != nil {
			return nil, nil, err
		}
		if t.Prefix, err = ValidateS3Prefix(prefix); err != nil {
			return nil, nil, err
		}
		if err = ValidateS3Region(region); err != nil {
			return nil, nil, err
		}
		if err = validS3Credentials(keyID, secret); err != nil {
			return nil, nil, err
		}
		t.Bucket, t.Region, t.AccessKeyID = bucket, region, keyID
		return t, []byte(secret), nil
	default:
		return nil, nil, &validate.Error{Field: "kind", Reason: "give LOCAL, NODE or S3"}
	}
	return t, nil, nil
}

// targetInUse names what uses target name: a plan's policy or a backup
// record (one being deleted still needs the target to forget its
// snapshots).
func (r *Resolver) targetInUse(ctx context.Context, name string) (string, error) {
	plans, err := r.Store.ListPlans(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range plans {
		if p.Backup != nil && p.Backup.Target == name {
			return "plan " + p.Name, nil
		}
	}
	bs, err := r.Store.ListAllBackups(ctx)
	if err != nil {
		return "", err
	}
	for _, b := range bs {
		if b.Target == name {
			return "backup " + b.ID, nil
		}
	}
	return "", nil
}

// defaultTarget picks createBackup's target for account a: the plan's,
// else the one named DefaultBackupTarget.
func (r *Resolver) defaultTarget(ctx context.Context, a *store.Account) (string, *store.BackupPolicy, error) {
	plan, err := r.Store.GetPlan(ctx, a.Plan)
	if err != nil && !isNotFound(err) {
		return "", nil, err
	}
	if plan != nil && plan.Backup != nil && plan.Backup.Target != "" {
		pol := *plan.Backup
		return pol.Target, &pol, nil
	}
	if _, err := r.Store.GetBackupTarget(ctx, DefaultBackupTarget); err != nil {
		if isNotFound(err) {
			return "", nil, &validate.Error{Field: "target", Reason: "no backup target is configured: the plan " + quote(a.Plan) +
				" has no backup settings and there is no target named " + quote(DefaultBackupTarget) + " (an admin creates one with createBackupTarget)"}
		}
		return "", nil, err
	}
	var pol *store.BackupPolicy
	if plan != nil && plan.Backup != nil {
		c := *plan.Backup
		pol = &c
	}
	return DefaultBackupTarget, pol, nil
}

// activeBackup returns a backup of account a still to finish, if any.
func (r *Resolver) activeBackup(ctx context.Context, a *store.Account) (*store.Backup, error) {
	for after := ""; ; {
		page, more, err := r.Store.ListBackups(ctx, a.Username, after, 200)
		if err != nil {
			return nil, err
		}
		for i := range page {
			if b := &page[i]; b.AccountID == a.ID && busy(b.Status.State) && !b.Deleting {
				return b, nil
			}
		}
		if !more || len(page) == 0 {
			return nil, nil
		}
		after = page[len(page)-1].ID
	}
}

// activeRestore returns a restore of account a still to finish, if any.
func (r *Resolver) activeRestore(ctx context.Context, username, accountID string) (*store.Restore, error) {
	rs, err := r.Store.ListRestores(ctx, username)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		if rs[i].AccountID == accountID && busy(rs[i].Status.State) {
			return &rs[i], nil
		}
	}
	return nil, nil
}

// restoreSpec validates restoreBackup's input against backup b of the
// live account a and fills the restore record's request fields.
func (r *Resolver) restoreSpec(ctx context.Context, p auth.Principal, a *store.Account, b *store.Backup, in model.RestoreBackupInput) (*store.Restore, error) {
	val := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	into := model.RestoreIntoSideBySide
	if in.Into != nil {
		into = *in.Into
	}
	if !into.IsValid() {
		return nil, &validate.Error{Field: "into", Reason: "give IN_PLACE or SIDE_BY_SIDE"}
	}
	rs := &store.Restore{What: store.RestoreWhat(in.What), InPlace: into == model.RestoreIntoInPlace, Node: a.Node}
	pth, db, dbInto, mbox, node := val(in.Path), val(in.Database), val(in.DatabaseInto), val(in.Mailbox), val(in.Node)
	only := func(what string, allowed ...string) error {
		for field, v := range map[string]string{"path": pth, "database": db, "databaseInto": dbInto, "mailbox": mbox, "node": node} {
			if v != "" && !slices.Contains(allowed, field) {
				return &validate.Error{Field: field, Reason: field + " does not apply to a " + what + " restore"}
			}
		}
		return nil
	}
	c := b.Status.Contents
	switch in.What {
	case model.RestoreWhatFiles:
		if err := only("FILES", "path"); err != nil {
			return nil, err
		}
		if !c.Files {
			return nil, &validate.Error{Field: "what", Reason: "backup " + b.ID + " holds no files"}
		}
		clean, err := ValidateRestorePath(pth)
		if err != nil {
			return nil, err
		}
		rs.Path = clean
	case model.RestoreWhatDatabase:
		if err := only("DATABASE", "database", "databaseInto"); err != nil {
			return nil, err
		}
		if db == "" {
			return nil, &validate.Error{Field: "database", Reason: "required for a DATABASE restore: one of " + listOrNone(c.Databases)}
		}
		if !slices.Contains(c.Databases, db) {
			return nil, &validate.Error{Field: "database", Reason: "backup " + b.ID + " holds no database " + quote(db) + " (it holds " + listOrNone(c.Databases) + ")"}
		}
		rs.Database = db
		if rs.InPlace {
			if dbInto != "" && dbInto != db {
				return nil, &validate.Error{Field: "databaseInto", Reason: "an IN_PLACE restore replaces " + db + " itself; give SIDE_BY_SIDE to restore it as another database"}
			}
			rs.DatabaseInto = db
			break
		}
		if dbInto == "" {
			return nil, &validate.Error{Field: "databaseInto", Reason: "required for a SIDE_BY_SIDE DATABASE restore: a new database name of the account (" + a.Username + "_...)"}
		}
		if err := validate.DatabaseName(dbInto, a.Username); err != nil {
			var ve *validate.Error
			if errors.As(err, &ve) {
				return nil, &validate.Error{Field: "databaseInto", Reason: ve.Reason}
			}
			return nil, err
		}
		if err := r.checkNewDatabase(ctx, a, dbInto); err != nil {
			return nil, err
		}
		rs.DatabaseInto = dbInto
	case model.RestoreWhatMailbox:
		if err := only("MAILBOX", "mailbox"); err != nil {
			return nil, err
		}
		mbox = strings.ToLower(mbox)
		if mbox == "" {
			return nil, &validate.Error{Field: "mailbox", Reason: "required for a MAILBOX restore: one of " + listOrNone(c.Mailboxes)}
		}
		if !slices.Contains(c.Mailboxes, mbox) {
			return nil, &validate.Error{Field: "mailbox", Reason: "backup " + b.ID + " holds no mailbox " + quote(mbox) + " (it holds " + listOrNone(c.Mailboxes) + ")"}
		}
		rs.Mailbox = mbox
	case model.RestoreWhatZone:
		if err := only("ZONE"); err != nil {
			return nil, err
		}
		if len(c.Zones) == 0 {
			return nil, &validate.Error{Field: "what", Reason: "backup " + b.ID + " holds no zone"}
		}
		if !rs.InPlace {
			return nil, &validate.Error{Field: "into", Reason: "a ZONE restore replaces the zones' records: give IN_PLACE"}
		}
	case model.RestoreWhatAll:
		if err := only("ALL", "node"); err != nil {
			return nil, err
		}
		if !rs.InPlace {
			return nil, &validate.Error{Field: "into", Reason: "an ALL restore replaces the account's files, databases and zones: give IN_PLACE (or restore FILES or a DATABASE side by side)"}
		}
		if node != "" {
			if p.Role != store.RoleAdmin {
				return nil, errorf(CodeForbidden, "only an admin may choose the node a restore runs on")
			}
			if err := r.checkRestoreNode(ctx, node, b); err != nil {
				return nil, err
			}
			rs.Node = node
		}
	default:
		return nil, &validate.Error{Field: "what", Reason: "give ALL, FILES, DATABASE, MAILBOX or ZONE"}
	}
	return rs, nil
}

// checkNewDatabase refuses a database name account a has already, or one
// more database than its plan allows.
func (r *Resolver) checkNewDatabase(ctx context.Context, a *store.Account, name string) error {
	plan, err := r.Store.GetPlan(ctx, a.Plan)
	if err != nil {
		return err
	}
	set, err := r.Store.GetDatabases(ctx, a.ID)
	if err != nil && !isNotFound(err) {
		return err
	}
	n := 0
	if set != nil {
		if _, ok := set.Databases[name]; ok {
			return fmt.Errorf("database %s exists already; restore into a new name, or IN_PLACE to replace it: %w", name, store.ErrConflict)
		}
		for _, d := range set.Databases {
			if !d.Deleted {
				n++
			}
		}
	}
	if n+1 > plan.Databases {
		return fmt.Errorf("%w: plan %s allows %d databases and account %s has %d", store.ErrQuotaExceeded, plan.Name, plan.Databases, a.Username, n)
	}
	return nil
}

// checkRestoreNode refuses a node that does not exist or lacks a role
// the restored account needs: web always, mail when the backup holds
// mailboxes (the plan's roles are asked again when the account is placed).
func (r *Resolver) checkRestoreNode(ctx context.Context, node string, b *store.Backup) error {
	n, err := r.Store.GetNode(ctx, node)
	if isNotFound(err) {
		return &validate.Error{Field: "node", Reason: "no node named " + quote(node)}
	}
	if err != nil {
		return err
	}
	if !slices.Contains(n.Roles, "web") {
		return &validate.Error{Field: "node", Reason: "node " + quote(node) + " does not host accounts (no web role)"}
	}
	if len(b.Status.Contents.Mailboxes) > 0 && !slices.Contains(n.Roles, mailRole) {
		return &validate.Error{Field: "node", Reason: "node " + quote(node) + " has no mail role, and backup " + b.ID + " holds mailboxes"}
	}
	return nil
}

// followOwner gives the account's backup and restore records its new
// owner, so that once the account is deleted its backups are its new
// reseller's, not the one it had when they were made. Best effort after
// the owner changed: while the account exists access follows the
// account anyway, and a record missed here is logged.
func (r *Resolver) followOwner(ctx context.Context, a *store.Account) {
	ctx = context.WithoutCancel(ctx)
	fail := func(id string, err error) {
		if err != nil && !isNotFound(err) {
			r.Log.Error("give a backup record the account's new owner", "account", a.Username, "record", id, "err", err)
		}
	}
	bs, _, err := r.Store.ListBackups(ctx, a.Username, "", 0)
	fail("backups", err)
	for _, b := range bs {
		if b.AccountID != a.ID || b.Owner == a.Owner {
			continue
		}
		_, err := r.Store.UpdateBackup(ctx, b.ID, func(b *store.Backup) ([]*store.ObjectTask, error) {
			if b.Owner == a.Owner {
				return nil, store.ErrUnchanged
			}
			b.Owner = a.Owner
			return nil, nil
		}, store.AuditEvent{})
		fail(b.ID, err)
	}
	rs, err := r.Store.ListRestores(ctx, a.Username)
	fail("restores", err)
	for _, x := range rs {
		if x.AccountID != a.ID || x.Owner == a.Owner {
			continue
		}
		_, err := r.Store.UpdateRestore(ctx, x.ID, func(x *store.Restore) ([]*store.ObjectTask, error) {
			if x.Owner == a.Owner {
				return nil, store.ErrUnchanged
			}
			x.Owner = a.Owner
			return nil, nil
		}, store.AuditEvent{})
		fail(x.ID, err)
	}
}

// --- backupEvents ---

// backupFinished reports whether a backup has nothing more to report:
// finished, with no verification asked for and not done yet.
func backupFinished(b *store.Backup) bool {
	switch b.Status.State {
	case store.BackupSucceeded, store.BackupPartial, store.BackupFailed:
		return !b.Deleting && b.VerifyRequested <= b.Status.VerifiedGeneration
	}
	return false
}

func progressEvent(b *store.Backup) *model.BackupProgressEvent {
	ev := &model.BackupProgressEvent{Backup: backupModel(b)}
	if n := len(b.Status.Events); n > 0 {
		ev.Event = backupEventModel(b.Status.Events[n-1])
	}
	return ev
}

// followBackup streams backup b: its state as read at rev, then each
// write of the record, until the backup is finished or deleted, the
// watch is lost (the client subscribes again), the session ends or the
// caller may no longer see the backup (checked at each write and every
// recheck period).
func (r *Resolver) followBackup(ctx context.Context, p auth.Principal, b *store.Backup, rev int64) (<-chan *model.BackupProgressEvent, error) {
	release, err := holdBackupSubscription(p.Name)
	if err != nil {
		return nil, err
	}
	watch, err := r.Store.WatchBackup(ctx, b.ID, rev)
	if err != nil {
		release()
		return nil, err
	}
	ch := make(chan *model.BackupProgressEvent, 16)
	go func() {
		defer close(ch)
		defer release()
		send := func(ev *model.BackupProgressEvent) bool {
			select {
			case ch <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if !send(progressEvent(b)) || backupFinished(b) {
			return
		}
		stillVisible := func() bool {
			ok, err := r.backupAccess(ctx, p, b.AccountID, b.Owner)
			if err != nil {
				if ctx.Err() == nil {
					r.Log.Error("recheck backup subscription", "backup", b.ID, "err", err)
				}
				return true // a transient read error is not a refusal; the next recheck decides
			}
			if ok {
				return true
			}
			r.refusedRead(ctx, "backupEvents", b.ID, CodeNotFound)
			transport.AddSubscriptionError(ctx, &gqlerror.Error{
				Message:    "backup " + quote(b.ID) + " not found: its account is no longer one you may see",
				Extensions: map[string]any{"code": CodeNotFound},
			})
			return false
		}
		backupHooks.Lock()
		every := backupHooks.recheck
		backupHooks.Unlock()
		// Access is checked every recheck period, not at each write: a
		// running backup's progress is written often.
		r.followRecord(ctx, p, "backup", watch, every, stillVisible, func(ev store.Event) bool {
			if ev.Deleted {
				gone := *b
				gone.Status.State = store.BackupDeleting
				gone.Status.AddEvent(time.Now(), "deleted", "")
				send(progressEvent(&gone))
				return false
			}
			cur, err := store.DecodeBackup(ev)
			if err != nil {
				r.Log.Error("decode backup", "backup", b.ID, "err", err)
				return false
			}
			b = cur
			return send(progressEvent(cur)) && !backupFinished(cur)
		})
	}()
	return ch, nil
}
