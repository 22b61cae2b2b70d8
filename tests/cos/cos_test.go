// Package cos tests the cos-agent relation end to end: the packed charm under
// the Juju hook harness writes its relation data, and a real Prometheus
// (Debian's package) scrapes the real manager with the scrape job exactly as
// the charm wrote it, and loads the alert rules it sent.
package cos

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"github.com/ulikunitz/xz"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/stack"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

const token = "ghp_COS_RECOGNISABLE_TOKEN_0123456789ab"

// agentUnits is the grafana-agent subordinate on the unit's machine, the one
// remote unit a container-scoped cos-agent relation has.
var agentUnits = map[string]map[string]string{"grafana-agent/0": {}}

// agentConfig is the `config` value as the agent's pydantic model requires it.
type agentConfig struct {
	MetricsAlertRules map[string]any   `json:"metrics_alert_rules"`
	LogAlertRules     map[string]any   `json:"log_alert_rules"`
	Dashboards        []string         `json:"dashboards"`
	MetricsScrapeJobs []map[string]any `json:"metrics_scrape_jobs"`
	LogSlots          []string         `json:"log_slots"`
}

// readAgentConfig is the unit's `config` in relation id, checked as the
// agent checks it: the five fields present, not null, of their types.
func readAgentConfig(t *testing.T, u *harness.Unit, id int) agentConfig {
	t.Helper()
	bag := u.LocalUnitData(id)
	data, ok := bag["config"]
	if !ok {
		t.Fatalf("the unit wrote no config into cos-agent:%d: %v", id, bag)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		t.Fatalf("config is not a JSON object: %v", err)
	}
	for _, key := range []string{"metrics_alert_rules", "log_alert_rules", "dashboards", "metrics_scrape_jobs", "log_slots"} {
		if v, ok := raw[key]; !ok || string(v) == "null" {
			t.Errorf("config lacks %s", key)
		}
	}
	var c agentConfig
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		t.Fatalf("config's fields have the wrong types: %v", err)
	}
	if len(c.Dashboards) == 0 || len(c.MetricsAlertRules["groups"].([]any)) == 0 {
		t.Errorf("config has no dashboard or no alert rule: %d dashboards, rules %v", len(c.Dashboards), c.MetricsAlertRules)
	}
	return c
}

