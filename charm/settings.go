package charm

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
)

// Settings is the charm's configuration, typed and validated.
type Settings struct {
	Path              config.Path
	Token             string // a personal access token; empty when App is set
	App               *GitHubApp
	GitHubAPIURL      string
	Group             string
	Labels            []string
	Runners           int    // kept idle and ready (classic: the fixed pool)
	MaxRunners        int    // the cap on every runner of the unit; 0: none
	ScaleSet          string // runner-scale-set; empty: classic runners
	RunnerType        string
	BaseImage         string
	CPU               int
	Memory            config.Size
	Disk              config.Size
	ReconcileInterval time.Duration
	LogLevel          string // runner-manager-log-level; its rule is src/config's
	Denylist          config.Denylist
	DockerhubMirror   string
	RunnerHTTPProxy   string
	// PreJobScript and AllowExternalContributor are the runners'
	// job-started hook's options; their rules are src/config's.
	PreJobScript             string
	AllowExternalContributor bool
	OpenStack                *OpenStack // nil: runners are LXD instances on this machine
	// ImageTags are the image relation's tags of its image (OpenStack):
	// runner labels too (platformLabels).
	ImageTags []string
	// TmateServers are the debug-ssh relation's servers (tmateServers).
	TmateServers []config.TmateServer

	// basePool: base-virtual-machines and max-total-virtual-machines set
	// the runners, not virtual-machines (which names their problems).
	basePool bool
	// fromSecret names the secret option each plain option's value came
	// from (token → token-secret-id), which then names its problems.
	fromSecret map[string]string
}

// GitHubApp is GitHub App authentication, the alternative to a token.
type GitHubApp struct {
	AppID          int64  // github-app-id; 0 when ClientID names the App
	ClientID       string // github-app-client-id
	InstallationID int64
	PrivateKey     string // PEM
}

// OpenStack is where runners go when openstack-clouds-yaml is set.
type OpenStack struct {
	CloudsYAML string
	Flavor     string
	Network    string
	Image      string
	BaseImage  string // openstack-base-image: build the image from it when no image is given
}

// Runner types, as the runner-type option spells them.
const (
	RunnerTypeVM        = "virtual-machine"
	RunnerTypeContainer = "container"
)

// InvalidConfigError lists every problem with the configuration, so the
// operator fixes them all in one round rather than one per hook.
type InvalidConfigError struct {
	Problems []string
}

func (e *InvalidConfigError) Error() string {
	return "invalid config: " + strings.Join(e.Problems, "; ")
}

// configReader reads typed values out of config-get's JSON and collects
// problems. Problem texts never quote the value of a secret option.
type configReader struct {
	raw      map[string]any
	problems []string
	// fromSecret: the plain options whose value a secret option gave
	// (resolveSecrets), and that option.
	fromSecret map[string]string
}

func (r *configReader) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// invalid reports a value a src/config rule refused, in the option's name.
func (r *configReader) invalid(option string, err error) {
	r.problem("%s", config.Problem{Field: option, Problem: err.Error()})
}

func (r *configReader) str(key string) string {
	switch v := r.raw[key].(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(v)
	case secretValue: // the secret option's value wins over the plain one
		if r.fromSecret == nil {
			r.fromSecret = map[string]string{}
		}
		r.fromSecret[key] = v.option
		if v.problem != "" && !slices.Contains(r.problems, v.problem) {
			r.problem("%s", v.problem)
		}
		return strings.TrimSpace(v.value)
	default:
		r.problem("%s must be a string", key)
		return ""
	}
}

// secretFailed tells a plain option whose secret option is set but could
// not be read: that problem is reported, and the option's absence is not.
func (r *configReader) secretFailed(key string) bool {
	v, ok := r.raw[key].(secretValue)
	return ok && v.problem != ""
}

// option is the option a plain option's value came from: its secret
// option when that is set.
func (r *configReader) option(key string) string {
	if from := r.fromSecret[key]; from != "" {
		return from
	}
	return key
}

