package charm

import (
	"bytes"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/ulikunitz/xz"
	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/metrics"
)

var testTopology = topology{Model: "ci", ModelUUID: "4f9d1c2e-8a7b-4c6d-9e0f-123456789abc", App: "github-runner", Unit: "github-runner/3"}

// agentConfig is what the agent's pydantic model requires of `config`: the
// five fields, of these types, none null.
type agentConfig struct {
	MetricsAlertRules map[string]any   `json:"metrics_alert_rules"`
	LogAlertRules     map[string]any   `json:"log_alert_rules"`
	Dashboards        []string         `json:"dashboards"`
	MetricsScrapeJobs []map[string]any `json:"metrics_scrape_jobs"`
	LogSlots          []string         `json:"log_slots"`
}

// decodeAgentConfig checks data as the agent does and returns it decoded.
func decodeAgentConfig(t *testing.T, data string) (agentConfig, map[string]json.RawMessage) {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		t.Fatalf("config is not a JSON object: %v\n%s", err, data)
	}
	for _, key := range []string{"metrics_alert_rules", "log_alert_rules", "dashboards", "metrics_scrape_jobs", "log_slots"} {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			t.Errorf("config lacks the required %s (the agent goes Blocked): %s", key, v)
		}
	}
	var c agentConfig
	dec := json.NewDecoder(strings.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("config's fields have the wrong types: %v", err)
	}
	return c, raw
}

// shippedDashboards are the dashboard files in the charm's source, by name.
func shippedDashboards(t *testing.T) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no dashboard in %s: %v", dashboardsDir, err)
	}
	files := map[string][]byte{}
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.ToSlash(name)] = data
	}
	return files
}

func decodeDashboard(t *testing.T, s string) []byte {
	t.Helper()
	if !strings.HasPrefix(s, "/Td6WFoAAAT") {
		t.Errorf("dashboard does not start as base64 of an xz stream: %.20s", s)
	}
	compressed, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		t.Fatalf("dashboard is not standard base64: %v", err)
	}
	r, err := xz.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatalf("dashboard is not xz: %v", err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("dashboard is not xz: %v", err)
	}
	return data
}

