package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// File is the manager's configuration file: written by the charm (mode
// 0600: it holds the token), read by the github-runner-manager service.
// It is the one place a secret is stored on the unit's machine.
type File struct {
	Unit              string        `yaml:"unit"`  // "github-runner/0"
	Model             string        `yaml:"model"` // the Juju model's UUID: with Unit, whose runners these are
	StateDir          string        `yaml:"state-dir"`
	Runners           int           `yaml:"runners"`               // kept idle and ready (classic: the fixed pool)
	MaxRunners        int           `yaml:"max-runners,omitempty"` // every runner of the unit, busy ones too; 0: no cap
	ReconcileInterval time.Duration `yaml:"reconcile-interval"`
	LogLevel          string        `yaml:"log-level,omitempty"` // the runner-manager-log-level option: DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL
	// MetricsPort is where the manager also serves GET /metrics, on
	// 127.0.0.1 (the socket always does); 0: no TCP listener.
	MetricsPort int `yaml:"metrics-port,omitempty"`
	// LogFile is the file the manager logs to besides stderr, rotated by
	// size; "": stderr only. EventsLog is the events log; "": events.log
	// in the state directory.
	LogFile   string      `yaml:"log-file,omitempty"`
	EventsLog string      `yaml:"events-log,omitempty"`
	GitHub    GitHub      `yaml:"github"`
	Runner    RunnerImage `yaml:"runner"`
	LXD       *LXD        `yaml:"lxd,omitempty"`
	OpenStack *OpenStack  `yaml:"openstack,omitempty"`
	Timeouts  Timeouts    `yaml:"timeouts,omitempty"`
}

// GitHub is where and how runners register.
type GitHub struct {
	Path   string     `yaml:"path"`
	APIURL string     `yaml:"api-url"`
	Token  string     `yaml:"token,omitempty"`
	App    *GitHubApp `yaml:"app,omitempty"`
	Group  string     `yaml:"group"`
	Labels []string   `yaml:"labels,omitempty"`
	// ScaleSet is the runner-scale-set option: the base of the name of
	// the unit's scale set (ScaleSetName); empty: classic runners.
	ScaleSet string `yaml:"scale-set,omitempty"`
	// PlatformLabels are the labels the charm derives from the runners'
	// platform (architecture, application, base image or flavor, the
	// image relation's tags); runners register with RunnerLabels.
	PlatformLabels []string `yaml:"platform-labels,omitempty"`
}

// GitHubApp is GitHub App authentication.
type GitHubApp struct {
	// ID is the App's numeric ID; ClientID its client ID (Iv1.…). Exactly
	// one is set: either is the issuer of the App's JWTs.
	ID             int64  `yaml:"id,omitempty"`
	ClientID       string `yaml:"client-id,omitempty"`
	InstallationID int64  `yaml:"installation-id"`
	PrivateKey     string `yaml:"private-key"`
}

// RunnerImage is what goes inside every runner, whatever the cloud.
type RunnerImage struct {
	HTTPProxy       string   `yaml:"http-proxy,omitempty"`
	HTTPSProxy      string   `yaml:"https-proxy,omitempty"`
	NoProxy         string   `yaml:"no-proxy,omitempty"`
	DockerhubMirror string   `yaml:"dockerhub-mirror,omitempty"`
	Denylist        Denylist `yaml:"denylist,omitempty"`
	// TmateServers are the debug-ssh relation's tmate servers: each new
	// runner gets one, chosen at random, in its job environment, and the
	// runners reach their ports whatever the denylist says.
	TmateServers []TmateServer `yaml:"tmate-servers,omitempty"`
	// PreJobScript is the pre-job-script option: the operator's script
	// (with its shebang) the runners' job-started hook runs, as the runner
	// user, before each job; its failure is logged and the job goes on.
	PreJobScript string `yaml:"pre-job-script,omitempty"`
	// RejectExternalContributors is allow-external-contributor=false: the
	// hook fails jobs of pull request and comment events by authors who
	// are not the repository's OWNER, MEMBER or COLLABORATOR. Its zero
	// value is the option's default, so an older file means the same.
	RejectExternalContributors bool `yaml:"reject-external-contributors,omitempty"`
}