// integer returns the option's value; ok is false when it is not a whole
// number, which is then already reported.
func (r *configReader) integer(key string) (n int64, ok bool) {
	switch v := r.raw[key].(type) {
	case nil:
		return 0, true
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n, true
		}
	}
	r.problem("%s must be a whole number", key)
	return 0, false
}

// boolean returns the option's value, or def when it is not set; a value
// that is not a boolean is reported.
func (r *configReader) boolean(key string, def bool) bool {
	switch v := r.raw[key].(type) {
	case nil:
		return def
	case bool:
		return v
	}
	r.problem("%s must be true or false", key)
	return def
}

// ParseSettings validates config-get's output (decoded with UseNumber).
// The returned error is an *InvalidConfigError naming every problem.
func ParseSettings(raw map[string]any) (Settings, error) {
	r := &configReader{raw: raw}
	s := Settings{
		GitHubAPIURL:    r.str("github-api-url"),
		Group:           r.str("group"),
		RunnerType:      r.str("runner-type"),
		BaseImage:       r.str("base-image"),
		DockerhubMirror: r.str("dockerhub-mirror"),
		RunnerHTTPProxy: r.str("runner-http-proxy"),
		PreJobScript:    r.str("pre-job-script"),
		// Left out of config-get (an older charm's config), it is its
		// default, as upstream's.
		AllowExternalContributor: r.boolean("allow-external-contributor", true),
	}
	r.readPath(&s)
	r.readAuth(&s)
	r.readRunners(&s)
	r.readNetwork(&s)
	r.readOpenStack(&s)
	s.fromSecret = r.fromSecret
	r.problems = append(r.problems, fileProblems(s, r.problems)...)
	if len(r.problems) > 0 {
		return Settings{}, &InvalidConfigError{Problems: r.problems}
	}
	return s, nil
}

func (r *configReader) readPath(s *Settings) {
	path := r.str("path")
	if path == "" {
		r.problem("path is required (an organisation, or owner/repo)")
	} else if p, err := config.ParsePath(path); err != nil {
		r.invalid("path", err)
	} else {
		s.Path = p
	}
	if s.GitHubAPIURL == "" {
		r.problem("github-api-url is required (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server)")
	}
	// The group and the API URL have their rules in src/config:
	// fileProblems applies them.
}

func (r *configReader) readAuth(s *Settings) {
	s.Token = r.str("token")
	// An ID that is no whole number is reported here, and 0 stands in
	// for it; the App's rules are src/config's.
	appID, _ := r.integer("github-app-id")
	clientID := r.str("github-app-client-id")
	installationID, _ := r.integer("github-app-installation-id")
	key := r.str("github-app-private-key")
	keyFailed := r.secretFailed("github-app-private-key")
	appWanted := appID != 0 || clientID != "" || installationID != 0 || key != "" || keyFailed
	switch {
	case (s.Token != "" || r.secretFailed("token")) && appWanted:
		r.problem("set either %s or a GitHub App (github-app-client-id or github-app-id, github-app-installation-id, %s), not both",
			r.option("token"), r.option("github-app-private-key"))
		return
	case s.Token == "" && !appWanted:
		if !r.secretFailed("token") {
			r.problem("token is required (a GitHub personal access token, or token-secret-id naming a Juju secret that holds it), or configure a GitHub App with github-app-client-id, github-app-installation-id and github-app-private-key-secret-id")
		}
		return
	case !appWanted:
		return // the token's rule is src/config's
	case appID != 0 && clientID != "":
		// The Python charm has only github-app-client-id, which takes
		// either; here the two name the same thing, so one must go.
		r.problem("github-app-client-id and github-app-id both name the App: set one of them (the client ID, or the numeric ID), not both")
		return
	case appID == 0 && clientID == "":
		r.problem("github-app-client-id is required for a GitHub App (its client ID, or its numeric ID in github-app-id)")
		return
	}
	s.App = &GitHubApp{AppID: appID, ClientID: clientID, InstallationID: installationID, PrivateKey: key}
}

