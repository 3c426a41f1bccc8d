package mail

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// ReadMailLog returns the log lines naming one mailbox.
type ReadMailLog struct {
	m              *Module
	req            *agentpb.ReadMailLogAction
	allowTestNames bool
}

// MailQueue lists Exim's queue.
type MailQueue struct {
	m   *Module
	req *agentpb.MailQueueAction
}

// FlushMailQueue runs the queue now.
type FlushMailQueue struct {
	m   *Module
	req *agentpb.FlushMailQueueAction
}

// ScanMailbox scans a maildir with clamd.
type ScanMailbox struct {
	m              *Module
	req            *agentpb.ScanMailboxAction
	allowTestNames bool
}

// TrainMail feeds one message to sa-learn.
type TrainMail struct {
	m              *Module
	req            *agentpb.TrainMailAction
	allowTestNames bool
}

// NewReadMailLog builds the action from its wire form.
func (m *Module) NewReadMailLog(req *agentpb.ReadMailLogAction) *ReadMailLog {
	return &ReadMailLog{m: m, req: req}
}

// NewMailQueue builds the action from its wire form.
func (m *Module) NewMailQueue(req *agentpb.MailQueueAction) *MailQueue {
	return &MailQueue{m: m, req: req}
}

// NewFlushMailQueue builds the action from its wire form.
func (m *Module) NewFlushMailQueue(req *agentpb.FlushMailQueueAction) *FlushMailQueue {
	return &FlushMailQueue{m: m, req: req}
}

// NewScanMailbox builds the action from its wire form.
func (m *Module) NewScanMailbox(req *agentpb.ScanMailboxAction) *ScanMailbox {
	return &ScanMailbox{m: m, req: req}
}

// NewTrainMail builds the action from its wire form.
func (m *Module) NewTrainMail(req *agentpb.TrainMailAction) *TrainMail {
	return &TrainMail{m: m, req: req}
}

func (a *ReadMailLog) Name() string        { return ReadLogName }
func (a *MailQueue) Name() string          { return QueueName }
func (a *FlushMailQueue) Name() string     { return FlushQueueName }
func (a *ScanMailbox) Name() string        { return ScanName }
func (a *TrainMail) Name() string          { return TrainName }
func (a *ReadMailLog) AllowTestUsernames() { a.allowTestNames = true }
func (a *ScanMailbox) AllowTestUsernames() { a.allowTestNames = true }
func (a *TrainMail) AllowTestUsernames()   { a.allowTestNames = true }
func (a *FlushMailQueue) Validate() error  { return nil }
func (a *MailQueue) Validate() error       { return boundErr("limit", a.req.GetLimit(), 1, 1000) }
func (a *ReadMailLog) Validate() error {
	return validUserAddress(a.req.GetUsername(), a.req.GetAddress(), a.allowTestNames, boundErr("hours", a.req.GetHours(), 1, 168), boundErr("lines", a.req.GetLines(), 1, 1000))
}
func (a *ScanMailbox) Validate() error {
	return validUserAddress(a.req.GetUsername(), a.req.GetAddress(), a.allowTestNames)
}
func (a *TrainMail) Validate() error {
	if a.req.GetUid() == 0 {
		return errors.New("uid must be set")
	}
	return validUserAddress(a.req.GetUsername(), a.req.GetAddress(), a.allowTestNames)
}

func boundErr(field string, v, lo, hi uint32) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d is out of range %d..%d", field, v, lo, hi)
	}
	return nil
}

func validUserAddress(username, address string, allowTest bool, more ...error) error {
	if err := validate.UsernameOrTest(username, allowTest); err != nil {
		return err
	}
	if _, _, err := canonAddress(address); err != nil {
		return err
	}
	return errors.Join(more...)
}

// maildirOf opens, as a root, the maildir of an account's mailbox,
// refusing a domain of another account and a maildir that is not a real
// directory in the account's home (a symlink cannot point the agent at
// another account's mail or the rest of the system).
func maildirOf(env *actions.Env, username, address string) (*os.Root, error) {
	local, domain, err := canonAddress(address)
	if err != nil {
		return nil, err
	}
	owned, err := checkOwner(env, domain, username)
	if err != nil {
		return nil, err
	}
	if !owned {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "mail domain %s is not served on this node", domain)
	}
	acct, err := lookupAccount(env, username)
	if err != nil {
		return nil, err
	}
	return openAccountMaildir(acct.home, domain, local, address)
}

