package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File is the manager's configuration file: written by the charm (mode
// 0600: it holds the token), read by the github-runner-manager service.
// It is the one place a secret is stored on the unit's machine.
type File struct {
	Unit              string        `yaml:"unit"`  // "github-runner/0"
	Model             string        `yaml:"model"` // the Juju model's UUID: with Unit, whose runners these are
	StateDir          string        `yaml:"state-dir"`
	Runners           int           `yaml:"runners"`
	ReconcileInterval time.Duration `yaml:"reconcile-interval"`
	LogLevel          string        `yaml:"log-level,omitempty"`
	GitHub            GitHub        `yaml:"github"`
	Runner            RunnerImage   `yaml:"runner"`
	LXD               *LXD          `yaml:"lxd,omitempty"`
	OpenStack         *OpenStack    `yaml:"openstack,omitempty"`
	Timeouts          Timeouts      `yaml:"timeouts,omitempty"`
}

// GitHub is where and how runners register.
type GitHub struct {
	Path   string     `yaml:"path"`
	APIURL string     `yaml:"api-url"`
	Token  string     `yaml:"token,omitempty"`
	App    *GitHubApp `yaml:"app,omitempty"`
	Group  string     `yaml:"group"`
	Labels []string   `yaml:"labels,omitempty"`
}

// GitHubApp is GitHub App authentication.
type GitHubApp struct {
	ID             int64  `yaml:"id"`
	InstallationID int64  `yaml:"installation-id"`
	PrivateKey     string `yaml:"private-key"`
}

// RunnerImage is what goes inside every runner, whatever the cloud.
type RunnerImage struct {
	HTTPProxy       string   `yaml:"http-proxy,omitempty"`
	HTTPSProxy      string   `yaml:"https-proxy,omitempty"`
	NoProxy         string   `yaml:"no-proxy,omitempty"`
	DockerhubMirror string   `yaml:"dockerhub-mirror,omitempty"`
	Denylist        []string `yaml:"denylist,omitempty"`
}

// LXD runners run on this machine.
type LXD struct {
	Type      string `yaml:"type"` // container or virtual-machine
	BaseImage string `yaml:"base-image"`
	CPU       int    `yaml:"cpu"`
	Memory    string `yaml:"memory"`
	Disk      string `yaml:"disk"`
}

// OpenStack runners are servers in a cloud.
type OpenStack struct {
	CloudsYAML string `yaml:"clouds-yaml"`
	Cloud      string `yaml:"cloud,omitempty"` // default: the first
	Flavor     string `yaml:"flavor"`
	Network    string `yaml:"network"`
	Image      string `yaml:"image"`
}

// Timeouts override the engine's cleanup clocks; zero means the default.
type Timeouts struct {
	Creation     time.Duration `yaml:"creation,omitempty"`
	Offline      time.Duration `yaml:"offline,omitempty"`
	Unresponsive time.Duration `yaml:"unresponsive,omitempty"`
}

// Read reads and validates a config file; unknown keys are errors, so a
// typo never silently falls back to a default.
func Read(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes and validates a config file's content.
func Parse(data []byte) (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("cannot parse config: the file is empty")
		}
		// yaml.v3 quotes offending values; the file holds secrets, so
		// only the line and the kind of error are kept.
		return nil, fmt.Errorf("cannot parse config: %s", redactYAMLError(err))
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func redactYAMLError(err error) string {
	// A type error's value may span lines ("a\nb"), so each error is
	// redacted whole, before lines are joined.
	errs := []string{err.Error()}
	var typeErr *yaml.TypeError
	if errors.As(err, &typeErr) {
		errs = typeErr.Errors
	}
	var lines []string
	for _, line := range errs {
		if i := strings.Index(line, "`"); i >= 0 { // "line 3: cannot unmarshal !!str `secret` into int"
			line = line[:i] + "<value>" + line[strings.LastIndex(line, "`")+1:]
		}
		for _, part := range strings.Split(line, "\n") {
			if part = strings.TrimSpace(part); part != "" {
				lines = append(lines, part)
			}
		}
	}
	return strings.Join(lines, "; ")
}

// Problem is one thing wrong with one field, named by its YAML path
// ("github.api-url"), so the charm can name the Juju option instead.
// Problem never quotes a secret's value.
type Problem struct {
	Field   string
	Problem string // "is required", "must be …", or a parser's sentence about the value
}

// String reads "field is required", or "field: "value" is not …" when the
// problem starts by quoting the value.
func (p Problem) String() string {
	if strings.HasPrefix(p.Problem, `"`) {
		return p.Field + ": " + p.Problem
	}
	return p.Field + " " + p.Problem
}

// InvalidError is every problem with a config at once.
type InvalidError struct{ Problems []Problem }

func (e *InvalidError) Error() string {
	texts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		texts[i] = p.String()
	}
	return "invalid config: " + strings.Join(texts, "; ")
}

