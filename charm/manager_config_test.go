package charm

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
)

const testModel = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"

func TestManagerConfig(t *testing.T) {
	s, err := ParseSettings(with(map[string]any{"labels": "large", "runner-type": "container"}))
	if err != nil {
		t.Fatal(err)
	}
	model := Proxy{HTTP: "http://model:3128", HTTPS: "http://model:3129", NoProxy: "10.0.0.0/8"}
	f, err := managerConfig(s, testModel, "github-runner/7", "/var/lib/github-runner/github-runner-7", model)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("the charm wrote a config the service refuses: %v", err)
	}
	if f.Model != testModel || f.Unit != "github-runner/7" || f.GitHub.Token != secretToken || f.LXD.Type != "container" || f.Runner.HTTPSProxy != "http://model:3129" {
		t.Errorf("config = %+v", f)
	}
	// runner-http-proxy wins over the model's proxy for both schemes.
	s.RunnerHTTPProxy = "http://runners:8080"
	f, _ = managerConfig(s, testModel, "github-runner/7", "/x", model)
	if f.Runner.HTTPProxy != "http://runners:8080" || f.Runner.HTTPSProxy != "http://runners:8080" || f.Runner.NoProxy != "10.0.0.0/8" {
		t.Errorf("runner proxy = %+v", f.Runner)
	}
}

// pre-job-script goes to the runners as it is; allow-external-contributor
// false makes them refuse external contributors' jobs, and left out of
// config-get (a charm of before the option) it is its default, true.
func TestManagerConfigPreJobHook(t *testing.T) {
	const script = "#!/bin/bash\necho ready"
	for _, test := range []struct {
		name   string
		raw    map[string]any
		script string
		reject bool
	}{
		{"defaults", with(nil), "", false},
		{"set", with(map[string]any{"pre-job-script": script + "\n", "allow-external-contributor": false}), script, true},
		{"allow true", with(map[string]any{"allow-external-contributor": true}), "", false},
		{"option missing", func() map[string]any { raw := with(nil); delete(raw, "allow-external-contributor"); return raw }(), "", false},
	} {
		s, err := ParseSettings(test.raw)
		if err != nil {
			t.Fatalf("%s: %v", test.name, err)
		}
		f, err := managerConfig(s, testModel, "github-runner/0", "/x", Proxy{})
		if err != nil {
			t.Fatal(err)
		}
		if f.Runner.PreJobScript != test.script || f.Runner.RejectExternalContributors != test.reject {
			t.Errorf("%s: runner settings %+v, want script %q and reject %v", test.name, f.Runner, test.script, test.reject)
		}
		if err := f.Validate(); err != nil {
			t.Errorf("%s: the manager refuses the file: %v", test.name, err)
		}
	}
}

func TestDrainBefore(t *testing.T) {
	base := func() *config.File {
		return &config.File{GitHub: config.GitHub{Path: "o/r", Token: "t", Group: "default", Labels: []string{"a"}}, LXD: &config.LXD{}}
	}
	tests := []struct {
		name           string
		change         func(*config.File)
		drain, busyToo bool
	}{
		{"nothing", func(*config.File) {}, false, false},
		{"runner count", func(f *config.File) { f.Runners = 9 }, false, false},
		{"labels", func(f *config.File) { f.GitHub.Labels = []string{"a", "b"} }, true, false},
		{"token", func(f *config.File) { f.GitHub.Token = "u" }, true, false},
		{"path", func(f *config.File) { f.GitHub.Path = "o/s" }, true, false},
		{"group", func(f *config.File) { f.GitHub.Group = "g" }, true, false},
		{"app", func(f *config.File) { f.GitHub.App = &config.GitHubApp{ID: 1} }, true, false},
		{"cloud", func(f *config.File) { f.LXD, f.OpenStack = nil, &config.OpenStack{} }, true, true},
		{"cap", func(f *config.File) { f.MaxRunners = 4 }, false, false},
		{"into a scale set", func(f *config.File) { f.GitHub.ScaleSet = "linux" }, true, false},
		// Idle runners carry the hook of the old settings.
		{"pre-job-script", func(f *config.File) { f.Runner.PreJobScript = "#!/bin/sh\ntrue" }, true, false},
		{"allow-external-contributor", func(f *config.File) { f.Runner.RejectExternalContributors = true }, true, false},
	}
	for _, test := range tests {
		next := base()
		test.change(next)
		if drain, busyToo := drainBefore(base(), next); drain != test.drain || busyToo != test.busyToo {
			t.Errorf("%s: drain %v busy %v, want %v %v", test.name, drain, busyToo, test.drain, test.busyToo)
		}
	}
	if drain, _ := drainBefore(nil, base()); drain {
		t.Error("a first configuration drains")
	}
}

// What the manager's own validation refuses is named by the option that
// makes it, not by the config file's field.
func TestOptionProblems(t *testing.T) {
	problems := []config.Problem{
		{Field: "github.api-url", Problem: `"http://x" must use https`},
		{Field: "lxd.memory", Problem: "is required"},
		{Field: "state-dir", Problem: "is required"},
	}
	got := strings.Join(Settings{}.optionProblems(problems), "; ")
	want := `github-api-url: "http://x" must use https; vm-memory is required; state-dir is required`
	if got != want {
		t.Errorf("optionProblems = %q, want %q", got, want)
	}
	options, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for field, option := range optionOf {
		if !strings.Contains(string(options), "\n  "+option+":\n") {
			t.Errorf("field %s maps to %q, which is no option in config.yaml", field, option)
		}
	}
}

