package charm

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
)

// The cos-agent relation (interface cos_agent): every unit writes its own
// unit bag's key `config`, one JSON string that grafana-agent and the
// opentelemetry collector read (the library's CosAgentProviderUnitData):
// the scrape job of the unit's localhost metrics port, the alert rules, the
// dashboards. Nothing else is read, written or needed: the agent is a
// subordinate on the unit's machine, so it sees this unit only, and on
// departed or broken it drops what it took.
const cosAgentEndpoint = "cos-agent"

// charmName is metadata.yaml's name: the rules' juju_charm label and the
// dashboards' "charm: …" tag.
const charmName = "github-runner"

// cosFiles are the alert rules and dashboards the charm sends, embedded in
// the dispatch binary so that what it publishes is byte for byte the files
// in charm/cos (README.md, "Monitoring").
//
//go:embed cos/prometheus_alert_rules/*.rules cos/dashboards/*.json
var cosFiles embed.FS

const (
	rulesDir      = "cos/prometheus_alert_rules"
	dashboardsDir = "cos/dashboards"
)

// topology is the unit's Juju topology, which the rules carry as labels so
// that the agent and Prometheus select this application's series with them
// (without, the agent stamps its own application on them).
type topology struct {
	Model, ModelUUID, App, Unit string
}

func topologyOf(getenv func(string) string, unit string) topology {
	app, _, _ := strings.Cut(unit, "/")
	return topology{Model: getenv("JUJU_MODEL_NAME"), ModelUUID: getenv("JUJU_MODEL_UUID"), App: app, Unit: unit}
}

// labels are the topology labels every rule carries; never juju_unit: the
// agent sends one rule set per application.
func (t topology) labels() map[string]string {
	return map[string]string{
		"juju_model": t.Model, "juju_model_uuid": t.ModelUUID,
		"juju_application": t.App, "juju_charm": charmName,
	}
}

// identifier is cosl's "<model>_<uuid[:8]>_<app>", which starts every rule
// group's name.
func (t topology) identifier() string {
	uuid := t.ModelUUID
	if len(uuid) > 8 {
		uuid = uuid[:8]
	}
	return t.Model + "_" + uuid + "_" + t.App
}

// cosAgentData is the `config` object. The five required fields have no
// defaults at the agent: one missing or of another type blocks it, so none
// is omitempty (an empty list is [], never null).
type cosAgentData struct {
	MetricsAlertRules ruleFile    `json:"metrics_alert_rules"`
	LogAlertRules     ruleFile    `json:"log_alert_rules"`
	Dashboards        []string    `json:"dashboards"`
	MetricsScrapeJobs []scrapeJob `json:"metrics_scrape_jobs"`
	LogSlots          []string    `json:"log_slots"`
	// TracingProtocols is optional; null as the Python provider writes it
	// when it asks for no tracing.
	TracingProtocols []string `json:"tracing_protocols"`
}

// scrapeJob is a Prometheus scrape_config; the agent adds the principal's
// juju_model, juju_model_uuid, juju_application and juju_unit to its
// static_configs' labels and scrapes it from the same machine.
type scrapeJob struct {
	JobName       string         `json:"job_name"`
	MetricsPath   string         `json:"metrics_path"`
	Scheme        string         `json:"scheme"`
	StaticConfigs []staticConfig `json:"static_configs"`
}

type staticConfig struct {
	Targets []string `json:"targets"`
}

// ruleFile is a Prometheus (or Loki) rule file; with no group it is {}, as
// the agent expects when there are no rules.
type ruleFile struct {
	Groups []ruleGroup `yaml:"groups" json:"groups,omitempty"`
}

type ruleGroup struct {
	Name     string `yaml:"name" json:"name"`
	Interval string `yaml:"interval,omitempty" json:"interval,omitempty"`
	Rules    []rule `yaml:"rules" json:"rules"`
}

type rule struct {
	Alert         string            `yaml:"alert,omitempty" json:"alert,omitempty"`
	Record        string            `yaml:"record,omitempty" json:"record,omitempty"`
	Expr          string            `yaml:"expr" json:"expr"`
	For           string            `yaml:"for,omitempty" json:"for,omitempty"`
	KeepFiringFor string            `yaml:"keep_firing_for,omitempty" json:"keep_firing_for,omitempty"`
	Labels        map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Annotations   map[string]string `yaml:"annotations,omitempty" json:"annotations,omitempty"`
}

// publishCOS writes this unit's cos-agent data into every cos-agent
// relation but one this hook breaks. It runs after every configuration
// (relation hooks, config-changed, upgrade-charm: a new charm has new rules
// and dashboards), so the data follows the port and the charm's files.
// Juju tells the agent only when the bag really changed.
func (c *Charm) publishCOS(ctx context.Context) error {
	ids, err := c.Tools.RelationIDs(ctx, cosAgentEndpoint)
	if err != nil {
		return fmt.Errorf("cannot list the %s relations: %w", cosAgentEndpoint, err)
	}
	ids = liveRelationIDs(ids, c.Getenv)
	if len(ids) == 0 {
		return nil
	}
	port, err := c.metricsPort()
	if err != nil {
		// The rules and dashboards are worth sending without the job.
		c.Log.Warn("cannot read the manager's metrics port; publishing no scrape job", "error", err)
	}
	data, err := cosAgentConfig(topologyOf(c.Getenv, c.Unit), port)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := c.Tools.RelationSet(ctx, id, false, map[string]string{"config": data}); err != nil {
			return fmt.Errorf("cannot write the %s data of relation %s: %w", cosAgentEndpoint, id, err)
		}
	}
	return nil
}