// managerPort is the metrics port in the unit's manager config file.
func managerPort(t *testing.T, b *stack.Bed) int {
	t.Helper()
	data, err := os.ReadFile(b.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if f.MetricsPort == 0 {
		t.Fatal("the manager's config file has no metrics-port")
	}
	return f.MetricsPort
}

func wantJob(t *testing.T, b *stack.Bed, port int) []map[string]any {
	return []map[string]any{{
		"job_name": b.Unit.Name[:strings.Index(b.Unit.Name, "/")] + "_manager_0", "metrics_path": "/metrics", "scheme": "http",
		"static_configs": []any{map[string]any{"targets": []any{fmt.Sprintf("localhost:%d", port)}}},
	}}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestRelationDataFollowsTheUnit: a Blocked unit related to the agent sends
// rules and dashboards but no scrape job (it has no manager yet); once
// configured, the scrape job of its manager's port; config-changed keeps it;
// departing and breaking the relation run cleanly.
func TestRelationDataFollowsTheUnit(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "cosdata", Token: token, Label: "cosdata", Runners: 0})
	b.Unit.SetConfig(map[string]any{"token": nil}) // Blocked: no token
	b.Unit.Deploy()
	if s := b.Unit.Status(); s.Status != "blocked" {
		t.Fatalf("status without a token = %+v", s)
	}

	id := b.Unit.Relate("cos-agent", "grafana-agent", nil, agentUnits)
	c := readAgentConfig(t, b.Unit, id)
	if len(c.MetricsScrapeJobs) != 0 {
		t.Errorf("a unit without a manager publishes scrape jobs %v", c.MetricsScrapeJobs)
	}
	shipped, err := os.ReadFile("../../charm/cos/dashboards/github-runner.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Dashboards) != 1 || !bytes.Equal(decodeDashboard(t, c.Dashboards[0]), shipped) {
		t.Error("the dashboard the packed charm sends, decoded, is not charm/cos/dashboards/github-runner.json")
	}

	if r := b.Unit.Configure(map[string]any{"token": token}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	if s := b.Unit.Status(); s.Status == "blocked" {
		t.Fatalf("status = %+v", s)
	}
	port := managerPort(t, b)
	c = readAgentConfig(t, b.Unit, id)
	if want := wantJob(t, b, port); !jsonEqual(c.MetricsScrapeJobs, want) {
		t.Errorf("metrics_scrape_jobs = %v, want %v", c.MetricsScrapeJobs, want)
	}
	before := b.Unit.LocalUnitData(id)["config"]
	if r := b.Unit.Hook("config-changed"); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	if after := b.Unit.LocalUnitData(id)["config"]; after != before {
		t.Errorf("config-changed with nothing changed rewrote the data:\n%s\n%s", before, after)
	}

	if r := b.Unit.DepartRemoteUnit(id, "grafana-agent/0"); r.Code != 0 {
		t.Errorf("cos-agent-relation-departed: %s", r.Stderr)
	}
	if r := b.Unit.Unrelate(id); r.Code != 0 {
		t.Errorf("cos-agent-relation-broken: %s", r.Stderr)
	}
	if s := b.Unit.Status(); s.Status == "blocked" {
		t.Errorf("status after the relation ended = %+v", s)
	}
}

// prometheus is a running Debian Prometheus.
type prometheus struct {
	url    string
	client *http.Client
}

// startPrometheus runs Debian's prometheus on a free localhost port with
// configYAML and the rule files in dir, until the test ends.
func startPrometheus(t *testing.T, dir string, configYAML []byte) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is not installed (apt-get install prometheus)")
		}
		t.Skip("prometheus is not installed (apt-get install prometheus)")
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, configYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", stack.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--config.file="+configPath, "--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("cannot start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	p := &prometheus{url: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	stack.WaitFor(t, 30*time.Second, "prometheus is ready", func() bool {
		resp, err := p.client.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// api GETs path from Prometheus's HTTP API and decodes its data.
func (p *prometheus) api(t *testing.T, path string, query url.Values, data any) {
	t.Helper()
	resp, err := p.client.Get(p.url + path + "?" + query.Encode())
	if err != nil {
		t.Fatalf("cannot query prometheus: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var envelope struct {
		Status string
		Data   json.RawMessage
		Error  string
	}
	if err := json.Unmarshal(body, &envelope); err != nil || envelope.Status != "success" {
		t.Fatalf("prometheus %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(envelope.Data, data); err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
}

type sample struct {
	Metric map[string]string
	Value  [2]any
}

func (p *prometheus) query(t *testing.T, q string) []sample {
	t.Helper()
	var data struct{ Result []sample }
	p.api(t, "/api/v1/query", url.Values{"query": {q}}, &data)
	return data.Result
}

// TestRealPrometheusScrapesTheManager deploys a unit with one runner, relates
// it to the agent, and gives a real Prometheus the scrape job from the
// relation data, with the labels the agent adds (the target is the one the
// charm wrote: Prometheus runs on the unit's machine, as the agent does) and
// the alert rules the charm sent. Prometheus must report the target up,
// every series the README documents and every metric the dashboards and
// rules use, the runner the manager keeps, and the rules loaded and quiet
// on this healthy unit.
func TestRealPrometheusScrapesTheManager(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "cos", Token: token, Label: "cos", Runners: 1})
	b.Unit.Deploy()
	b.Converge(1)

	id := b.Unit.Relate("cos-agent", "grafana-agent", nil, agentUnits)
	c := readAgentConfig(t, b.Unit, id)
	port := managerPort(t, b)
	if want := wantJob(t, b, port); !jsonEqual(c.MetricsScrapeJobs, want) {
		t.Fatalf("metrics_scrape_jobs = %v, want %v", c.MetricsScrapeJobs, want)
	}

	// What the agent does with each job: the principal's topology overlaid
	// on its static_configs' labels; a 1 s interval keeps the test short.
	app, _, _ := strings.Cut(b.Unit.Name, "/")
	topology := map[string]any{"juju_model": "ci", "juju_model_uuid": b.Unit.Model(), "juju_application": app, "juju_unit": b.Unit.Name}
	jobs := c.MetricsScrapeJobs
	for _, job := range jobs {
		for _, sc := range job["static_configs"].([]any) {
			sc.(map[string]any)["labels"] = topology
		}
	}
	dir := t.TempDir()
	rules, _ := json.Marshal(c.MetricsAlertRules)
	if err := os.WriteFile(filepath.Join(dir, "rules.json"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	promConfig, _ := json.Marshal(map[string]any{ // JSON is YAML
		"global":         map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files":     []string{filepath.Join(dir, "rules.json")},
		"scrape_configs": jobs,
	})
	p := startPrometheus(t, dir, promConfig)

	jobName := jobs[0]["job_name"].(string)
	stack.WaitFor(t, time.Minute, "prometheus reports the manager's target up", func() bool {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string
				Health    string
				LastError string
			}
		}
		p.api(t, "/api/v1/targets", url.Values{"state": {"active"}}, &data)
		for _, target := range data.ActiveTargets {
			if target.Labels["job"] == jobName && target.Health == "up" && target.Labels["juju_unit"] == b.Unit.Name {
				return true
			}
		}
		return false
	})
	if got := p.query(t, fmt.Sprintf(`up{job=%q, juju_application=%q}`, jobName, app)); len(got) != 1 || got[0].Value[1] != "1" {
		t.Fatalf("up = %v", got)
	}

	// A few scrapes, for rate() and increase() to have two samples.
	stack.WaitFor(t, 30*time.Second, "prometheus scrapes the manager three times", func() bool {
		got := p.query(t, fmt.Sprintf(`count_over_time(up{job=%q}[5m])`, jobName))
		return len(got) == 1 && got[0].Value[1] != "1" && got[0].Value[1] != "2"
	})

	names := map[string]bool{}
	for _, s := range p.query(t, fmt.Sprintf(`count by (__name__) ({job=%q})`, jobName)) {
		names[s.Metric["__name__"]] = true
	}
	documented, used := readmeMetrics(t), usedMetrics(t, c)
	t.Logf("prometheus has %d series names of the job; the README documents %d metrics, the dashboards and rules use %d",
		len(names), len(documented), len(used))
	for _, m := range documented {
		for _, series := range m.series() {
			if !present(names, series) {
				t.Errorf("the README's %s (%s) is not in Prometheus's scrape", series, m.kind)
			}
		}
	}
	for _, name := range used {
		if name != "ALERTS" && !names[name] {
			t.Errorf("the dashboards or rules use %s, which is not in Prometheus's scrape", name)
		}
	}
	// Every dashboard query runs on this Prometheus, and finds series.
	for _, q := range dashboardQueries(t, c) {
		var data struct{ Result []sample }
		p.api(t, "/api/v1/query", url.Values{"query": {q}}, &data)
		if len(data.Result) == 0 {
			t.Errorf("the dashboard's %q finds nothing", q)
		}
	}
	// The manager's state, through Prometheus.
	if got := p.query(t, `sum(github_runner_runners{state=~"idle|busy"})`); len(got) != 1 || got[0].Value[1] != "1" {
		t.Errorf("runners online, as Prometheus scraped them = %v, want 1", got)
	}

	// The rules the charm sent load and evaluate; none fires or is pending
	// on this healthy unit.
	stack.WaitFor(t, 30*time.Second, "prometheus evaluates every rule", func() bool {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
		p.api(t, "/api/v1/rules", url.Values{}, &data)
		n := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false
				}
				n++
			}
		}
		return n > 0 && n == countRules(c)
	})
	if alerts := p.query(t, `ALERTS`); len(alerts) != 0 {
		t.Errorf("alerts on a healthy unit: %v", alerts)
	}

	t.Log("the manager stopped: GitHubRunnerManagerDown is pending for the unit, and nothing fires")
	if r := b.Unit.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	want := map[string]string{
		"__name__": "ALERTS", "alertname": "GitHubRunnerManagerDown", "alertstate": "pending", "severity": "critical",
		"job": jobName, "instance": fmt.Sprintf("localhost:%d", port),
		"juju_model": "ci", "juju_model_uuid": b.Unit.Model(), "juju_application": app, "juju_unit": b.Unit.Name, "juju_charm": "github-runner",
	}
	var alerts []sample
	if !stack.Poll(30*time.Second, func() bool {
		alerts = p.query(t, `ALERTS`)
		return slices.ContainsFunc(alerts, func(a sample) bool { return maps.Equal(a.Metric, want) })
	}) {
		t.Fatalf("alerts with the manager stopped = %v, want one %v", alerts, want)
	}
	// The stop hook removes the runners before it stops the manager: a
	// scrape in between sees none online, so NoRunnerOnline may be pending
	// too (for 30 minutes: it never fires in a teardown). Nothing else may
	// be, and nothing fires.
	for _, a := range alerts {
		if name := a.Metric["alertname"]; a.Metric["alertstate"] != "pending" || name != "GitHubRunnerManagerDown" && name != "GitHubRunnerNoRunnerOnline" {
			t.Errorf("alert with the manager stopped: %v", a.Metric)
		}
	}
}

func countRules(c agentConfig) int {
	n := 0
	for _, g := range c.MetricsAlertRules["groups"].([]any) {
		n += len(g.(map[string]any)["rules"].([]any))
	}
	return n
}

// readmeMetric is a row of the README's "### Metrics" table.
type readmeMetric struct{ name, kind string }

// series are the names Prometheus stores for the metric.
func (m readmeMetric) series() []string {
	if m.kind == "histogram" {
		return []string{m.name + "_bucket", m.name + "_sum", m.name + "_count"}
	}
	return []string{m.name}
}

// present tells whether name, or a name it matches as a glob (go_*), is one
// of names.
func present(names map[string]bool, name string) bool {
	prefix, glob := strings.CutSuffix(name, "*")
	for n := range names {
		if n == name || glob && strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

var metricRow = regexp.MustCompile("^\\| `([a-zA-Z_:*][a-zA-Z0-9_:*]*)` \\| ([a-z]+) \\|")

// readmeMetrics are the rows of the README's metrics table.
func readmeMetrics(t *testing.T) []readmeMetric {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n### Metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Metrics section")
	}
	var rows []readmeMetric
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "#") {
			break
		}
		if m := metricRow.FindStringSubmatch(line); m != nil {
			rows = append(rows, readmeMetric{m[1], m[2]})
		}
	}
	if len(rows) < 10 {
		t.Fatalf("README.md's metrics table has %d rows", len(rows))
	}
	return rows
}