func (r *configReader) readRunners(s *Settings) {
	labels, err := config.ParseLabels(r.str("labels"))
	if err != nil {
		r.invalid("labels", err)
	}
	s.Labels = labels
	// runner-type, base-image, vm-cpu, the runner counts, the scale set's
	// name and reconcile-interval have their rules in src/config:
	// fileProblems applies them. The sizes are read by config's reader.
	r.readPool(s)
	if n, ok := r.integer("vm-cpu"); ok {
		s.CPU = int(n)
	}
	for _, size := range []struct {
		option string
		to     *config.Size
	}{{"vm-memory", &s.Memory}, {"vm-disk", &s.Disk}} {
		n, err := config.ParseSize(r.str(size.option))
		if err != nil && !r.openStackWanted() { // LXD's only
			r.invalid(size.option, err)
		}
		*size.to = n
	}
	if minutes, ok := r.integer("reconcile-interval"); ok {
		s.ReconcileInterval = minutesDuration(minutes)
	}
	s.LogLevel = r.str("runner-manager-log-level")
}

// defaultVirtualMachines is config.yaml's default for virtual-machines.
const defaultVirtualMachines = 1

// readPool reads how many runners the unit keeps: virtual-machines, the
// fixed pool, while base-virtual-machines and max-total-virtual-machines
// are both 0 (as the Python charm reads them); otherwise those two. A
// scale set of virtual-machines is a fixed pool too: its cap is the pool.
// (A number that is not whole is reported, and read as 0.)
func (r *configReader) readPool(s *Settings) {
	s.ScaleSet = r.str("runner-scale-set")
	pool, _ := r.integer("virtual-machines")
	base, _ := r.integer("base-virtual-machines")
	most, _ := r.integer("max-total-virtual-machines")
	if base == 0 && most == 0 {
		s.Runners = int(pool)
		if s.ScaleSet != "" && pool > 0 {
			s.MaxRunners = int(pool)
		}
		return
	}
	// Juju cannot tell a value left at its default from one set to it: an
	// operator who sets the new options and leaves virtual-machines alone
	// (its default, a runner, keeps upgraded units running) means them.
	if pool != 0 && pool != defaultVirtualMachines {
		r.problem("set either virtual-machines or base-virtual-machines/max-total-virtual-machines, not both (virtual-machines to 0 or its default 1 for the latter)")
	}
	s.Runners, s.MaxRunners, s.basePool = int(base), int(most), true
}

// minutesDuration is a number of minutes as a duration, saturated rather
// than wrapped when it is out of a duration's range, so that the rule on
// the interval sees how far out it is.
func minutesDuration(minutes int64) time.Duration {
	const most = math.MaxInt64 / int64(time.Minute)
	switch {
	case minutes > most:
		return math.MaxInt64
	case minutes < -most:
		return math.MinInt64
	}
	return time.Duration(minutes) * time.Minute
}

func (r *configReader) readNetwork(s *Settings) {
	denylist, err := config.ParseDenylist(r.str("denylist"))
	if err != nil {
		r.invalid("denylist", err)
	}
	s.Denylist = denylist
	// dockerhub-mirror and runner-http-proxy have their rules in
	// src/config: fileProblems applies them.
}

// openStackWanted tells OpenStack runners: clouds.yaml is set, or its
// secret option is (a secret that cannot be read is reported on its own,
// and the other OpenStack options are still checked).
func (r *configReader) openStackWanted() bool {
	return r.str("openstack-clouds-yaml") != "" || r.secretFailed("openstack-clouds-yaml")
}

func (r *configReader) readOpenStack(s *Settings) {
	o := &OpenStack{
		CloudsYAML: r.str("openstack-clouds-yaml"),
		Flavor:     r.str("openstack-flavor"),
		Network:    r.str("openstack-network"),
		Image:      r.str("openstack-image"),
		BaseImage:  r.str("openstack-base-image"),
	}
	if !r.openStackWanted() {
		return
	}
	// The clouds.yaml, flavor, network and image have their rules in
	// src/config: fileProblems applies them. The image relation's image
	// replaces openstack-image in readSettings (withImageRelation).
	s.OpenStack = o
}