// Validate checks every value and reports every problem at once, as an
// *InvalidError.
func (f *File) Validate() error {
	if problems := f.Problems(); len(problems) > 0 {
		return &InvalidError{Problems: problems}
	}
	return nil
}

// Problems is every problem with the file's values, keyed by field.
func (f *File) Problems() []Problem {
	var problems []Problem
	add := func(field, format string, args ...any) {
		problems = append(problems, Problem{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if f.Unit == "" {
		add("unit", "is required")
	}
	if f.Model == "" {
		add("model", "is required")
	}
	if f.StateDir == "" {
		add("state-dir", "is required")
	}
	if f.Runners < 0 {
		add("runners", "must be 0 or more, not %d", f.Runners)
	}
	if f.ReconcileInterval < time.Minute {
		add("reconcile-interval", "must be at least 1m")
	}
	if _, err := ParsePath(f.GitHub.Path); err != nil {
		add("github.path", "%v", err)
	}
	if f.GitHub.APIURL == "" {
		add("github.api-url", "is required")
	} else if _, err := ParseAPIURL(f.GitHub.APIURL); err != nil {
		add("github.api-url", "%v", err)
	}
	if (f.GitHub.Token == "") == (f.GitHub.App == nil) {
		add("github", "must set exactly one of token and app")
	}
	if f.GitHub.Token != "" {
		if _, err := ParseToken(f.GitHub.Token); err != nil {
			add("github.token", "%v", err)
		}
	}
	if a := f.GitHub.App; a != nil {
		if a.ID <= 0 {
			add("github.app.id", "must be the App's numeric ID")
		}
		if a.InstallationID <= 0 {
			add("github.app.installation-id", "must be the installation's numeric ID")
		}
		if _, err := ParseAppKey(a.PrivateKey); err != nil {
			add("github.app.private-key", "%v", err)
		}
	}
	if _, err := ParseLabels(strings.Join(f.GitHub.Labels, ",")); err != nil {
		add("github.labels", "%v", err)
	}
	problems = append(problems, f.Runner.Problems()...)
	switch {
	case (f.LXD == nil) == (f.OpenStack == nil):
		add("lxd", "must be set, or openstack, not both")
	case f.LXD != nil:
		problems = append(problems, f.LXD.Problems()...)
	default:
		problems = append(problems, f.OpenStack.Problems()...)
	}
	return problems
}

// Problems is every problem with what goes inside every runner.
func (r RunnerImage) Problems() []Problem {
	if _, err := ParseDenylist(strings.Join(r.Denylist, ",")); err != nil {
		return []Problem{{"runner.denylist", err.Error()}}
	}
	return nil
}

// Problems is every problem with the LXD runners' values; src/lxd refuses
// a config with any, and checks nothing of them itself.
func (l *LXD) Problems() []Problem {
	var problems []Problem
	if l.Type != "container" && l.Type != "virtual-machine" {
		problems = append(problems, Problem{"lxd.type", fmt.Sprintf(`must be "virtual-machine" or "container", not %q`, l.Type)})
	}
	if l.BaseImage == "" || strings.ContainsAny(l.BaseImage, " \t\r\n") {
		problems = append(problems, Problem{"lxd.base-image", "must be an image alias such as noble or ubuntu:24.04"})
	}
	if l.CPU < 1 {
		problems = append(problems, Problem{"lxd.cpu", fmt.Sprintf("must be at least 1, not %d", l.CPU)})
	}
	for _, size := range []struct{ key, value string }{{"lxd.memory", l.Memory}, {"lxd.disk", l.Disk}} {
		if _, err := ParseSize(size.value); err != nil {
			problems = append(problems, Problem{size.key, err.Error()})
		}
	}
	return problems
}

// Problems is every problem with the OpenStack values; src/openstack
// refuses a config with any.
func (o *OpenStack) Problems() []Problem {
	var problems []Problem
	for _, field := range []struct{ key, value string }{
		{"openstack.clouds-yaml", o.CloudsYAML}, {"openstack.flavor", o.Flavor}, {"openstack.network", o.Network}, {"openstack.image", o.Image},
	} {
		if field.value == "" {
			problems = append(problems, Problem{field.key, "is required"})
		}
	}
	if o.CloudsYAML != "" {
		if _, err := ParseCloudsYAML(o.CloudsYAML, o.Cloud); err != nil {
			problems = append(problems, Problem{"openstack.clouds-yaml", err.Error()})
		}
	}
	return problems
}

// Write writes the file with mode 0600, atomically, so the service never
// reads half a file and the token is never world-readable, not even briefly.
func (f *File) Write(path string) error {
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("cannot encode config: %w", err)
	}
	tmp, err := os.CreateTemp(dirOf(path), ".config-*.tmp")
	if err != nil {
		return fmt.Errorf("cannot write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write config: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write config: %w", err)
	}
	return nil
}

func dirOf(path string) string {
	if i := strings.LastIndex(path, "/"); i >= 0 {
		return path[:i+1]
	}
	return "."
}
