package agentmetrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/npanel/npanel/nodeagent/logtail"
)

func TestMailDeliveries(t *testing.T) {
	main := &logtail.Source{Path: "/p/var/log/mail/exim_mainlog", Service: "exim"}
	reject := &logtail.Source{Path: "/p/var/log/mail/exim_rejectlog", Service: "exim"}
	other := &logtail.Source{Path: "/p/var/log/mail/dovecot.log", Service: "dovecot"}
	lines := []struct {
		src  *logtail.Source
		line string
	}{
		{main, "2026-12-06 12:00:00 1tAbCd-000Abc-Xy <= a@b.test H=(x) [127.0.0.1] P=esmtpa S=500"},
		{main, "2026-12-06 12:00:01 1tAbCd-000Abc-Xy => alice@example.test R=local T=lmtp"},
		{main, "2026-12-06 12:00:01 1tAbCd-000Abc-Xy -> bob@example.test R=local T=lmtp"},
		{main, "2026-12-06 12:00:02 [4242] 1tAbCe-000Abc-Xy == carol@remote.test R=smarthost T=smtp defer (-44): SMTP error"},
		{main, "2026-12-06 12:00:03 1tAbCf-0007hX-9Q ** dave@remote.test R=smarthost: SMTP error from remote: 550 rejected"},
		{main, "2026-12-06 12:00:04 1tAbCd-000Abc-Xy Completed"},
		{main, "2026-12-06 12:00:05 H=(spam) [192.0.2.1] F=<x@y.test> rejected RCPT <z@example.test>: relay not permitted"},
		{reject, "2026-12-06 12:00:05 H=(spam) [192.0.2.1] F=<x@y.test> rejected RCPT <z@example.test>: relay not permitted"},
		{other, "2026-12-06 12:00:06 1tAbCd-000Abc-Xy => not exim"},
		{main, "short"},
	}
	m := NewMailDeliveries("exim")
	var batch []logtail.Entry
	for _, l := range lines {
		batch = append(batch, logtail.Entry{Source: l.src, Line: []byte(l.line)})
	}
	m.Consume(batch)
	want := `
# HELP npanel_mail_deliveries_total Exim's delivery attempts by outcome: delivered, deferred (to be retried), bounced (failed for good), rejected (refused at SMTP time).
# TYPE npanel_mail_deliveries_total counter
npanel_mail_deliveries_total{status="bounced"} 1
npanel_mail_deliveries_total{status="deferred"} 1
npanel_mail_deliveries_total{status="delivered"} 2
npanel_mail_deliveries_total{status="rejected"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func FuzzMailStatus(f *testing.F) {
	f.Add([]byte("2026-12-06 12:00:01 1tAbCd-000Abc-Xy => alice@example.test"))
	f.Add([]byte("2026-12-06 12:00:02 [4242] 1tAbCe-000Abc-Xy == c@r"))
	f.Add([]byte("a b ["))
	f.Fuzz(func(t *testing.T, line []byte) {
		switch mailStatus(line) {
		case "", "delivered", "deferred", "bounced", "rejected":
		default:
			t.Fatal("unknown status")
		}
	})
}