// testCharm is a charm of unit github-runner/0 in testModel, with the state
// directory it has on a unit (nothing is made there), on a host with KVM,
// in a model with the given environment.
func testCharm(t *testing.T, env map[string]string) *Charm {
	return &Charm{
		Unit: "github-runner/0", StateDir: filepath.Join(DefaultStateRoot, "github-runner-0"), HasKVM: func() bool { return true },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Getenv: func(key string) string {
			if key == "JUJU_MODEL_UUID" {
				return testModel
			}
			return env[key]
		},
	}
}

// Every problem the config file's validation finds in settings the charm
// accepted blocks the unit, named by its option.
func TestHostProblemsHoldTheManagersValidation(t *testing.T) {
	s, err := ParseSettings(with(map[string]any{"runner-type": "container"}))
	if err != nil {
		t.Fatal(err)
	}
	s.GitHubAPIURL = "http://192.0.2.1/" // as a charm without the URL rule let through
	problems := strings.Join(testCharm(t, nil).hostProblems(s), "; ")
	if !strings.Contains(problems, `github-api-url: "http://192.0.2.1/" must use https`) {
		t.Errorf("host problems %q do not name github-api-url", problems)
	}
}

// What the host or the model gives is checked by src/config's rules too:
// KVM for virtual machines, the state directory's length for the
// manager's socket, the model's proxies (named as the model's options).
func TestHostProblems(t *testing.T) {
	vm, err := ParseSettings(with(nil))
	if err != nil {
		t.Fatal(err)
	}
	container := vm
	container.RunnerType = RunnerTypeContainer
	scaleSet36 := container // the longest name unit 0 takes
	scaleSet36.ScaleSet = strings.Repeat("n", 36)
	tests := []struct {
		name string
		s    Settings
		edit func(*Charm)
		want string
	}{
		{"no KVM", vm, func(c *Charm) { c.HasKVM = func() bool { return false } },
			`runner-type must be "container" on this host: virtual machines need KVM (/dev/kvm)`},
		{"containers without KVM", container, func(c *Charm) { c.HasKVM = func() bool { return false } }, ""},
		{"state directory too long", container, func(c *Charm) { c.StateDir = "/" + strings.Repeat("x", 100) },
			`state-dir: "/` + strings.Repeat("x", 100) + `" is too long for the manager's socket`},
		{"model proxy not a URL", container, func(c *Charm) {
			c.Getenv = envWith(c.Getenv, "JUJU_CHARM_HTTPS_PROXY", "http://proxy.example.com:3128/ x")
		},
			"the model's juju-https-proxy must be an http(s) URL"},
		{"model proxy without a scheme", container, func(c *Charm) { c.Getenv = envWith(c.Getenv, "JUJU_CHARM_HTTP_PROXY", "squid.internal:3128") }, ""},
		{"scale set name too long for this unit's number", scaleSet36, func(c *Charm) {
			c.Unit, c.StateDir = "github-runner/10", filepath.Join(DefaultStateRoot, "github-runner-10")
		},
			`runner-scale-set: "` + strings.Repeat("n", 36) + `" is too long: the unit's scale set, "` + strings.Repeat("n", 36) + `-10-`},
		{"model's no-proxy on two lines", container, func(c *Charm) { c.Getenv = envWith(c.Getenv, "JUJU_CHARM_NO_PROXY", "a\nb") },
			"the model's juju-no-proxy must be one line"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c := testCharm(t, nil)
			test.edit(c)
			problems := c.hostProblems(test.s)
			if test.want == "" && len(problems) > 0 || test.want != "" && (len(problems) != 1 || !strings.Contains(problems[0], test.want)) {
				t.Errorf("host problems = %q, want %q", problems, test.want)
			}
		})
	}
}

func envWith(getenv func(string) string, key, value string) func(string) string {
	return func(k string) string {
		if k == key {
			return value
		}
		return getenv(k)
	}
}

// README's configuration table states each option's rule once: one row per
// option of config.yaml, with its default and a rule.
func TestREADMEConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var header []string
	rows := map[string]map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if header == nil {
			header = cells
			continue
		}
		row := map[string]string{}
		for i, cell := range cells {
			if i < len(header) {
				row[header[i]] = cell
			}
		}
		option := strings.Trim(row["option"], "`")
		if rows[option] != nil {
			t.Errorf("README's configuration table has %s twice", option)
		}
		rows[option] = row
	}
	rule := "rule (as `src/config` checks it)"
	if !slices.Contains(header, rule) {
		t.Fatalf("README's configuration table has columns %q, want a %q", header, rule)
	}
	data, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Options map[string]struct {
			Default any `yaml:"default"`
		} `yaml:"options"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for option, o := range doc.Options {
		row := rows[option]
		if row == nil {
			t.Errorf("README's configuration table has no row for %s", option)
			continue
		}
		if want := "`" + fmt.Sprint(o.Default) + "`"; o.Default == "" && row["default"] != "`\"\"`" || o.Default != "" && row["default"] != want {
			t.Errorf("README says %s defaults to %s, config.yaml to %v", option, row["default"], o.Default)
		}
		if row[rule] == "" {
			t.Errorf("README states no rule for %s", option)
		}
	}
	for option := range rows {
		if _, ok := doc.Options[option]; !ok {
			t.Errorf("README's configuration table has %s, which is no option of config.yaml", option)
		}
	}
}
