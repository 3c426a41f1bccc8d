package web

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/protos/agentpb"
)

// accessLine is a line as nginx writes it with logFormat.
func accessLine(at time.Time, status int, bytes int, rt string) string {
	return fmt.Sprintf(`{"time":"%s","status":%d,"bytes":%d,"rt":%s,"method":"GET","uri":"/a?b=\"c\"","host":"example.com","remote":"127.0.0.1","ua":"curl/7.88.1","ref":"","proto":"HTTP/1.1"}`,
		at.Format("2006-01-02T15:04:05-07:00"), status, bytes, rt)
}

func TestParseAccess(t *testing.T) {
	at := time.Date(2026, 12, 6, 13, 4, 5, 0, time.FixedZone("", 3600))
	rec, ok := parseAccess([]byte(accessLine(at, 404, 1234, "0.250")))
	if !ok || rec.status != 404 || rec.bytes != 1234 || rec.rtMS != 250 || rec.unix != at.Unix() {
		t.Fatalf("got %+v %v, want 404 1234 250ms %d", rec, ok, at.Unix())
	}
	for _, tc := range []struct {
		line string
		ok   bool
		want accessRecord
	}{
		{`{"status":200}`, true, accessRecord{status: 200}},
		{` { "rt" : 12.3456 , "status" : 502, "bytes":"-"} `, true, accessRecord{status: 502, rtMS: 12345}},
		{`{"uri":"/x\",\"status\":500","status":201}`, true, accessRecord{status: 201}},
		{`{"time":"2026-12-06T12:00:00+00:00","status":200,"bytes":5,"rt":0.000}`, true, accessRecord{unix: 1796558400, status: 200, bytes: 5}},
		{`{"time":"garbage","status":200}`, true, accessRecord{status: 200}},
		{`{"bytes":5}`, false, accessRecord{}},
		{`{"status":"x"}`, false, accessRecord{}},
		{`{"status":200`, false, accessRecord{}},
		{`{"time":"x","status":200,"bytes":1,"rt":0.5,"uri":"/cut off`, true, accessRecord{status: 200, bytes: 1, rtMS: 500}},
		{`127.0.0.1 - - [06/Dec/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 5`, false, accessRecord{}},
		{``, false, accessRecord{}},
	} {
		rec, ok := parseAccess([]byte(tc.line))
		if ok != tc.ok || (ok && rec != tc.want) {
			t.Errorf("parseAccess(%s) = %+v %v, want %+v %v", tc.line, rec, ok, tc.want, tc.ok)
		}
	}
	if got := time.Unix(parseISOTime([]byte("2026-12-06T12:00:00+00:00")), 0).UTC(); !got.Equal(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("parseISOTime: %v", got)
	}
	line := []byte(accessLine(at, 200, 1, "0.001"))
	if n := testing.AllocsPerRun(100, func() { parseAccess(line) }); n != 0 {
		t.Errorf("parseAccess allocates %v times a line", n)
	}
}

