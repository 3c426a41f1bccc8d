package observability

import (
	"bufio"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Paths relative to this package's directory.
const (
	grafanaDir    = "../grafana"
	prometheusDir = "../prometheus"
	metricsList   = "../prometheus/metrics.txt"
	runbooks      = "../../docs/runbooks.md"

	promtool = "/usr/bin/promtool"
	// tokenPath is where the example configurations read the scrape token.
	tokenPath = "/etc/prometheus/npanel-scrape-token"
	// rootPath is where they read the cluster root, to verify the agents.
	rootPath = "/etc/prometheus/npanel-root.crt"
)

var promql = parser.NewParser(parser.Options{})

// exportedNames reads metrics.txt: the families the code exports.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(metricsList)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			names[line] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("%s lists no metric", metricsList)
	}
	return names
}

// known reports whether a selector's metric name is exported. A histogram or
// summary is listed by its family name; its series add _bucket, _sum, _count.
// "up" is Prometheus's own, one per scrape target.
func known(names map[string]bool, name string) bool {
	if name == "up" || names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
			return true
		}
	}
	return false
}

// grafanaVar matches $name, ${name} and ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// substitute replaces Grafana's variables by values PromQL accepts where
// they stand: durations for the built-in interval and range variables, a
// plain word (it only ever stands in a label matcher's string) otherwise.
func substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__interval", "__rate_interval", "__range", "__range_s", "__range_ms":
			if name == "__range_s" || name == "__range_ms" {
				return "3600"
			}
			return "5m"
		}
		return "stand_in"
	})
}

// checkExpr parses expr and checks every selector names an exported metric.
func checkExpr(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	e, err := promql.ParseExpr(substitute(expr))
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return
	}
	selectors := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		selectors++
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
		}
		if !known(names, name) {
			t.Errorf("%s: %q selects %q, not in %s", where, expr, name, metricsList)
		}
		return nil
	})
	if selectors == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
}

// panel is the part of a Grafana panel the checks read; rows nest panels.
type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// datasourceRef is what every panel and target must point at: the
// dashboard's data source variable, so an import asks for one Prometheus.
const datasourceRef = `{"type":"prometheus","uid":"${datasource}"}`

func sameJSON(raw json.RawMessage, want string) bool {
	var a, b any
	if json.Unmarshal(raw, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// variableExpr returns the PromQL inside a variable's query:
// label_values(EXPR, label) or query_result(EXPR); "" when there is none.
func variableExpr(q string) string {
	q = strings.TrimSpace(q)
	for _, fn := range []string{"label_values(", "query_result("} {
		inner, ok := strings.CutPrefix(q, fn)
		if !ok {
			continue
		}
		inner = strings.TrimSuffix(inner, ")")
		if fn == "label_values(" {
			i := strings.LastIndex(inner, ",")
			if i < 0 {
				return "" // label_values(label): no metric
			}
			inner = inner[:i]
		}
		return inner
	}
	return q
}

func TestDashboards(t *testing.T) {
	names := exportedNames(t)
	files, err := filepath.Glob(filepath.Join(grafanaDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cluster-overview.json", "databases.json", "dns.json", "node.json", "traffic.json"}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("dashboard %s missing from %s", w, grafanaDir)
		}
	}
	uids := map[string]string{}
	for _, file := range files {
		base := filepath.Base(file)
		t.Run(base, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var d dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("not valid JSON: %v", err)
			}
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q also used by %s", d.UID, other)
			}
			uids[d.UID] = base
			if d.SchemaVersion < 39 {
				t.Errorf("schemaVersion %d, want >= 39", d.SchemaVersion)
			}

			hasDatasource := false
			for _, v := range d.Templating.List {
				where := "variable " + v.Name
				switch v.Type {
				case "datasource":
					var q string
					if json.Unmarshal(v.Query, &q) != nil || q != "prometheus" {
						t.Errorf("%s: query %s, want \"prometheus\"", where, v.Query)
					}
					hasDatasource = hasDatasource || v.Name == "datasource"
				case "query":
					// The query is a string in old dashboards, an object
					// with a query field in current ones.
					var q string
					if json.Unmarshal(v.Query, &q) != nil {
						var obj struct{ Query string }
						if err := json.Unmarshal(v.Query, &obj); err != nil {
							t.Errorf("%s: query %s: %v", where, v.Query, err)
						}
						q = obj.Query
					}
					if e := variableExpr(q); e != "" {
						checkExpr(t, where, e, names)
					}
				}
			}
			if !hasDatasource {
				t.Error(`no "datasource" variable of type datasource`)
			}

			ids := map[int]bool{}
			var walk func([]panel)
			walk = func(ps []panel) {
				for _, p := range ps {
					where := "panel " + p.Title
					if ids[p.ID] {
						t.Errorf("%s: id %d used twice", where, p.ID)
					}
					ids[p.ID] = true
					if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
						t.Errorf("%s: gridPos %+v outside the 24-column grid", where, p.GridPos)
					}
					walk(p.Panels)
					if p.Type == "row" {
						continue
					}
					if !sameJSON(p.Datasource, datasourceRef) {
						t.Errorf("%s: datasource %s, want %s", where, p.Datasource, datasourceRef)
					}
					if len(p.Targets) == 0 {
						t.Errorf("%s: no target", where)
					}
					for _, tg := range p.Targets {
						if len(tg.Datasource) > 0 && !sameJSON(tg.Datasource, datasourceRef) {
							t.Errorf("%s %s: datasource %s, want %s", where, tg.RefID, tg.Datasource, datasourceRef)
						}
						checkExpr(t, where+" "+tg.RefID, tg.Expr, names)
					}
				}
			}
			walk(d.Panels)
		})
	}
}