// openAccountMaildir opens the mailbox's Maildir through a root on the
// account's home, failing NOT_FOUND when it is missing or not a real
// directory.
func openAccountMaildir(home, domain, local, address string) (*os.Root, error) {
	md, err := openMaildir(home, mailHomeRel(domain, local))
	if err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "mailbox %s has no maildir: %v", address, err)
	}
	return md, nil
}

// Apply implements actions.Action: lines of Exim's main log and Dovecot's
// log that name the address, within the last hours, newest last.
func (a *ReadMailLog) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	if _, _, err := canonAddress(a.req.Address); err != nil {
		return nil, err
	}
	_, domain, _ := canonAddress(a.req.Address)
	owned, err := checkOwner(env, domain, a.req.Username)
	if err != nil {
		return nil, err
	}
	if !owned {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "mail domain %s is not served on this node", domain)
	}
	mp := env.Profile.Mail()
	since := time.Now().Add(-time.Duration(a.req.Hours) * time.Hour)
	max := int(a.req.Lines)
	res := &agentpb.MailLogResult{}
	var lines []logLine
	for _, f := range []string{mp.EximMainLog, mp.DovecotLog} {
		ls, err := grepLog(ctx, f, a.req.Address, since)
		if err != nil {
			return nil, err
		}
		lines = append(lines, ls...)
	}
	sortLines(lines)
	if len(lines) > max {
		lines = lines[len(lines)-max:]
		res.Truncated = true
	}
	for _, l := range lines {
		res.Lines = append(res.Lines, l.text)
	}
	return res, nil
}

type logLine struct {
	at   time.Time
	text string
}

func sortLines(ls []logLine) {
	// Stable insertion by time keeps each file's order for equal stamps.
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].at.Before(ls[j-1].at); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// logTime reads the time stamp of an Exim ("2006-01-02 15:04:05 ...") or
// Dovecot ("Jan 02 15:04:05 ...") log line.
func logTime(s string, now time.Time) (time.Time, bool) {
	if len(s) >= 19 {
		if t, err := time.ParseInLocation("2006-01-02 15:04:05", s[:19], time.Local); err == nil {
			return t, true
		}
	}
	if len(s) >= 15 {
		if t, err := time.ParseInLocation("Jan 02 15:04:05", s[:15], time.Local); err == nil {
			t = t.AddDate(now.Year(), 0, 0)
			if t.After(now.Add(24 * time.Hour)) {
				t = t.AddDate(-1, 0, 0)
			}
			return t, true
		}
	}
	return time.Time{}, false
}

// maxLogScan bounds how much of a log one request reads (its tail).
const maxLogScan = 64 << 20

func grepLog(ctx context.Context, file, address string, since time.Time) ([]logLine, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxLogScan {
		if _, err := f.Seek(fi.Size()-maxLogScan, io.SeekStart); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	needle := strings.ToLower(address)
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		l := sc.Text()
		if !mentionsAddress(strings.ToLower(l), needle) {
			continue
		}
		t, ok := logTime(l, now)
		if !ok || t.Before(since) {
			continue
		}
		out = append(out, logLine{at: t, text: l})
		if len(out) > 20000 {
			out = out[10000:]
		}
	}
	return out, sc.Err()
}

// mentionsAddress reports whether the lower-cased line names the
// lower-cased address as a whole token: delimited on both sides by the
// line's start or end or one of the characters Exim and Dovecot put around
// an address (<a>, for a, F=<a>, user=<a>, lmtp(a), "a", a:), so a@b.co
// does not match a@b.com or xa@b.co.
func mentionsAddress(line, addr string) bool {
	if addr == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(line[i:], addr)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(addr)
		if (start == 0 || isAddrDelim(line[start-1])) && (end == len(line) || isAddrDelim(line[end])) {
			return true
		}
		i = start + 1
	}
}

func isAddrDelim(c byte) bool {
	return strings.IndexByte("<>()=, :\"\t", c) >= 0
}