// FuzzParseAccess holds the scanner to encoding/json: whatever it accepts
// that is valid JSON must have the same status, and it never panics.
func FuzzParseAccess(f *testing.F) {
	at := time.Date(2026, 12, 6, 13, 4, 5, 0, time.UTC)
	f.Add(accessLine(at, 200, 10, "0.010"))
	f.Add(`{"status":200,"uri":"\\\""}`)
	f.Add(`{"status":`)
	f.Add(`{"time":"2026-02-30T25:00:00+99:00","status":999}`)
	f.Fuzz(func(t *testing.T, line string) {
		rec, ok := parseAccess([]byte(line))
		if !ok {
			return
		}
		if strings.Contains(line, "\\") {
			return // escaped keys: encoding/json decodes them, nginx never writes them
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		var v map[string]any
		if d.Decode(&v) != nil || d.More() {
			return
		}
		// The scanner stops at the first of each field (nginx writes each
		// once); encoding/json keeps the last of duplicates.
		if strings.Count(line, `"status"`)+strings.Count(line, `"bytes"`)+strings.Count(line, `"rt"`)+strings.Count(line, `"time"`) > 4 {
			return
		}
		if n, isNum := v["status"].(json.Number); isNum && n.String() != fmt.Sprint(rec.status) {
			t.Errorf("status %d, encoding/json says %s", rec.status, n)
		}
	})
}

func entries(src *logtail.Source, at time.Time, lines ...string) []logtail.Entry {
	out := make([]logtail.Entry, len(lines))
	for i, l := range lines {
		out[i] = logtail.Entry{Source: src, Time: at, Line: []byte(l)}
	}
	return out
}

func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestTrafficCounters(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 10, 0, time.UTC)
	tr := NewTraffic()
	tr.now = func() time.Time { return now }
	alice := &logtail.Source{Service: "nginx", Account: "alice", Domain: "example.com", Kind: "access"}
	aliceErr := &logtail.Source{Service: "nginx", Account: "alice", Domain: "example.com", Kind: "error"}
	bob := &logtail.Source{Service: "nginx", Account: "bob", Domain: "example.org", Kind: "access"}
	var lines []string
	for i := range 100 { // 1..100 ms: p50 ~50 ms, p95 ~95 ms
		lines = append(lines, accessLine(now, 200, 100, fmt.Sprintf("0.%03d", i+1)))
	}
	lines = append(lines, accessLine(now, 503, 7, "1.000"), "not json")
	tr.Consume(entries(alice, now, lines...))
	tr.Consume(entries(aliceErr, now, accessLine(now, 500, 1, "0.1")))
	tr.Consume(entries(bob, now, accessLine(now, 301, 0, "0.002")))

	got := series(t, tr)
	for k, v := range map[string]float64{
		`npanel_domain_requests_total{alice,example.com,2xx}`:   100,
		`npanel_domain_requests_total{alice,example.com,5xx}`:   1,
		`npanel_domain_requests_total{bob,example.org,3xx}`:     1,
		`npanel_domain_response_bytes_total{alice,example.com}`: 10007,
		`npanel_domain_response_bytes_total{bob,example.org}`:   0,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (%v), want %v", k, g, ok, v)
		}
	}
	if len(got) != 5+2 {
		t.Errorf("series: %v", got)
	}
	mfs := gather(t, tr)
	var s *dto.Summary
	for _, m := range mfs["npanel_domain_request_duration_seconds"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "alice" {
			s = m.GetSummary()
		}
	}
	if s.GetSampleCount() != 101 || math.Abs(s.GetSampleSum()-(5.050+1)) > 1e-9 {
		t.Errorf("count %d sum %v", s.GetSampleCount(), s.GetSampleSum())
	}
	q := map[float64]float64{}
	for _, x := range s.GetQuantile() {
		q[x.GetQuantile()] = x.GetValue()
	}
	if math.Abs(q[0.5]-0.050) > 0.007 || math.Abs(q[0.95]-0.095) > 0.012 {
		t.Errorf("quantiles %v, want ~0.050 and ~0.095", q)
	}

	// The window moves on: after 2.5 min the old times still count, after
	// 5 min none does (NaN), while the counters stay.
	now = now.Add(150 * time.Second)
	tr.Consume(entries(alice, now, accessLine(now, 200, 0, "2.000")))
	if q := quantilesOf(t, tr, "alice"); math.Abs(q[0.5]-0.051) > 0.007 {
		t.Errorf("after 2.5 min p50 %v, want ~0.051", q[0.5])
	}
	now = now.Add(300 * time.Second)
	if q := quantilesOf(t, tr, "alice"); !math.IsNaN(q[0.5]) {
		t.Errorf("after 7.5 min p50 %v, want NaN", q[0.5])
	}

	// Idle for a day with its log gone: forgotten; bob's log is there.
	now = now.Add(25 * time.Hour)
	tr.ForgetIdle(func(account, _ string) bool { return account == "alice" })
	if got := series(t, tr); len(got) != 3 {
		t.Errorf("after alice's idle domain went: %v", got)
	}
	tr.ForgetAccount("alice")
	if got := series(t, tr); len(got) != 3 {
		t.Errorf("after forgetting alice: %v, want bob's 3 series", got)
	}
	tr.retain("bob", nil)
	if got := series(t, tr); len(got) != 0 {
		t.Errorf("after bob's sites went: %v", got)
	}
}

// series maps "name{label values}" to the counter value (summaries: the
// count) of every series tr exports.
func series(t *testing.T, tr *Traffic) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range gather(t, tr) {
		for _, m := range mf.GetMetric() {
			var lv []string
			for _, l := range m.GetLabel() {
				lv = append(lv, l.GetValue())
			}
			// Labels come sorted by name: account, code, domain.
			if len(lv) == 3 {
				lv[1], lv[2] = lv[2], lv[1]
			}
			v := m.GetCounter().GetValue()
			if m.GetSummary() != nil {
				v = float64(m.GetSummary().GetSampleCount())
			}
			out[name+"{"+strings.Join(lv, ",")+"}"] = v
		}
	}
	return out
}

