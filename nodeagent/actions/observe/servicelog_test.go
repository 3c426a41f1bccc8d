package observe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// fakeServices reports fixed statuses; nothing else is called.
type fakeServices struct {
	services.Manager
	st []services.Status
}

func (f fakeServices) Status() []services.Status { return f.st }

func read(t *testing.T, env *actions.Env, req *agentpb.ReadServiceLogAction, journal string) *agentpb.ServiceLogResult {
	t.Helper()
	a := NewReadServiceLog(req)
	if journal != "" {
		a.journalctl = journal
	}
	res, err := a.Apply(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	return res.(*agentpb.ServiceLogResult)
}

func TestReadServiceLogFiles(t *testing.T) {
	dir := t.TempDir()
	out, errLog := filepath.Join(dir, "out.log"), filepath.Join(dir, "error.log")
	os.WriteFile(out, []byte("2026/12/06 10:00:00 [notice] 1#1: start\n2026/12/06 10:00:03 [notice] 1#1: reload\n"), 0o640)
	os.WriteFile(errLog, []byte("2026/12/06 10:00:01 [error] 2#2: open() failed\n2026/12/06 10:00:02 [error] 2#2: upstream timed out\n"), 0o640)
	env := &actions.Env{Services: fakeServices{st: []services.Status{
		{Name: "nginx", LogFiles: []string{out, errLog, filepath.Join(dir, "missing.log")}},
		{Name: "pdns"},
	}}}
	res := read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 100}, "")
	if got := strings.Join(res.Lines, "|"); !strings.Contains(got, "start|2026/12/06 10:00:01") || !strings.HasSuffix(got, "reload") || len(res.Lines) != 4 {
		t.Errorf("merged by time: %q", res.Lines)
	}
	res = read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 100, Grep: "[error]"}, "")
	if len(res.Lines) != 2 {
		t.Errorf("grep: %q", res.Lines)
	}
	since := time.Date(2026, 12, 6, 10, 0, 2, 0, time.Local)
	res = read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 100, SinceUnixNano: since.UnixNano()}, "")
	if len(res.Lines) != 2 {
		t.Errorf("since: %q", res.Lines)
	}
	res = read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 1}, "")
	if len(res.Lines) != 1 || !strings.HasSuffix(res.Lines[0], "reload") || !res.Truncated {
		t.Errorf("1 line: %q %v", res.Lines, res.Truncated)
	}
	if res := read(t, env, &agentpb.ReadServiceLogAction{Service: "pdns", Lines: 1}, ""); len(res.Lines) != 0 {
		t.Errorf("no log: %q", res.Lines)
	}
	_, err := NewReadServiceLog(&agentpb.ReadServiceLogAction{Service: "mariadb", Lines: 1}).Apply(context.Background(), env)
	if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
		t.Errorf("unknown service: %v", err)
	}
}

// TestReadServiceLogJournal runs a fake journalctl that prints its argv
// and some lines: the unit and bounds reach it as arguments, the grep is
// applied here.
func TestReadServiceLogJournal(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "journalctl")
	script := "#!/bin/sh\necho \"args: $*\"\nfor i in 1 2 3 4 5; do echo \"2026-12-06T10:00:0$i+0000 host nginx[1]: line $i\"; done\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := &actions.Env{Services: fakeServices{st: []services.Status{{Name: "nginx", Unit: "nginx.service"}}}}
	since := time.Unix(1796558400, 0)
	res := read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 10, SinceUnixNano: since.UnixNano()}, fake)
	if len(res.Lines) != 6 || res.Lines[0] != "args: -u nginx.service -n 10 --no-pager -o short-iso -q --since @1796558400" {
		t.Errorf("journal: %q", res.Lines)
	}
	res = read(t, env, &agentpb.ReadServiceLogAction{Service: "nginx", Lines: 2, Grep: "line"}, fake)
	if len(res.Lines) != 2 || !strings.HasSuffix(res.Lines[1], "line 5") || !res.Truncated {
		t.Errorf("journal grep: %q %v", res.Lines, res.Truncated)
	}
}

func TestReadServiceLogAgent(t *testing.T) {
	var got []any
	env := &actions.Env{AgentLog: func(since time.Time, lines int, grep string) ([]string, bool) {
		got = []any{since.Unix(), lines, grep}
		return []string{"level=INFO msg=hello"}, false
	}}
	res := read(t, env, &agentpb.ReadServiceLogAction{Service: "agent", Lines: 5, Grep: "hello", SinceUnixNano: 7e9}, "")
	if len(res.Lines) != 1 || got[0] != int64(7) || got[1] != 5 || got[2] != "hello" {
		t.Errorf("agent: %q %v", res.Lines, got)
	}
	if _, err := NewReadServiceLog(&agentpb.ReadServiceLogAction{Service: "agent", Lines: 5}).Apply(context.Background(), &actions.Env{}); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Errorf("no ring: %v", err)
	}
}

func TestReadServiceLogValidate(t *testing.T) {
	for _, s := range []string{"nginx", "php-fpm8.2", "agent", "postgresql"} {
		if err := NewReadServiceLog(&agentpb.ReadServiceLogAction{Service: s, Lines: 10}).Validate(); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, a := range []*agentpb.ReadServiceLogAction{
		{Service: "../etc", Lines: 1}, {Service: "", Lines: 1}, {Service: "Nginx", Lines: 1}, {Service: "-u", Lines: 1},
		{Service: "nginx", Lines: 0}, {Service: "nginx", Lines: 1001}, {Service: "nginx", Lines: 1, Grep: "a\x00"},
		{Service: strings.Repeat("a", 65), Lines: 1},
	} {
		if NewReadServiceLog(a).Validate() == nil {
			t.Errorf("%v accepted", a)
		}
	}
}