func TestCOSAgentConfig(t *testing.T) {
	tests := []struct {
		name string
		port int
		jobs []map[string]any
	}{{
		name: "with the metrics port",
		port: 9464,
		jobs: []map[string]any{{
			"job_name": "github-runner_manager_3", "metrics_path": "/metrics", "scheme": "http",
			"static_configs": []any{map[string]any{"targets": []any{"localhost:9464"}}},
		}},
	}, {
		name: "before the manager has a port",
		port: 0,
		jobs: []map[string]any{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := cosAgentConfig(testTopology, tt.port)
			if err != nil {
				t.Fatal(err)
			}
			c, raw := decodeAgentConfig(t, data)
			if got := string(raw["log_slots"]); got != "[]" {
				t.Errorf("log_slots = %s, want []", got)
			}
			if got := string(raw["log_alert_rules"]); got != "{}" {
				t.Errorf("log_alert_rules = %s, want {}", got)
			}
			if !jsonEqual(c.MetricsScrapeJobs, tt.jobs) {
				t.Errorf("metrics_scrape_jobs = %s, want %v", raw["metrics_scrape_jobs"], tt.jobs)
			}
			checkPublishedRules(t, c.MetricsAlertRules)
			checkPublishedDashboards(t, c.Dashboards)
		})
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// checkPublishedRules: the shipped rules, each group named with cosl's
// prefix (which the agent recognises and keeps) and each rule carrying the
// four topology labels, its own labels kept.
func checkPublishedRules(t *testing.T, published map[string]any) {
	t.Helper()
	var got ruleFile
	if b, _ := json.Marshal(published); json.Unmarshal(b, &got) != nil {
		t.Fatalf("metrics_alert_rules is not a rule file: %v", published)
	}
	shipped := shippedRules(t)
	if len(got.Groups) != len(shipped.Groups) || len(got.Groups) == 0 {
		t.Fatalf("published %d rule groups, the charm ships %d", len(got.Groups), len(shipped.Groups))
	}
	prefixed := regexp.MustCompile(`^.*?_[0-9a-f]{8}_.*?rules$`) // the agent's test for a named group
	for i, g := range got.Groups {
		want := "ci_4f9d1c2e_github_runner_" + shipped.Groups[i].Name + "_rules"
		if g.Name != want || !prefixed.MatchString(g.Name) {
			t.Errorf("group %d is named %q, want %q", i, g.Name, want)
		}
		if len(g.Rules) != len(shipped.Groups[i].Rules) {
			t.Fatalf("group %s has %d rules, the charm ships %d", g.Name, len(g.Rules), len(shipped.Groups[i].Rules))
		}
		for j, r := range g.Rules {
			s := shipped.Groups[i].Rules[j]
			wantLabels := maps.Clone(s.Labels)
			maps.Copy(wantLabels, map[string]string{
				"juju_model": "ci", "juju_model_uuid": testTopology.ModelUUID,
				"juju_application": "github-runner", "juju_charm": "github-runner",
			})
			if !maps.Equal(r.Labels, wantLabels) {
				t.Errorf("rule %s has labels %v, want %v", r.Alert, r.Labels, wantLabels)
			}
			if _, ok := r.Labels["juju_unit"]; ok {
				t.Errorf("rule %s carries juju_unit: the agent sends one rule set per application", r.Alert)
			}
			r.Labels, s.Labels = nil, nil
			if !jsonEqual(r, s) {
				t.Errorf("published rule %+v differs from the shipped %+v", r, s)
			}
		}
	}
}

// shippedRules reads the rule files independently of the charm's reader.
func shippedRules(t *testing.T) ruleFile {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(rulesDir, "*.rules"))
	if len(names) == 0 {
		t.Fatalf("no rule file in %s", rulesDir)
	}
	sort.Strings(names)
	var all ruleFile
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var f ruleFile
		if err := yaml.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		all.Groups = append(all.Groups, f.Groups...)
	}
	return all
}

// checkPublishedDashboards: each shipped file, decoded byte for byte, with
// a Path40 uid, the charm's tag and the Prometheus datasource variable its
// panels use.
func checkPublishedDashboards(t *testing.T, published []string) {
	t.Helper()
	shipped := shippedDashboards(t)
	if len(published) != len(shipped) {
		t.Fatalf("published %d dashboards, the charm ships %d", len(published), len(shipped))
	}
	names := slices.Sorted(maps.Keys(shipped))
	for i, name := range names {
		data := decodeDashboard(t, published[i])
		if !bytes.Equal(data, shipped[name]) {
			t.Errorf("dashboard %d decoded is not the shipped %s", i, name)
		}
		var d struct {
			Title, UID string
			Tags       []string
			Templating struct {
				List []struct{ Name, Type, Query string }
			}
			Panels []dashboardPanel
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// The uid the Python provider would give the file: SHAKE-256 of
		// "<charm>-<path in the charm>", 20 bytes.
		wantUID := hex.EncodeToString(sha3.SumSHAKE256([]byte(charmName+"-"+name), 20))
		if d.Title == "" || d.UID != wantUID {
			t.Errorf("%s: title %q, uid %q, want a title and uid %s", name, d.Title, d.UID, wantUID)
		}
		if !slices.Contains(d.Tags, "charm: "+charmName) {
			t.Errorf("%s: tags %v lack %q", name, d.Tags, "charm: "+charmName)
		}
		if !slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query string }) bool {
			return v.Name == "prometheusds" && v.Type == "datasource" && v.Query == "prometheus"
		}) {
			t.Errorf("%s: no prometheusds datasource variable: %+v", name, d.Templating.List)
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${prometheusds}" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: datasource %+v, %d queries", name, p.Title, p.Datasource, len(p.Targets))
			}
			for _, q := range p.Targets {
				if q.Datasource.UID != "${prometheusds}" {
					t.Errorf("%s: panel %q: query %s on datasource %+v", name, p.Title, q.RefID, q.Datasource)
				}
			}
		}
	}
}