// LXD runners run on this machine.
type LXD struct {
	Type      string `yaml:"type"` // container or virtual-machine
	BaseImage string `yaml:"base-image"`
	CPU       int    `yaml:"cpu"`
	Memory    Size   `yaml:"memory"`
	Disk      Size   `yaml:"disk"`
	// ImageMaxAge is how old the runner image may get before Prepare
	// rebuilds it for the base's security updates; 0 is
	// DefaultImageMaxAge (the charm writes none; tests set it short).
	ImageMaxAge time.Duration `yaml:"image-max-age,omitempty"`
}

// DefaultImageMaxAge is the runner image's age at which it is rebuilt:
// the Python charm rebuilt its image every 6 hours, for the updates of
// the base's archive, and LXD refreshes a cached remote base image as
// often (images.auto_update_interval).
const DefaultImageMaxAge = 6 * time.Hour

// MaxImageAge is ImageMaxAge, or its default.
func (l *LXD) MaxImageAge() time.Duration {
	if l.ImageMaxAge > 0 {
		return l.ImageMaxAge
	}
	return DefaultImageMaxAge
}

// OpenStack runners are servers in a cloud.
type OpenStack struct {
	CloudsYAML string `yaml:"clouds-yaml"`
	Cloud      string `yaml:"cloud,omitempty"` // default: the first
	Flavor     string `yaml:"flavor"`
	Network    string `yaml:"network"`
	Image      string `yaml:"image"`
	// BaseImage is the Glance image the unit builds its runner image from
	// when Image is "" (src/openstack/image.go).
	BaseImage string `yaml:"base-image,omitempty"`
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

// Problems is every problem with the file's values, keyed by field. The
// values' rules are here once: the charm reports these in option names,
// the service refuses a file with any, and the clouds and the GitHub
// client take the values as checked here. What depends on the machine is
// in ProblemsOn.
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
	} else if socket := f.SocketPath(); len(socket) > MaxSocketPath {
		add("state-dir", "%q is too long for the manager's socket: %s in it must be at most %d bytes", f.StateDir, api.SocketName, MaxSocketPath)
	}
	if f.Runners < 0 {
		add("runners", "must be 0 or more, not %d", f.Runners)
	}
	switch {
	case f.MaxRunners < 0:
		add("max-runners", "must be 0 (no cap) or more, not %d", f.MaxRunners)
	case f.MaxRunners != 0 && f.Runners > f.MaxRunners:
		add("max-runners", "must be 0 (no cap) or at least the base of %d runners, not %d", f.Runners, f.MaxRunners)
	}
	problems = append(problems, f.observabilityProblems()...)
	if f.ReconcileInterval < minReconcileInterval || f.ReconcileInterval > maxReconcileInterval {
		add("reconcile-interval", "must be at least 1 minute and at most 1 day")
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
		switch {
		case a.ClientID != "" && a.ID != 0:
			add("github.app", "must set exactly one of id and client-id")
		case a.ClientID != "":
			if err := ParseAppClientID(a.ClientID); err != nil {
				add("github.app.client-id", "%v", err)
			}
		case a.ID <= 0:
			add("github.app.id", "must be the App's numeric ID")
		}
		if a.InstallationID <= 0 {
			add("github.app.installation-id", "must be the installation's numeric ID")
		}
		if _, err := ParseAppKey(a.PrivateKey); err != nil {
			add("github.app.private-key", "%v", err)
		}
	}
	if g := f.GitHub.Group; g == "" || strings.TrimSpace(g) != g || strings.ContainsFunc(g, unicode.IsControl) {
		add("github.group", `must name a runner group (the default group is "default")`)
	}
	if err := labelsProblem(f.GitHub.Labels); err != nil {
		add("github.labels", "%v", err)
	}
	if err := labelsProblem(f.GitHub.PlatformLabels); err != nil {
		add("github.platform-labels", "%v", err)
	}
	if f.GitHub.ScaleSet != "" {
		if err := scaleSetProblem(f.GitHub.ScaleSet, f.Model, f.Unit); err != nil {
			add("github.scale-set", "%v", err)
		}
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

// Bounds of the reconcile interval: a cycle a minute is GitHub's rate
// limit's worth; one a day still replaces finished runners daily.
const (
	minReconcileInterval = time.Minute
	maxReconcileInterval = 24 * time.Hour
)

// MaxSocketPath is the longest path of a unix socket on Linux (108 bytes
// with the NUL): the manager's socket is in its state directory.
const MaxSocketPath = 107

// SocketPath is where the manager listens, in its state directory.
func (f *File) SocketPath() string { return filepath.Join(f.StateDir, api.SocketName) }

// ProblemsOn is every problem with the file on a host with the given
// facts: Problems, and what the host cannot give.
func (f *File) ProblemsOn(h Host) []Problem {
	problems := f.Problems()
	if f.LXD != nil {
		problems = append(problems, f.LXD.HostProblems(h)...)
	}
	return problems
}

// Host is what the machine offers that some values need.
type Host struct {
	KVM bool // /dev/kvm is there: LXD virtual machines can run
}

// KVMDevice is where KVM is, when the host has it.
const KVMDevice = "/dev/kvm"

// ThisHost is the facts of the machine this runs on.
func ThisHost() Host { return Host{KVM: HasKVM(KVMDevice)} }

// HasKVM tells whether the KVM device at path is there.
func HasKVM(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// HostProblems is what the LXD runners need that the host cannot give;
// src/lxd refuses to start with any.
func (l *LXD) HostProblems(h Host) []Problem {
	if l.Type == "virtual-machine" && !h.KVM {
		return []Problem{{"lxd.type", `must be "container" on this host: virtual machines need KVM (` + KVMDevice + `)`}}
	}
	return nil
}

// Problems is every problem with what goes inside every runner. Proxy
// and mirror values are not quoted back: a proxy URL may carry a password.
func (r RunnerImage) Problems() []Problem {
	var problems []Problem
	if err := r.Denylist.problem(); err != nil {
		problems = append(problems, Problem{"runner.denylist", err.Error()})
	}
	for _, proxy := range []struct{ field, value string }{{"runner.http-proxy", r.HTTPProxy}, {"runner.https-proxy", r.HTTPSProxy}} {
		if proxy.value != "" && !isURL(proxy.value, "http", "https") {
			problems = append(problems, Problem{proxy.field, "must be an http(s) URL such as http://proxy.example.com:3128"})
		}
	}
	if strings.ContainsFunc(r.NoProxy, unicode.IsControl) {
		problems = append(problems, Problem{"runner.no-proxy", "must be one line of hosts and networks, comma-separated"})
	}
	if r.DockerhubMirror != "" && !isURL(r.DockerhubMirror, "https") {
		problems = append(problems, Problem{"runner.dockerhub-mirror", "must be an https:// URL of a registry"})
	}
	problems = append(problems, tmateProblems(r.TmateServers)...)
	if err := preJobScriptProblem(r.PreJobScript); err != nil {
		problems = append(problems, Problem{"runner.pre-job-script", err.Error()})
	}
	return problems
}

// isURL tells whether s is an absolute URL of one of the schemes, with a
// host, and nothing a shell or a config file would read differently
// (url.Parse refuses control characters; spaces and quotes are refused
// here).
func isURL(s string, schemes ...string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || strings.ContainsAny(s, " \t\"'`") {
		return false
	}
	return slices.Contains(schemes, u.Scheme)
}

// Problems is every problem with the LXD runners' values; src/lxd takes
// them as checked here.
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
	if l.ImageMaxAge < 0 {
		problems = append(problems, Problem{"lxd.image-max-age", fmt.Sprintf("must not be negative, not %s", l.ImageMaxAge)})
	}
	for _, size := range []struct {
		key   string
		value Size
	}{{"lxd.memory", l.Memory}, {"lxd.disk", l.Disk}} {
		if size.value <= 0 {
			problems = append(problems, Problem{size.key, "is required (a size like 512MiB or 10GiB)"})
		}
	}
	return problems
}

// Problems is every problem with the OpenStack values; src/openstack
// takes them as checked here.
func (o *OpenStack) Problems() []Problem {
	var problems []Problem
	for _, field := range []struct{ key, value string }{
		{"openstack.clouds-yaml", o.CloudsYAML}, {"openstack.flavor", o.Flavor}, {"openstack.network", o.Network},
	} {
		if field.value == "" {
			problems = append(problems, Problem{field.key, "is required"})
		}
	}
	// The image is given, or built from a base image.
	if o.Image == "" && o.BaseImage == "" {
		problems = append(problems, Problem{"openstack.image", "is required"})
	}
	if strings.TrimSpace(o.BaseImage) != o.BaseImage {
		problems = append(problems, Problem{"openstack.base-image", "has leading or trailing spaces"})
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
