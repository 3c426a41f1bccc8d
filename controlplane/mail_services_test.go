package controlplane_test

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/platform"
)

// A mail node's agent supervises Exim, Dovecot, spamd (and clamd when
// installed): nodes { services } lists them running with a version and
// their listen addresses, and restartService restarts Exim through the
// task path (a new process, still serving SMTP).
func TestMailServicesAndRestart(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/exim4")
	testenv.RequireDaemon(t, "/usr/sbin/dovecot")
	if os.Geteuid() != 0 {
		t.Skip("running Exim and Dovecot supervised needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "mail-1", testenv.WithModules(t, "mail"))
	ctx := testenv.Context(t)
	prof, err := platform.DetectProfile(ag.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	mp := prof.Mail()
	want := []string{"exim", "dovecot"}
	if _, err := os.Stat(mp.Spamd); err == nil {
		want = append(want, "spamd")
	}
	if _, err := os.Stat(mp.Clamd); err == nil {
		want = append(want, "clamd")
	}
	byName := map[string]client.Service{}
	// Versions are asked once a daemon runs and arrive with a later report.
	testenv.WaitFor(t, 120*time.Second, "mail services running with versions", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "mail-1")
		if err != nil {
			t.Fatal(err)
		}
		byName = map[string]client.Service{}
		for _, sv := range svcs {
			byName[sv.Name] = sv
		}
		for _, n := range want {
			if sv := byName[n]; sv.State != "RUNNING" || sv.Version == nil || *sv.Version == "" {
				return false
			}
		}
		return true
	})
	for _, n := range want {
		sv := byName[n]
		if sv.Version == nil || *sv.Version == "" {
			t.Errorf("%s: no version", n)
		}
		if len(sv.Listen) == 0 {
			t.Errorf("%s: no listen addresses", n)
		}
		t.Logf("%s: %s %s %v", n, sv.State, deref(sv.Version), sv.Listen)
	}
	if v := byName["exim"].Version; v == nil || !strings.HasPrefix(*v, "4.") {
		t.Errorf("exim version %v", deref(v))
	}
	if v := byName["dovecot"].Version; v == nil || !strings.HasPrefix(*v, "2.") {
		t.Errorf("dovecot version %v", deref(v))
	}
	for _, l := range []string{ag.Config.SMTPListen, ag.Config.SubmissionListen, ag.Config.SMTPSListen} {
		if !slices.Contains(byName["exim"].Listen, l) {
			t.Errorf("exim listen %v lacks %s", byName["exim"].Listen, l)
		}
	}
	for _, l := range []string{ag.Config.IMAPListen, ag.Config.IMAPSListen, ag.Config.POP3Listen, ag.Config.POP3SListen} {
		if !slices.Contains(byName["dovecot"].Listen, l) {
			t.Errorf("dovecot listen %v lacks %s", byName["dovecot"].Listen, l)
		}
	}

	pidFile := filepath.Join(mp.RunDir, "exim.pid")
	oldPID, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	before := byName["exim"]
	task, err := s.Admin.RestartService(ctx, "mail-1", "exim", 60)
	if err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("restartService exim: %+v %v", task, err)
	}
	testenv.WaitFor(t, 30*time.Second, "exim restarted in nodes { services }", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "mail-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range svcs {
			if sv.Name == "exim" && sv.State == "RUNNING" && sv.Since != nil && before.Since != nil && sv.Since.After(*before.Since) {
				return true
			}
		}
		return false
	})
	newPID, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(newPID)) == strings.TrimSpace(string(oldPID)) {
		t.Errorf("exim pid %s unchanged after restartService", strings.TrimSpace(string(oldPID)))
	}
	// Still serving SMTP after the restart.
	c, err := net.DialTimeout("tcp", ag.Config.SMTPListen, 10*time.Second)
	if err != nil {
		t.Fatalf("smtp after restart: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	banner, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || !strings.HasPrefix(banner, "220 ") {
		t.Fatalf("smtp banner after restart: %q %v", banner, err)
	}
	if task, err := s.Admin.RestartService(ctx, "mail-1", "postfix", 30); err != nil || task.Status != "FAILED" {
		t.Fatalf("restartService of an unmanaged daemon: %+v %v", task, err)
	}
}