// usedMetrics are the metric names every dashboard query and rule
// expression in the relation data selects, found by Prometheus's parser.
func usedMetrics(t *testing.T, c agentConfig) []string {
	t.Helper()
	exprs := dashboardQueries(t, c)
	for _, g := range c.MetricsAlertRules["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			exprs = append(exprs, r.(map[string]any)["expr"].(string))
		}
	}
	p := parser.NewParser(parser.Options{})
	var names []string
	for _, e := range exprs {
		expr, err := p.ParseExpr(e)
		if err != nil {
			t.Fatalf("%q: %v", e, err)
		}
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			if v, ok := node.(*parser.VectorSelector); ok && !slices.Contains(names, v.Name) {
				names = append(names, v.Name)
			}
			return nil
		})
	}
	if len(names) < 15 {
		t.Fatalf("only %d metrics used: %v", len(names), names)
	}
	return names
}

// decodeDashboard undoes the relation's encoding: base64, then xz.
func decodeDashboard(t *testing.T, s string) []byte {
	t.Helper()
	compressed, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	r, err := xz.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// dashboardQueries are the queries of every dashboard in the relation data.
func dashboardQueries(t *testing.T, c agentConfig) []string {
	t.Helper()
	var exprs []string
	for _, d := range c.Dashboards {
		var dashboard struct {
			Panels []struct{ Targets []struct{ Expr string } }
		}
		if err := json.Unmarshal(decodeDashboard(t, d), &dashboard); err != nil {
			t.Fatal(err)
		}
		for _, panel := range dashboard.Panels {
			for _, q := range panel.Targets {
				exprs = append(exprs, q.Expr)
			}
		}
	}
	return exprs
}
