package controlplane_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// TestCertEventsAudited (issue 27): the certificate controller's events
// land in the audit log (certificate.failed with the reason, then
// certificate.issued with the serial), and a failed order counts in
// npanel_certificate_attempts_total{action="issue",result="failed"}.
func TestCertEventsAudited(t *testing.T) {
	e := startCertEnv(t, "certau", "certau.example.com")
	const id = "certau.example.com"
	ctx := context.Background()
	e.node.setFail(true)
	failed := e.waitCert(t, id, "failed", func(c *store.Certificate) bool { return c.Status.Failures >= 1 })
	if failed.Status.State != store.CertFailed || !hasEvent(failed, "failed", "fake validation failure") {
		t.Fatalf("first failure: %+v", failed.Status)
	}
	audit := func(action string) []store.AuditEvent {
		t.Helper()
		evs, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: action, Target: id}, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	testenv.WaitFor(t, 10*time.Second, "certificate.failed in the audit log", func() bool { return len(audit("certificate.failed")) > 0 })
	for _, ev := range audit("certificate.failed") {
		if ev.Actor != "system" || ev.Target != id || !strings.HasPrefix(ev.Result, "failed: ") || !strings.Contains(ev.Result, "fake validation failure") {
			t.Fatalf("audit event %+v", ev)
		}
	}
	attempts := func(result string) float64 {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.s.URL()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+e.s.Admin.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		series := `npanel_certificate_attempts_total{action="issue",result="` + result + `"} `
		for _, line := range strings.Split(readAll(t, resp), "\n") {
			if v, ok := strings.CutPrefix(line, series); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		return 0
	}
	// Each failed order is counted once (the server is the test's own, so
	// its counters start at 0).
	testenv.WaitFor(t, 10*time.Second, "the failed order counted", func() bool {
		return attempts("failed") >= float64(len(audit("certificate.failed")))
	})
	if attempts("failed") < 1 || attempts("ok") != 0 {
		t.Fatalf("attempts: failed %v, ok %v", attempts("failed"), attempts("ok"))
	}

	e.node.setFail(false)
	issued := e.waitCert(t, id, "issued after the backoff", issuedState)
	testenv.WaitFor(t, 10*time.Second, "certificate.issued in the audit log", func() bool {
		for _, ev := range audit("certificate.issued") {
			if ev.Actor == "system" && strings.HasPrefix(ev.Result, "ok: ") && strings.Contains(ev.Result, issued.Status.Serial) {
				return true
			}
		}
		return false
	})
	testenv.WaitFor(t, 10*time.Second, "the issued order counted", func() bool { return attempts("ok") == 1 })
}
