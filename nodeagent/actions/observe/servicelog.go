package observe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// ReadServiceLogName is the action's name in metrics and logs.
const ReadServiceLogName = "read_service_log"

// AgentService is the service name of the agent's own log.
const AgentService = "agent"

// Journalctl is the fixed path of systemd's journal reader.
const Journalctl = "/usr/bin/journalctl"

const (
	// maxServiceLogLines is the most lines one read returns.
	maxServiceLogLines = 1000
	// journalGrepLines is how many journal lines a read with grep looks
	// at (journalctl's own --grep is a regular expression, and not in
	// every build): the filter runs here.
	journalGrepLines = 20000
	// maxJournalOutput bounds what is read of journalctl's output.
	maxJournalOutput = 32 << 20
	// maxServiceLogRead bounds the result (it is stored with the task).
	maxServiceLogRead = 128 << 10
)

// ReadServiceLog returns the last lines of one of the node's daemons: its
// log files (Status.LogFiles), its systemd journal when it has none, or
// the agent's own ring for "agent". It changes nothing.
type ReadServiceLog struct {
	Service string
	Since   time.Time
	Lines   uint32
	Grep    string

	journalctl string // Journalctl; tests point it at a fake
}

var _ actions.Action = (*ReadServiceLog)(nil)

// NewReadServiceLog builds the action from its wire form.
func NewReadServiceLog(req *agentpb.ReadServiceLogAction) *ReadServiceLog {
	a := &ReadServiceLog{Service: req.GetService(), Lines: req.GetLines(), Grep: req.GetGrep(), journalctl: Journalctl}
	if n := req.GetSinceUnixNano(); n > 0 {
		a.Since = time.Unix(0, n)
	}
	return a
}

// Name implements actions.Action.
func (*ReadServiceLog) Name() string { return ReadServiceLogName }

// Validate implements actions.Action.
func (a *ReadServiceLog) Validate() error {
	if err := ValidateServiceName(a.Service); err != nil {
		return err
	}
	if a.Lines < 1 || a.Lines > maxServiceLogLines {
		return fmt.Errorf("observe: %d lines: want 1 to %d", a.Lines, maxServiceLogLines)
	}
	return web.ValidateGrep(a.Grep)
}

// ValidateServiceName checks a service name as the node reports them
// ("nginx", "php-fpm8.2", "pdns", "agent"): lower-case letters, digits,
// '.', '-' and '_', starting with a letter, at most 64 bytes.
func ValidateServiceName(s string) error {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return fmt.Errorf("observe: bad service name %q", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("observe: bad service name %q", s)
		}
	}
	return nil
}

// Apply implements actions.Action.
func (a *ReadServiceLog) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if err := a.Validate(); err != nil {
		return nil, actions.WithReason(agentpb.ErrorReason_ERROR_REASON_INVALID, err)
	}
	n := int(a.Lines)
	if a.Service == AgentService {
		if env.AgentLog == nil {
			return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE, "observe: the agent keeps no log of its own")
		}
		lines, trunc := env.AgentLog(a.Since, n, a.Grep)
		return &agentpb.ServiceLogResult{Lines: lines, Truncated: trunc}, nil
	}
	if env.Services == nil {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "observe: no service %q on this node", a.Service)
	}
	i := slices.IndexFunc(env.Services.Status(), func(st services.Status) bool { return st.Name == a.Service })
	if i < 0 {
		return nil, actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "observe: no service %q on this node", a.Service)
	}
	st := env.Services.Status()[i]
	var (
		lines []string
		trunc bool
		err   error
	)
	switch {
	case len(st.LogFiles) > 0:
		lines, trunc, err = a.readFiles(st.LogFiles)
	case st.Unit != "":
		lines, trunc, err = a.readJournal(ctx, st.Unit)
	default:
		return &agentpb.ServiceLogResult{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("observe: log of %s: %w", a.Service, err)
	}
	return &agentpb.ServiceLogResult{Lines: lines, Truncated: trunc}, nil
}