type dashboardPanel struct {
	Type, Title string
	Datasource  struct{ Type, UID string }
	Targets     []struct {
		RefID      string
		Expr       string
		Datasource struct{ Type, UID string }
	}
}

func TestCharmNameIsTheMetadataName(t *testing.T) {
	data, err := os.ReadFile("../metadata.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Name string }
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != charmName {
		t.Errorf("metadata.yaml names the charm %q, the COS data %q", m.Name, charmName)
	}
}

// cosQuery is one PromQL expression the charm ships, and where.
type cosQuery struct{ where, expr string }

// shippedQueries are every dashboard query and every rule expression.
func shippedQueries(t *testing.T) []cosQuery {
	t.Helper()
	var queries []cosQuery
	for name, data := range shippedDashboards(t) {
		var d struct{ Panels []dashboardPanel }
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		for _, p := range d.Panels {
			for _, q := range p.Targets {
				queries = append(queries, cosQuery{name + ": " + p.Title + " " + q.RefID, q.Expr})
			}
		}
	}
	for _, g := range shippedRules(t).Groups {
		for _, r := range g.Rules {
			queries = append(queries, cosQuery{g.Name + ": " + r.Alert + r.Record, r.Expr})
		}
	}
	return queries
}

// exportedSeries are the series names the manager exports (a histogram's
// _bucket, _sum and _count) with each one's label values, from the
// manager's own registry; labelled counters are there from the start.
func exportedSeries(t *testing.T) map[string]map[string][]string {
	t.Helper()
	families, err := metrics.New("github-runner", nil).Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string][]string{}
	add := func(name string, ls []*dto.LabelPair, extra ...string) {
		if series[name] == nil {
			series[name] = map[string][]string{}
		}
		for _, l := range ls {
			series[name][l.GetName()] = append(series[name][l.GetName()], l.GetValue())
		}
		for _, l := range extra {
			series[name][l] = append(series[name][l], "")
		}
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(f.GetName()+"_bucket", m.GetLabel(), "le")
				add(f.GetName()+"_sum", m.GetLabel())
				add(f.GetName()+"_count", m.GetLabel())
			case dto.MetricType_SUMMARY:
				add(f.GetName(), m.GetLabel(), "quantile")
				add(f.GetName()+"_sum", m.GetLabel())
				add(f.GetName()+"_count", m.GetLabel())
			default:
				add(f.GetName(), m.GetLabel())
			}
		}
	}
	// Prometheus's own series about the scrape, and the alerts.
	series["up"] = map[string][]string{}
	series["ALERTS"] = map[string][]string{"alertname": nil, "alertstate": nil, "severity": nil}
	return series
}

// agentLabels are those the scrape and the agent add to every series.
var agentLabels = []string{"job", "instance", "juju_model", "juju_model_uuid", "juju_application", "juju_unit"}

// TestShippedPromQLParsesAndRefersToExportedMetrics parses every dashboard
// query and rule expression with Prometheus's parser, then checks every
// selector against the manager's registry: the metric exists, each label it
// matches exists on it and each value it asks for is one the manager
// exports, and each label a by() groups on is on one of its metrics.
func TestShippedPromQLParsesAndRefersToExportedMetrics(t *testing.T) {
	series := exportedSeries(t)
	queries := shippedQueries(t)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found", len(queries))
	}
	p := parser.NewParser(parser.Options{})
	for _, q := range queries {
		expr, err := p.ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
			continue
		}
		for _, problem := range promQLProblems(expr, series) {
			t.Errorf("%s: %q: %s", q.where, q.expr, problem)
		}
	}
}

