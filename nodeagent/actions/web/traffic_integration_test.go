package web_test

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/observe"
	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

type withLogFiles struct {
	services.Manager
	files map[string][]string
}

func (w withLogFiles) Status() []services.Status {
	st := w.Manager.Status()
	for i := range st {
		st[i].LogFiles = w.files[st[i].Name]
	}
	return st
}

// A real nginx writes npanel_json lines for a site's requests; fed to the
// traffic counters (as the tail engine does) they count per status class,
// read_traffic returns them for the account only, and read_domain_log and
// read_service_log find lines by grep and since.
func TestTrafficFromNginx(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	const domain = "npt-traffic.example.com"
	writeAs(t, a, "public_html/index.html", "hello")
	res := s.ensure(t, a, spec(site(domain, "public_html", "")), false)
	log := res.Sites[0].AccessLog
	start := time.Now()
	for range 5 {
		s.get(t, domain, "/")
	}
	for range 2 {
		s.get(t, domain, "/missing")
	}
	var data []byte
	testenv.WaitFor(t, 5*time.Second, "7 requests logged", func() bool {
		data, _ = os.ReadFile(log)
		return bytes.Count(data, []byte("\n")) >= 7
	})
	tr := s.web.Traffic()
	if err := tr.Open(testenv.Context(t), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	src := &logtail.Source{Path: log, Service: "nginx", Account: a.Username, Domain: domain, Kind: "access"}
	var batch []logtail.Entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		batch = append(batch, logtail.Entry{Source: src, Time: time.Now(), Line: bytes.Clone(sc.Bytes())})
	}
	tr.Consume(batch)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tr)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					key += "/" + l.GetValue()
				}
			}
			got[key] = m.GetCounter().GetValue() + float64(m.GetSummary().GetSampleCount())
		}
	}
	if got["npanel_domain_requests_total/2xx"] != 5 || got["npanel_domain_requests_total/4xx"] != 2 || got["npanel_domain_request_duration_seconds"] != 7 || got["npanel_domain_response_bytes_total"] < 5*5 {
		t.Errorf("counters: %v\nlog:\n%s", got, data)
	}

	rt, err := s.web.NewReadTraffic(&agentpb.ReadTrafficAction{Username: a.Username, Domains: []string{domain}, Step: agentpb.TrafficStep_TRAFFIC_STEP_DAY,
		SinceUnixNano: start.Add(-time.Hour).UnixNano()}).Apply(testenv.Context(t), s.env)
	if err != nil {
		t.Fatal(err)
	}
	if b := rt.(*agentpb.TrafficResult).GetDomains()[0].GetBuckets(); len(b) != 1 || b[0].Requests != 7 || b[0].Status_4Xx != 2 {
		t.Errorf("read_traffic: %v", b)
	}
	b := s.newUser(t)
	other, err := s.web.NewReadTraffic(&agentpb.ReadTrafficAction{Username: b.Username, Domains: []string{domain}, Step: agentpb.TrafficStep_TRAFFIC_STEP_DAY}).Apply(testenv.Context(t), s.env)
	if err != nil {
		t.Fatal(err)
	}
	if got := other.(*agentpb.TrafficResult).GetDomains()[0].GetBuckets(); len(got) != 0 {
		t.Errorf("another account reads the domain's traffic: %v", got)
	}

	dl, err := s.web.NewReadDomainLog(&agentpb.ReadDomainLogAction{Username: a.Username, Domain: domain, Kind: agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS,
		Lines: 100, Grep: `"status":404`, SinceUnixNano: start.Add(-time.Minute).UnixNano()}).Apply(testenv.Context(t), s.env)
	if err != nil {
		t.Fatal(err)
	}
	if l := dl.(*agentpb.DomainLogResult).GetLines(); len(l) != 2 || !strings.Contains(l[0], `"uri":"/missing"`) {
		t.Errorf("read_domain_log grep: %q", l)
	}
	dl, _ = s.web.NewReadDomainLog(&agentpb.ReadDomainLogAction{Username: a.Username, Domain: domain, Kind: agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS,
		Lines: 100, SinceUnixNano: time.Now().Add(time.Minute).UnixNano()}).Apply(testenv.Context(t), s.env)
	if l := dl.(*agentpb.DomainLogResult).GetLines(); len(l) != 0 {
		t.Errorf("read_domain_log since the future: %q", l)
	}

	// nginx's own error log, through the manager's status (webd's test
	// manager does not report log files: the supervisor's would).
	env := *s.env
	env.Services = withLogFiles{s.env.Services, map[string][]string{"nginx": {s.env.Profile.Web().NginxLogDir + "/error.log"}}}
	sl, err := observe.NewReadServiceLog(&agentpb.ReadServiceLogAction{Service: "nginx", Lines: 10}).Apply(testenv.Context(t), &env)
	if err != nil {
		t.Fatal(err)
	}
	if l := sl.(*agentpb.ServiceLogResult).GetLines(); len(l) == 0 || !strings.Contains(strings.Join(l, "\n"), "[notice]") {
		t.Errorf("nginx service log: %q", l)
	}
}