func quantilesOf(t *testing.T, tr *Traffic, account string) map[float64]float64 {
	q := map[float64]float64{}
	for _, m := range gather(t, tr)["npanel_domain_request_duration_seconds"].GetMetric() {
		if m.GetLabel()[0].GetValue() == account {
			for _, x := range m.GetSummary().GetQuantile() {
				q[x.GetQuantile()] = x.GetValue()
			}
		}
	}
	return q
}

func TestHistBuckets(t *testing.T) {
	prev := -1
	for ms := uint64(0); ms < 1<<23; ms = ms*9/8 + 1 {
		i := histIndex(ms)
		if i < prev || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d after %d", ms, i, prev)
		}
		prev = i
		if v := histValue(i) * 1000; i < histBuckets-1 && ms > 0 && math.Abs(v-float64(ms))/float64(ms) > 0.13 {
			t.Errorf("bucket of %d ms reads %v ms", ms, v)
		}
	}
}

func TestTrafficStore(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 6, 23, 30, 0, 0, time.UTC)
	// Files of old days: the one 35 days back goes, 34 days back stays.
	for _, d := range []int{35, 34} {
		name := now.AddDate(0, 0, -d).Format(time.DateOnly) + ".json"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(`{"account":"bob","domain":"example.com","hours":[[3,9,10,0,1,0,0,0,5]]}`+"\n"+`{"account":"alice","domain":"example.com","hours":[[3,1,10,0,1,0,0,0,5]]}`+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bad := t.TempDir()
	// The write loops end, and write, before the temp dirs are removed
	// (cleanups run last registered first).
	ctx, cancel := context.WithCancel(context.Background())
	var opened []*Traffic
	t.Cleanup(func() {
		cancel()
		for _, tr := range opened {
			tr.Wait()
		}
	})
	tr := NewTraffic()
	opened = append(opened, tr)
	tr.now = func() time.Time { return now }
	if err := tr.Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	alice := &logtail.Source{Account: "alice", Domain: "example.com", Kind: "access"}
	tr.Consume(entries(alice, now,
		accessLine(now, 200, 100, "0.100"),
		accessLine(now.Add(-time.Hour), 404, 10, "0.010"),
		accessLine(now.Add(-time.Hour), 200, 10, "0.010"),
	))
	// Another account's line for the same domain name.
	tr.Consume(entries(&logtail.Source{Account: "mallory", Domain: "example.com", Kind: "access"}, now, accessLine(now, 200, 1<<20, "0.1")))
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, now.AddDate(0, 0, -35).Format(time.DateOnly)+".json")); !os.IsNotExist(err) {
		t.Errorf("35 days old file kept: %v", err)
	}

	// A damaged file of today is put aside at the next write.
	os.WriteFile(filepath.Join(bad, now.Format(time.DateOnly)+".json"), []byte("{not json\n"), 0o600)
	tb := NewTraffic()
	opened = append(opened, tb)
	tb.now = func() time.Time { return now }
	if err := tb.Open(ctx, bad); err != nil {
		t.Errorf("open with a damaged file: %v", err)
	}
	tb.Consume(entries(alice, now, accessLine(now, 200, 1, "0.001")))
	if err := tb.Flush(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(bad, now.Format(time.DateOnly)+".json.damaged")); err != nil {
		t.Errorf("damaged file not kept aside: %v", err)
	}
	if res, err := tb.Read("alice", []string{"example.com"}, now.Add(-time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_HOUR); err != nil || len(res[0].Buckets) != 1 || res[0].Buckets[0].Requests != 1 {
		t.Errorf("after a damaged file: %v %v", res, err)
	}

	// A restarted agent reads today back and goes on counting.
	tr2 := NewTraffic()
	opened = append(opened, tr2)
	tr2.now = func() time.Time { return now }
	if err := tr2.Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	tr2.Consume(entries(alice, now, accessLine(now, 500, 1, "1.000")))
	res, err := tr2.Read("alice", []string{"example.com", "example.net"}, now.Add(-2*time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_HOUR)
	if err != nil {
		t.Fatal(err)
	}
	h22 := time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC).Unix()
	want := []*agentpb.TrafficBucket{
		{StartUnix: h22, Requests: 2, Bytes: 20, Status_2Xx: 1, Status_4Xx: 1, RequestSecondsSum: 0.02},
		{StartUnix: h22 + 3600, Requests: 2, Bytes: 101, Status_2Xx: 1, Status_5Xx: 1, RequestSecondsSum: 1.1},
	}
	if len(res) != 2 || res[0].Domain != "example.com" || len(res[1].Buckets) != 0 || fmt.Sprint(res[0].Buckets) != fmt.Sprint(want) {
		t.Fatalf("hourly: %v\nwant %v", res, want)
	}
	// Daily from 40 days back: the 34 days old file and today.
	res, err = tr2.Read("alice", []string{"example.com"}, now.AddDate(0, 0, -40), agentpb.TrafficStep_TRAFFIC_STEP_DAY)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	if b := res[0].Buckets; len(b) != 2 || b[0].StartUnix != day.AddDate(0, 0, -34).Unix() || b[0].Requests != 1 || b[1].StartUnix != day.Unix() || b[1].Requests != 4 {
		t.Fatalf("daily: %v", b)
	}
	// Past midnight: yesterday is written and leaves memory, read from
	// its file.
	now = now.Add(time.Hour)
	tr2.Consume(entries(alice, now, accessLine(now, 200, 1, "0.001")))
	if err := tr2.Flush(); err != nil {
		t.Fatal(err)
	}
	res, _ = tr2.Read("alice", []string{"example.com"}, now.Add(-3*time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_HOUR)
	if b := res[0].Buckets; len(b) != 3 || b[1].Requests != 2 || b[2].Requests != 1 {
		t.Fatalf("after midnight: %v", b)
	}

	// A deleted account's history goes with it, from every day's file and
	// from what was not written yet: a new account of the same name starts
	// at nothing. Other accounts keep theirs.
	tr2.Consume(entries(alice, now, accessLine(now, 200, 1, "0.001")))
	if err := tr2.ForgetAccount("alice"); err != nil {
		t.Fatal(err)
	}
	if err := tr2.Flush(); err != nil {
		t.Fatal(err)
	}
	// The tail engine may still read the end of the deleted logs.
	tr2.Consume(entries(alice, now, accessLine(now, 200, 1, "0.001")))
	if err := tr2.Flush(); err != nil {
		t.Fatal(err)
	}
	res, _ = tr2.Read("alice", []string{"example.com"}, now.AddDate(0, 0, -40), agentpb.TrafficStep_TRAFFIC_STEP_DAY)
	if b := res[0].Buckets; len(b) != 0 {
		t.Errorf("a deleted account's traffic still read: %v", b)
	}
	// An account of the same name made later counts from nothing.
	tr2.retain("alice", []*agentpb.Site{{Domain: "example.com"}})
	tr2.Consume(entries(alice, now, accessLine(now, 200, 1, "0.001")))
	res, _ = tr2.Read("alice", []string{"example.com"}, now.AddDate(0, 0, -40), agentpb.TrafficStep_TRAFFIC_STEP_DAY)
	if b := res[0].Buckets; len(b) != 1 || b[0].Requests != 1 {
		t.Errorf("the new account's traffic: %v", b)
	}
	res, _ = tr2.Read("mallory", []string{"example.com"}, now.AddDate(0, 0, -40), agentpb.TrafficStep_TRAFFIC_STEP_DAY)
	if b := res[0].Buckets; len(b) != 1 || b[0].Requests != 1 {
		t.Errorf("another account's traffic after the deletion: %v", b)
	}
}

func TestReadTrafficValidate(t *testing.T) {
	m := NewModule()
	ok := &agentpb.ReadTrafficAction{Username: "alice", Domains: []string{"example.com"}, Step: agentpb.TrafficStep_TRAFFIC_STEP_DAY}
	if err := m.NewReadTraffic(ok).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*agentpb.ReadTrafficAction{
		{Username: "../x", Domains: []string{"example.com"}, Step: 1},
		{Username: "alice", Domains: []string{"../example.com"}, Step: 1},
		{Username: "alice", Domains: []string{"Example.com"}, Step: 1},
		{Username: "alice", Step: 1},
		{Username: "alice", Domains: []string{"example.com"}},
	} {
		if m.NewReadTraffic(bad).Validate() == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