// promQLProblems lists what in expr refers to anything the manager does
// not export.
func promQLProblems(expr parser.Expr, series map[string]map[string][]string) []string {
	var problems []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			problems = append(problems, selectorProblems(n, series)...)
		case *parser.AggregateExpr:
			if n.Without {
				break
			}
			have := map[string]bool{}
			for _, name := range selectorNames(n.Expr) {
				for l := range series[name] {
					have[l] = true
				}
			}
			for _, l := range n.Grouping {
				if !have[l] && !slices.Contains(agentLabels, l) {
					problems = append(problems, "groups by "+l+", a label none of its metrics has")
				}
			}
		}
		return nil
	})
	return problems
}

func selectorNames(expr parser.Node) []string {
	var names []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		if v, ok := node.(*parser.VectorSelector); ok {
			names = append(names, v.Name)
		}
		return nil
	})
	return names
}

func selectorProblems(v *parser.VectorSelector, series map[string]map[string][]string) []string {
	ls, ok := series[v.Name]
	if v.Name == "" || !ok {
		return []string{"selects " + v.String() + ", which the manager does not export"}
	}
	var problems []string
	for _, m := range v.LabelMatchers {
		if m.Name == labels.MetricName || slices.Contains(agentLabels, m.Name) {
			continue
		}
		values, ok := ls[m.Name]
		if !ok {
			problems = append(problems, v.Name+" has no label "+m.Name)
			continue
		}
		// Each value an = or a =~ alternation asks for is one exported.
		var wanted []string
		switch m.Type {
		case labels.MatchEqual, labels.MatchNotEqual:
			wanted = []string{m.Value}
		case labels.MatchRegexp, labels.MatchNotRegexp:
			if regexp.MustCompile(`^[a-z_|-]+$`).MatchString(m.Value) {
				wanted = strings.Split(m.Value, "|")
			}
		}
		for _, w := range wanted {
			if !slices.Contains(values, w) {
				problems = append(problems, v.Name+"'s "+m.Name+" is never "+w+" (it is one of "+strings.Join(values, ", ")+")")
			}
		}
	}
	return problems
}

// TestPromQLCheckCatchesMistakes: the check above finds a misspelt metric, a
// label or value the manager does not have, and a grouping on nothing.
func TestPromQLCheckCatchesMistakes(t *testing.T) {
	series := exportedSeries(t)
	p := parser.NewParser(parser.Options{})
	for _, expr := range []string{
		`sum(github_runner_runnerz)`,
		`sum by (state) (github_runner_runners{states="idle"})`,
		`increase(deleted_runners_total{reason=~"offline|leaked"}[1h])`,
		`sum by (reason) (github_runner_runners)`,
		`rate(runner_spawn_duration_seconds[5m])`, // a histogram is only its _bucket, _sum, _count
	} {
		e, err := p.ParseExpr(expr)
		if err != nil {
			t.Fatal(err)
		}
		if problems := promQLProblems(e, series); len(problems) == 0 {
			t.Errorf("%s: no problem found", expr)
		}
	}
}

// promtool is Debian's (package prometheus); CI installs it, so there its
// absence fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	return path
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAlertRulesPromtool runs promtool check rules on the shipped rule files
// and on the rules as published (a JSON rule file), the latter also with the
// topology matchers the agent injects; and promtool test rules on the
// shipped tests, which must test every alert firing and staying quiet.
func TestAlertRulesPromtool(t *testing.T) {
	promtool(t)
	ruleFiles, _ := filepath.Glob(filepath.Join(rulesDir, "*.rules"))
	runPromtool(t, ".", append([]string{"check", "rules"}, ruleFiles...)...)

	data, err := cosAgentConfig(testTopology, 9464)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		MetricsAlertRules ruleFile `json:"metrics_alert_rules"`
	}
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	published, _ := json.Marshal(c.MetricsAlertRules)
	injected, _ := json.Marshal(injectTopology(t, c.MetricsAlertRules, testTopology))
	os.WriteFile(filepath.Join(dir, "published.json"), published, 0o644)
	os.WriteFile(filepath.Join(dir, "injected.json"), injected, 0o644)
	runPromtool(t, dir, "check", "rules", "published.json", "injected.json")

	tests, _ := filepath.Glob("cos/tests/*.yaml")
	if len(tests) == 0 {
		t.Fatal("no promtool test in cos/tests")
	}
	for i := range tests {
		tests[i] = strings.TrimPrefix(tests[i], "cos/")
	}
	runPromtool(t, "cos", append([]string{"test", "rules"}, tests...)...)
	checkEveryAlertTested(t, tests)
}