// optionOf names the Juju option behind each field of the manager's
// config file, so a problem the file's validation finds names what the
// operator sets. Fields the charm fills in itself (unit, model, state-dir)
// have no option and keep their own names.
var optionOf = map[string]string{
	"runners":                    "virtual-machines", // base-virtual-machines when it is set (Settings.option)
	"max-runners":                "max-total-virtual-machines",
	"github.scale-set":           "runner-scale-set",
	"reconcile-interval":         "reconcile-interval",
	"log-level":                  "runner-manager-log-level",
	"github":                     "token",
	"github.path":                "path",
	"github.api-url":             "github-api-url",
	"github.token":               "token",
	"github.group":               "group",
	"github.labels":              "labels",
	"github.app":                 "github-app-private-key",
	"github.app.id":              "github-app-id",
	"github.app.client-id":       "github-app-client-id",
	"github.app.installation-id": "github-app-installation-id",
	"github.app.private-key":     "github-app-private-key",
	"runner.http-proxy":          "runner-http-proxy",
	"runner.https-proxy":         "runner-http-proxy",
	"runner.dockerhub-mirror":    "dockerhub-mirror",
	"runner.denylist":            "denylist",
	"runner.pre-job-script":      "pre-job-script",
	"lxd.type":                   "runner-type",
	"lxd.base-image":             "base-image",
	"lxd.cpu":                    "vm-cpu",
	"lxd.memory":                 "vm-memory",
	"lxd.disk":                   "vm-disk",
	"openstack":                  "openstack-clouds-yaml",
	"openstack.clouds-yaml":      "openstack-clouds-yaml",
	"openstack.flavor":           "openstack-flavor",
	"openstack.network":          "openstack-network",
	"openstack.image":            "openstack-image",
	"openstack.base-image":       "openstack-base-image",
}

// fileProblems are the problems src/config finds in the manager's config
// file these settings make, in option names: src/config holds the value
// rules, the charm only reads Juju's types. An option that already has a
// problem (a string where a number goes, a missing path) is not reported
// twice; the fields the charm fills in itself are checked in hostProblems,
// with the unit's real identity.
func fileProblems(s Settings, already []string) []string {
	f, err := managerConfig(s, placeholderModel, placeholderUnit, "/state-dir", Proxy{})
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for _, p := range s.optionProblems(f.Problems()) {
		option, _, _ := strings.Cut(p, " ")
		option = strings.TrimSuffix(option, ":")
		if !mentions(already, option) {
			problems = append(problems, p)
		}
	}
	return problems
}

// The identity fileProblems checks values with; hostProblems checks the
// real one.
const (
	placeholderModel = "00000000-0000-4000-8000-000000000000"
	placeholderUnit  = "github-runner/0"
)

func mentions(problems []string, option string) bool {
	word := regexp.MustCompile(`(^|[^a-z-])` + regexp.QuoteMeta(option) + `($|[^a-z-])`)
	for _, p := range problems {
		if word.MatchString(p) {
			return true
		}
	}
	return false
}

// optionProblems restates the config file's problems, of the file these
// settings make, in option names, each once (runner-http-proxy is both of
// the file's proxies).
func (s Settings) optionProblems(problems []config.Problem) []string {
	var texts []string
	for _, p := range problems {
		if option, ok := s.option(p.Field); ok {
			p.Field = option
		}
		if text := p.String(); !slices.Contains(texts, text) {
			texts = append(texts, text)
		}
	}
	return texts
}

// option names the option behind a field of the config file these
// settings make: the runner counts come from virtual-machines or from
// base-virtual-machines and max-total-virtual-machines (readPool).
func (s Settings) option(field string) (string, bool) {
	if field == "runners" && s.basePool {
		return "base-virtual-machines", true
	}
	option, ok := optionOf[field]
	if from := s.fromSecret[option]; from != "" {
		return from, true
	}
	return option, ok
}