// metricsPort is the port the manager serves its metrics on, as its config
// file says; 0 if it has none yet (no configuration written, or none).
func (c *Charm) metricsPort() (int, error) {
	data, err := os.ReadFile(c.Supervisor.ConfigPath())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("cannot read the manager's configuration: %w", err)
	}
	file, err := config.Parse(data)
	if err != nil {
		return 0, err
	}
	return file.MetricsPort, nil
}

// cosAgentConfig is the `config` value for a unit of topology t whose
// manager serves its metrics on localhost:port (no scrape job if port is 0).
func cosAgentConfig(t topology, port int) (string, error) {
	rules, err := alertRules(t)
	if err != nil {
		return "", err
	}
	dashboards, err := encodedDashboards()
	if err != nil {
		return "", err
	}
	data := cosAgentData{
		MetricsAlertRules: rules,
		// No Loki rules: the agent labels the /var/log streams with its own
		// application, so a rule with this charm's topology would never
		// match them (README.md, "Alerts").
		LogAlertRules:     ruleFile{},
		Dashboards:        dashboards,
		MetricsScrapeJobs: []scrapeJob{},
		// Not a snap: the agent reads the logs under /var/log itself.
		LogSlots: []string{},
	}
	if port != 0 {
		data.MetricsScrapeJobs = append(data.MetricsScrapeJobs, managerScrapeJob(t, port))
	}
	out, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("cannot encode the %s data: %w", cosAgentEndpoint, err)
	}
	return string(out), nil
}

// managerScrapeJob scrapes the unit's manager. Its name is stable and
// unique among every principal unit on the agent's machine: the agent puts
// all their jobs in one list.
func managerScrapeJob(t topology, port int) scrapeJob {
	_, number, _ := strings.Cut(t.Unit, "/")
	return scrapeJob{
		JobName:     t.App + "_manager_" + number,
		MetricsPath: "/metrics",
		Scheme:      "http",
		StaticConfigs: []staticConfig{{
			Targets: []string{"localhost:" + strconv.Itoa(port)},
		}},
	}
}

// groupNameChars are those Prometheus's rule group names may hold here.
var groupNameChars = regexp.MustCompile(`[^A-Za-z0-9_:]`)

// alertRules are the charm's Prometheus rules as the cosl library sends a
// charm's rule files: every group named "<model>_<uuid[:8]>_<app>_<group>_rules"
// and every rule labelled with the topology where the file does not set
// the label itself.
func alertRules(t topology) (ruleFile, error) {
	names, err := fs.Glob(cosFiles, rulesDir+"/*.rules")
	if err != nil {
		return ruleFile{}, err
	}
	sort.Strings(names)
	var all ruleFile
	for _, name := range names {
		f, err := readRuleFile(name)
		if err != nil {
			return ruleFile{}, err
		}
		for _, g := range f.Groups {
			g.Name = groupNameChars.ReplaceAllString(t.identifier()+"_"+g.Name, "_")
			if !strings.HasSuffix(g.Name, "rules") {
				g.Name += "_rules"
			}
			for i := range g.Rules {
				labels := map[string]string{}
				for k, v := range t.labels() {
					labels[k] = v
				}
				for k, v := range g.Rules[i].Labels {
					labels[k] = v
				}
				g.Rules[i].Labels = labels
			}
			all.Groups = append(all.Groups, g)
		}
	}
	return all, nil
}

// readRuleFile reads one embedded rule file, strictly: a misspelt key is an
// error, not a rule without it.
func readRuleFile(name string) (ruleFile, error) {
	data, err := cosFiles.ReadFile(name)
	if err != nil {
		return ruleFile{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f ruleFile
	if err := dec.Decode(&f); err != nil {
		return ruleFile{}, fmt.Errorf("cannot read the rule file %s: %w", path.Base(name), err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") || r.Expr == "" {
				return ruleFile{}, fmt.Errorf("cannot read the rule file %s: a rule of group %s needs an expr and one of alert or record", path.Base(name), g.Name)
			}
		}
	}
	return f, nil
}

// encodedDashboards are the charm's dashboards as the agent reads them:
// each file's bytes, xz-compressed (LZMA2, CRC64, as Python's lzma does) and
// standard base64 encoded. The files already carry their uid and the
// "charm: github-runner" tag the Python provider would add.
func encodedDashboards() ([]string, error) {
	names, err := fs.Glob(cosFiles, dashboardsDir+"/*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	encoded := make([]string, 0, len(names))
	for _, name := range names {
		data, err := cosFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		if !json.Valid(data) {
			return nil, fmt.Errorf("cannot encode the dashboard %s: it is not JSON", path.Base(name))
		}
		s, err := encodeDashboard(data)
		if err != nil {
			return nil, fmt.Errorf("cannot encode the dashboard %s: %w", path.Base(name), err)
		}
		encoded = append(encoded, s)
	}
	return encoded, nil
}

func encodeDashboard(data []byte) (string, error) {
	var buf bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&buf)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(data); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}