// Apply implements actions.Action: `exim -bp`, parsed.
func (a *MailQueue) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	mp := env.Profile.Mail()
	out, err := exec.CommandContext(ctx, mp.Exim, "-C", mp.EximConfig, "-bp").Output()
	if err != nil {
		return nil, fmt.Errorf("exim -bp: %w", err)
	}
	msgs := parseQueue(string(out))
	res := &agentpb.MailQueueResult{Total: uint32(len(msgs))}
	if len(msgs) > int(a.req.Limit) {
		msgs = msgs[:a.req.Limit]
	}
	res.Messages = msgs
	return res, nil
}

// parseQueue parses `exim -bp`: per message a line "AGE SIZE ID <sender>
// [*** frozen ***]", then one indented line per undelivered recipient
// ("D" marks delivered ones), then a blank line.
func parseQueue(s string) []*agentpb.MailQueueEntry {
	var out []*agentpb.MailQueueEntry
	var cur *agentpb.MailQueueEntry
	for _, l := range strings.Split(s, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case t == "":
			cur = nil
		case cur == nil:
			f := strings.Fields(t)
			if len(f) < 4 {
				continue
			}
			cur = &agentpb.MailQueueEntry{Id: f[2], AgeSeconds: parseAge(f[0]), SizeBytes: parseSize(f[1]),
				Sender: strings.Trim(f[3], "<>"), Frozen: strings.Contains(t, "*** frozen ***")}
			out = append(out, cur)
		default:
			if strings.HasPrefix(t, "D ") {
				continue
			}
			cur.Recipients = append(cur.Recipients, strings.TrimPrefix(t, "+D "))
		}
	}
	return out
}

func parseAge(s string) int64 {
	if len(s) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(s[:len(s)-1], 10, 64)
	switch s[len(s)-1] {
	case 's':
		return n
	case 'm':
		return n * 60
	case 'h':
		return n * 3600
	case 'd':
		return n * 86400
	case 'w':
		return n * 7 * 86400
	}
	return 0
}

func parseSize(s string) uint64 {
	mul := 1.0
	switch {
	case strings.HasSuffix(s, "K"):
		mul, s = 1024, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mul, s = 1024*1024, strings.TrimSuffix(s, "M")
	}
	f, _ := strconv.ParseFloat(s, 64)
	return uint64(f * mul)
}

// Apply implements actions.Action: `exim -qff` (every message, frozen
// ones too), waited for.
func (a *FlushMailQueue) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	mp := env.Profile.Mail()
	if out, err := exec.CommandContext(ctx, mp.Exim, "-C", mp.EximConfig, "-qff").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("exim -qff: %w: %s", err, tail(out))
	}
	return nil, nil
}

// clamdSocket is where clamd listens.
func clamdSocket(env *actions.Env) string { return env.Profile.Mail().ClamdSocket }

// Apply implements actions.Action: every message file of the maildir is
// streamed to clamd (INSTREAM); no file name reaches clamd.
func (a *ScanMailbox) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	md, err := maildirOf(env, a.req.Username, a.req.Address)
	if err != nil {
		return nil, err
	}
	defer md.Close()
	sock := clamdSocket(env)
	if _, err := os.Stat(sock); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "ClamAV (clamd) does not run on this node")
	}
	return scanMaildir(ctx, md, sock)
}

// scanMaildir streams every message file of the maildir md to clamd at
// sock. Only regular files are read (no symlink, FIFO or device), each at
// most maxMessage bytes; the walk never leaves md.
func scanMaildir(ctx context.Context, md *os.Root, sock string) (*agentpb.ScanMailboxResult, error) {
	res := &agentpb.ScanMailboxResult{}
	err := fs.WalkDir(md.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil || !isMessage(p, fi) {
			return err
		}
		f, fi, err := openRegular(md, p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if fi.Size() > maxMessage {
			return nil
		}
		sig, err := clamdInstream(ctx, sock, io.LimitReader(f, maxMessage))
		if err != nil {
			return err
		}
		res.Scanned++
		if sig != "" {
			res.Infected = append(res.Infected, &agentpb.MailInfection{Message: path.Base(p), Signature: sig})
		}
		return nil
	})
	return res, err
}