// readFiles reads the last lines of each file and merges them by the time
// their lines start with where every line has one, else file after file;
// the newest n stay.
func (a *ReadServiceLog) readFiles(paths []string) ([]string, bool, error) {
	n := int(a.Lines)
	var (
		all   []timedLine
		trunc bool
	)
	timed := true
	for fi, p := range paths {
		lines, t, err := readFileTail(p, web.LogScan{Lines: n, Grep: []byte(a.Grep), Since: a.Since, LineTime: lineTime, Limit: maxServiceLogRead})
		if err != nil {
			return nil, false, err
		}
		trunc = trunc || t
		for _, l := range lines {
			tm, ok := lineTime([]byte(l))
			timed = timed && ok
			all = append(all, timedLine{tm, fi, l})
		}
	}
	if timed && len(paths) > 1 {
		slices.SortStableFunc(all, func(x, y timedLine) int { return x.t.Compare(y.t) })
	}
	if len(all) > n {
		all, trunc = all[len(all)-n:], true
	}
	start, size := len(all), 0
	for start > 0 && size+len(all[start-1].line) <= maxServiceLogRead {
		start--
		size += len(all[start].line)
	}
	trunc = trunc || start > 0
	out := make([]string, 0, len(all)-start)
	for _, l := range all[start:] {
		out = append(out, l.line)
	}
	return out, trunc, nil
}

type timedLine struct {
	t    time.Time
	file int
	line string
}

func readFileTail(path string, sc web.LogScan) ([]string, bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil // not written yet
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s is not a regular file", path)
	}
	return web.ScanBack(f, fi.Size(), sc)
}

// readJournal runs journalctl for the unit (argv only, no shell) and
// filters its lines here.
func (a *ReadServiceLog) readJournal(ctx context.Context, unit string) ([]string, bool, error) {
	n := int(a.Lines)
	want := n
	if a.Grep != "" {
		want = journalGrepLines
	}
	args := []string{"-u", unit, "-n", strconv.Itoa(want), "--no-pager", "-o", "short-iso", "-q"}
	if !a.Since.IsZero() {
		args = append(args, "--since", "@"+strconv.FormatInt(a.Since.Unix(), 10))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.journalctl, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, false, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, false, err
	}
	var lines []string
	trunc := false
	sc := bufio.NewScanner(io.LimitReader(out, maxJournalOutput))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	grep := []byte(a.Grep)
	for sc.Scan() {
		l := sc.Bytes()
		if len(grep) > 0 && !bytes.Contains(l, grep) {
			continue
		}
		if len(l) > 4<<10 {
			l, trunc = l[:4<<10], true
		}
		lines = append(lines, string(bytes.ToValidUTF8(l, []byte("\uFFFD"))))
		if len(lines) > n {
			lines, trunc = lines[1:], true
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return nil, false, fmt.Errorf("journalctl: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	size := 0
	for i := len(lines) - 1; i >= 0; i-- {
		if size += len(lines[i]); size > maxServiceLogRead {
			return lines[i+1:], true, nil
		}
	}
	return lines, trunc, nil
}

// lineTime reads the time a daemon's log line starts with, in the forms
// our daemons write: nginx "2026/12/06 12:29:11", MariaDB, PostgreSQL and
// Exim "2026-12-06 12:29:11", ISO 8601 "2026-12-06T12:29:11", PHP-FPM
// "[06-Dec-2026 12:29:11]", syslog-like "Dec  6 12:29:11" (this year).
func lineTime(l []byte) (time.Time, bool) {
	if len(l) >= 19 && l[4] == '/' && l[13] == ':' {
		t, err := time.ParseInLocation("2006/01/02 15:04:05", string(l[:19]), time.Local)
		return t, err == nil
	}
	if len(l) >= 19 && l[4] == '-' && l[13] == ':' && (l[10] == ' ' || l[10] == 'T') {
		s := []byte(string(l[:19]))
		s[10] = ' '
		t, err := time.ParseInLocation(time.DateTime, string(s), time.Local)
		return t, err == nil
	}
	if len(l) >= 22 && l[0] == '[' && l[21] == ']' {
		t, err := time.ParseInLocation("02-Jan-2006 15:04:05", string(l[1:21]), time.Local)
		return t, err == nil
	}
	if len(l) >= 15 && l[3] == ' ' && l[9] == ':' {
		t, err := time.ParseInLocation(time.Stamp, string(l[:15]), time.Local)
		if err != nil {
			return time.Time{}, false
		}
		now := time.Now()
		t = t.AddDate(now.Year(), 0, 0)
		if t.After(now.Add(24 * time.Hour)) {
			t = t.AddDate(-1, 0, 0) // December's lines read in January
		}
		return t, true
	}
	return time.Time{}, false
}