// injectTopology adds the juju_model, juju_model_uuid and juju_application
// matchers to every selector, as the agent's cos-tool does.
func injectTopology(t *testing.T, f ruleFile, top topology) ruleFile {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	out := ruleFile{}
	for _, g := range f.Groups {
		g.Rules = slices.Clone(g.Rules)
		for i, r := range g.Rules {
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				if v, ok := node.(*parser.VectorSelector); ok {
					for _, l := range []string{"juju_model", "juju_model_uuid", "juju_application"} {
						v.LabelMatchers = append(v.LabelMatchers, labels.MustNewMatcher(labels.MatchEqual, l, top.labels()[l]))
					}
				}
				return nil
			})
			g.Rules[i].Expr = expr.String()
		}
		out.Groups = append(out.Groups, g)
	}
	return out
}

// checkEveryAlertTested: each alert has a test where it fires and one where
// it is quiet.
func checkEveryAlertTested(t *testing.T, files []string) {
	t.Helper()
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join("cos", name))
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		if err := yaml.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		for _, test := range f.Tests {
			for _, a := range test.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, g := range shippedRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && (!fires[r.Alert] || !quiet[r.Alert]) {
				t.Errorf("alert %s: a test where it fires: %v, where it is quiet: %v", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
}

// Every unit of an application sends the same rules and dashboards (the
// agent takes one unit's set for the whole application); only the job
// differs.
func TestCOSAgentConfigIsTheSameForEveryUnitButTheJob(t *testing.T) {
	other := testTopology
	other.Unit = "github-runner/7"
	a, err := cosAgentConfig(testTopology, 9464)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cosAgentConfig(other, 9465)
	if err != nil {
		t.Fatal(err)
	}
	var ca, cb map[string]json.RawMessage
	json.Unmarshal([]byte(a), &ca)
	json.Unmarshal([]byte(b), &cb)
	for key := range ca {
		if same := bytes.Equal(ca[key], cb[key]); same == (key == "metrics_scrape_jobs") {
			t.Errorf("%s of two units: same %v", key, same)
		}
	}
}

// metricsPort reads the port back from the manager's config file; none
// before the charm wrote one.
func TestMetricsPortFromTheManagerConfig(t *testing.T) {
	dir := t.TempDir()
	c := &Charm{Supervisor: &Supervisor{StateDir: dir}}
	if port, err := c.metricsPort(); port != 0 || err != nil {
		t.Errorf("without a config file: port %d, error %v", port, err)
	}
	s, err := ParseSettings(with(map[string]any{"runner-type": "container"}))
	if err != nil {
		t.Fatal(err)
	}
	f, err := managerConfig(s, testModel, "github-runner/0", dir, Proxy{})
	if err != nil {
		t.Fatal(err)
	}
	f.MetricsPort = 9464
	if err := f.Write(c.Supervisor.ConfigPath()); err != nil {
		t.Fatal(err)
	}
	if port, err := c.metricsPort(); port != 9464 || err != nil {
		t.Errorf("port %d, error %v, want 9464", port, err)
	}
	if err := os.WriteFile(c.Supervisor.ConfigPath(), []byte("runners: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if port, err := c.metricsPort(); port != 0 || err == nil {
		t.Errorf("a broken config file: port %d, error %v", port, err)
	}
}