// clamdInstream sends r to clamd's INSTREAM command and returns the
// signature found, "" when clean.
func clamdInstream(ctx context.Context, sock string, r io.Reader) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	if _, err := c.Write([]byte("zINSTREAM\x00")); err != nil {
		return "", err
	}
	buf := make([]byte, 32<<10)
	var hdr [4]byte
	for {
		n, err := r.Read(buf)
		if n > 0 {
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			if _, err := c.Write(hdr[:]); err != nil {
				return "", err
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return "", err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
		return "", err
	}
	reply, err := bufio.NewReader(c).ReadString(0)
	if err != nil && reply == "" {
		return "", err
	}
	reply = strings.TrimRight(reply, "\x00\n")
	switch {
	case strings.HasSuffix(reply, " FOUND"):
		return strings.TrimSuffix(strings.TrimPrefix(reply, "stream: "), " FOUND"), nil
	case strings.HasSuffix(reply, "OK"):
		return "", nil
	}
	return "", fmt.Errorf("clamd: %s", reply)
}

// Apply implements actions.Action: the message with the UID (from the
// maildir's dovecot-uidlist) goes to sa-learn as the account's user.
func (a *TrainMail) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := unavailable(env); err != nil {
		return nil, err
	}
	mp := env.Profile.Mail()
	if _, err := os.Stat(mp.SaLearn); err != nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "SpamAssassin (sa-learn) is not installed on this node")
	}
	md, err := maildirOf(env, a.req.Username, a.req.Address)
	if err != nil {
		return nil, err
	}
	defer md.Close()
	f, err := messageByUID(md, a.req.Uid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mode := "--ham"
	if a.req.Spam {
		mode = "--spam"
	}
	// sa-learn runs as spamd's user on the account's own Bayes database,
	// the one spamd uses for mail to the account's domains, never as root
	// on root's. The user name was validated: it is one path component.
	uid, gid, err := lookupIDs(mp.SpamdUser)
	if err != nil {
		return nil, err
	}
	home := filepath.Join(mp.SpamdDir, "home")
	dbpath := filepath.Join(mp.SpamdBayesDir, a.req.Username)
	if err := os.Mkdir(dbpath, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	if err := os.Lchown(dbpath, uid, gid); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, mp.SaLearn, mode, "--dbpath", dbpath)
	// The message goes on stdin, bounded: sa-learn is given no path.
	cmd.Stdin = io.LimitReader(f, maxMessage)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home}
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("sa-learn: %w: %s", err, tail(out))
	}
	return &agentpb.TrainMailResult{Learned: strings.Contains(string(out), "Learned tokens from 1 message")}, nil
}

// messageByUID opens the file of the message with uid in a maildir's
// INBOX through dovecot-uidlist ("UID [K...] :BASENAME" lines). Both are
// read through the maildir's root, as regular files only, never through
// a symlink, and bounded in size.
func messageByUID(md *os.Root, uid uint32) (*os.File, error) {
	notFound := actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "no message with uid %d", uid)
	b, err := readBounded(md, "dovecot-uidlist", maxUIDList)
	if err != nil {
		return nil, notFound
	}
	want := strconv.FormatUint(uint64(uid), 10)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != want {
			continue
		}
		base := f[len(f)-1]
		if i := strings.IndexByte(base, ':'); i >= 0 {
			base = base[i+1:]
		}
		if strings.ContainsAny(base, "/\x00") || base == "" || base[0] == '.' {
			break
		}
		for _, d := range []string{"cur", "new"} {
			dir, err := openSubdir(md, d)
			if err != nil {
				continue
			}
			ents, _ := fs.ReadDir(dir.FS(), ".")
			for _, e := range ents {
				if e.Name() != base && !strings.HasPrefix(e.Name(), base+":") {
					continue
				}
				f, fi, err := openRegular(dir, e.Name())
				if err != nil || fi.Size() > maxMessage {
					if f != nil {
						f.Close()
					}
					dir.Close()
					return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "message with uid %d is not a regular file of at most %d bytes", uid, maxMessage)
				}
				dir.Close()
				return f, nil
			}
			dir.Close()
		}
	}
	return nil, notFound
}