// anchors returns the GitHub anchors of the Markdown headings in path.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		text, ok := strings.CutPrefix(line, "#")
		if !ok {
			continue
		}
		text = strings.TrimSpace(strings.TrimLeft(text, "#"))
		var a strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				a.WriteByte('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				a.WriteRune(r)
			}
		}
		out[a.String()] = true
	}
	return out
}

func TestRules(t *testing.T) {
	names := exportedNames(t)
	groups, errs := rulefmt.ParseFile(filepath.Join(prometheusDir, "rules.yml"), false, model.LegacyValidation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("rules.yml: %v", errors.Join(errs...))
	}
	heads := anchors(t, runbooks)
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			where := "rule " + r.Alert + r.Record
			checkExpr(t, where, r.Expr, names)
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if u := r.Annotations["runbook_url"]; !strings.HasSuffix(u, "docs/runbooks.md#"+anchor) {
				t.Errorf("%s: runbook_url %q, want one ending in docs/runbooks.md#%s", where, u, anchor)
			}
			if !heads[anchor] {
				t.Errorf("%s: %s has no heading with anchor #%s", where, runbooks, anchor)
			}
		}
	}
	// The alerts the issue asks for; more may be added.
	for _, a := range []string{"NodeDown", "DaemonDown", "DaemonFlapping", "DiskAlmostFull", "InodesAlmostFull",
		"AccountOverQuota", "CertificateExpiringSoon", "CertificateRenewalFailing", "BackupMissed",
		"TaskQueueGrowing", "EtcdFsyncSlow", "LeaderChangesFrequent", "LogShippingDropping"} {
		if !alerts[a] {
			t.Errorf("rules.yml has no alert %s", a)
		}
	}
}

func TestAlertmanagerExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(prometheusDir, "alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Route struct {
			Receiver string `json:"receiver"`
		} `json:"route"`
		Receivers []struct {
			Name           string `json:"name"`
			WebhookConfigs []struct {
				URL        string `json:"url"`
				HTTPConfig struct {
					Authorization struct {
						Type            string `json:"type"`
						CredentialsFile string `json:"credentials_file"`
					} `json:"authorization"`
				} `json:"http_config"`
			} `json:"webhook_configs"`
		} `json:"receivers"`
	}
	// Only the parts checked here are modelled: unknown fields are fine.
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range cfg.Receivers {
		if r.Name != cfg.Route.Receiver {
			continue
		}
		for _, w := range r.WebhookConfigs {
			a := w.HTTPConfig.Authorization
			if strings.HasSuffix(w.URL, "/v1/alerts") && a.Type == "Bearer" && a.CredentialsFile == tokenPath {
				return
			}
		}
	}
	t.Errorf("alertmanager.yml: the route's receiver %q has no webhook to /v1/alerts with a Bearer token from %s", cfg.Route.Receiver, tokenPath)
}

// needPromtool skips without promtool, except in CI where it must be there
// (make deps installs Debian's prometheus package).
func needPromtool(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(promtool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (CI installs the prometheus package)", promtool, err)
		}
		t.Skipf("%s not installed (apt-get install prometheus): %v", promtool, err)
	}
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolRules(t *testing.T) {
	needPromtool(t)
	runPromtool(t, prometheusDir, "check", "rules", "rules.yml")
	runPromtool(t, prometheusDir, "test", "rules", "rules_test.yml")
}

// TestPromtoolConfig checks prometheus.yml as Prometheus would load it.
// promtool insists that credential files exist, so the check runs on a
// copy whose token path points at a temporary file.
func TestPromtoolConfig(t *testing.T) {
	needPromtool(t)
	b, err := os.ReadFile(filepath.Join(prometheusDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), tokenPath) {
		t.Fatalf("prometheus.yml does not read the scrape token from %s", tokenPath)
	}
	for _, want := range []string{"/v1/prometheus/sd", "rules.yml", "ca_file: " + rootPath} {
		if !strings.Contains(string(b), want) {
			t.Errorf("prometheus.yml does not mention %s", want)
		}
	}
	// The agents' certificates name their addresses: nothing needs to
	// skip verification.
	if strings.Contains(string(b), "insecure_skip_verify") {
		t.Error("prometheus.yml mentions insecure_skip_verify")
	}
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	// promtool checks that ca_file exists; a real certificate in it keeps
	// the copy loadable by Prometheus too.
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	srv.Close()
	rules, err := os.ReadFile(filepath.Join(prometheusDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"token":          []byte("nps_test\n"),
		"rules.yml":      rules,
		"root.crt":       certPEM(srv.Certificate()),
		"prometheus.yml": []byte(strings.NewReplacer(tokenPath, token, rootPath, filepath.Join(dir, "root.crt")).Replace(string(b))),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	runPromtool(t, dir, "check", "config", "prometheus.yml")
}
