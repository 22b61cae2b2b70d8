package charm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/openstack"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service"
)

// fuzzSecretMark is in the secrets of the seed configs (token, App key,
// clouds.yaml): a problem text that shows it has quoted a secret, unless the
// input also put it in a non-secret option, whose value may be quoted.
const fuzzSecretMark = "S3CR3T"

var secretOptions = map[string]bool{"token": true, "github-app-private-key": true, "openstack-clouds-yaml": true}

// FuzzParseSettings feeds ParseSettings arbitrary config-get --all output
// (JSON, decoded as the hook tool client decodes it; seeds in
// testdata/fuzz/FuzzParseSettings): no panic; a rejection is an
// *InvalidConfigError whose every problem names the options of
// config.yaml it is about, none showing a secret (the unit is Blocked);
// accepted settings hold only valid values and make a config the manager
// starts with (checkManagerAccepts).
func FuzzParseSettings(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var raw map[string]any
		if dec.Decode(&raw) != nil {
			return
		}
		s, err := ParseSettings(raw)
		if err != nil {
			invalid, ok := err.(*InvalidConfigError)
			if !ok || len(invalid.Problems) == 0 {
				t.Fatalf("ParseSettings(%s) = %v, want an *InvalidConfigError with problems", data, err)
			}
			for _, p := range invalid.Problems {
				checkNamesOptions(t, data, p)
			}
			if strings.Contains(err.Error(), fuzzSecretMark) && !markInPlainOption(raw) {
				t.Fatalf("ParseSettings(%s) error %q shows a secret", data, err)
			}
			return
		}
		checkSettings(t, data, s)
		checkManagerAccepts(t, data, s)
	})
}

// checkManagerAccepts requires that settings the charm does not block on
// make a config file the manager starts with: what the manager does at
// start before it connects anywhere (src/service's Run, src/cmd's
// openCloud) is done here on the file the charm would write: it is read
// back through config.Read, the unit's identity is parsed, the GitHub
// client is made, and the cloud is opened as the manager opens it. A
// manager that refuses its file exits at start, and the unit is Blocked
// with what the charm should have said.
func checkManagerAccepts(t *testing.T, data []byte, s Settings) {
	t.Helper()
	c := testCharm(t, nil)
	if problems := c.hostProblems(s); len(problems) > 0 {
		for _, p := range problems {
			checkNamesOptions(t, data, p)
		}
		return // Blocked, naming the options
	}
	f, err := managerConfig(s, testModel, c.Unit, c.StateDir, Proxy{})
	if err != nil {
		t.Fatalf("ParseSettings(%s): cannot make the manager's config: %v", data, err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	read, err := config.Read(path)
	if err != nil {
		t.Fatalf("ParseSettings(%s) accepted settings whose config file the manager refuses: %v", data, err)
	}
	id, err := runner.ParseIdentity(read.Model, read.Unit)
	if err != nil {
		t.Fatalf("ParseSettings(%s) accepted settings whose identity the manager refuses: %v", data, err)
	}
	if name := read.GitHub.ScaleSet; name != "" && !strings.HasPrefix(id.ScaleSetName(name), name+"-") {
		t.Fatalf("ParseSettings(%s) accepted a scale-set name the unit's scale set cuts: %q", data, id.ScaleSetName(name))
	}
	if _, err := github.New(service.GitHubConfig(read, nil)); err != nil {
		t.Fatalf("ParseSettings(%s) accepted settings the manager's GitHub client refuses: %v", data, err)
	}
	if read.OpenStack != nil {
		_, err = openstack.New(openstack.Config{Identity: id, OpenStack: *read.OpenStack, Runner: read.Runner}, nil)
	} else {
		kvm := filepath.Join(t.TempDir(), "kvm") // testCharm's host has KVM
		if err := os.WriteFile(kvm, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = lxd.New(lxd.Config{Identity: id, LXD: *read.LXD, Runner: read.Runner, KVMDevice: kvm}, nil)
	}
	if err != nil {
		t.Fatalf("ParseSettings(%s) accepted settings whose cloud the manager cannot open: %v", data, err)
	}
}

// checkNamesOptions requires a problem to say which option is wrong, by
// the name config.yaml gives it: it starts with an option ("vm-cpu must
// …", "path: …"), or with the model's option ("the model's
// juju-http-proxy …"), or is about both credentials ("set either token or
// a GitHub App (github-app-id, …)") or both ways to count runners ("set
// either virtual-machines or …"); and every option-like name in it is
// an option of config.yaml.
func checkNamesOptions(t *testing.T, data []byte, problem string) {
	t.Helper()
	if strings.TrimSpace(problem) == "" {
		t.Fatalf("ParseSettings(%s): an empty problem", data)
	}
	first, _, _ := strings.Cut(problem, " ")
	first = strings.TrimSuffix(first, ":")
	if !charmOptions(t)[first] && !strings.HasPrefix(problem, "the model's juju-") && !strings.HasPrefix(problem, "set either token or a GitHub App (") &&
		!strings.HasPrefix(problem, "set either virtual-machines or ") {
		t.Fatalf("ParseSettings(%s): problem %q does not start with an option of config.yaml", data, problem)
	}
	for _, m := range optionLike.FindAllStringSubmatch(problem, -1) {
		name := m[1]
		if !charmOptions(t)[name] && !strings.HasPrefix(name, "juju-") {
			t.Fatalf("ParseSettings(%s): problem %q names %q, which is no option of config.yaml", data, problem, name)
		}
	}
}

// optionLike is a word shaped like a hyphenated option name, after a
// space, a parenthesis or a comma (a quoted value is not one).
var optionLike = regexp.MustCompile(`(?:^|[ (,/])((?:github|openstack|vm|runner|base|max|virtual|reconcile|dockerhub|juju)-[a-z-]*[a-z])\b`)

// charmOptions is the options config.yaml declares.
func charmOptions(t *testing.T) map[string]bool {
	t.Helper()
	optionsOnce.Do(func() {
		data, err := os.ReadFile("../config.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Options map[string]any `yaml:"options"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		options = map[string]bool{}
		for name := range doc.Options {
			options[name] = true
		}
	})
	return options
}

var (
	optionsOnce sync.Once
	options     map[string]bool
)

// markInPlainOption tells whether a non-secret option's value (which a
// problem may quote) or a key carries the mark.
func markInPlainOption(raw map[string]any) bool {
	for k, v := range raw {
		text, _ := v.(string)
		if strings.Contains(k, fuzzSecretMark) || !secretOptions[k] && strings.Contains(text, fuzzSecretMark) {
			return true
		}
	}
	return false
}

func checkSettings(t *testing.T, data []byte, s Settings) {
	t.Helper()
	fail := func(what string) { t.Fatalf("ParseSettings(%s) accepted %s: %+v", data, what, s) }
	if again, err := config.ParsePath(s.Path.String()); err != nil || again != s.Path {
		fail("a path that does not read back")
	}
	if (s.Token == "") == (s.App == nil) {
		fail("not exactly one of a token and an App")
	}
	if s.App != nil && (s.App.AppID <= 0 || s.App.InstallationID <= 0 || !validAppKey(s.App.PrivateKey)) {
		fail("an incomplete GitHub App")
	}
	if s.OpenStack == nil && (s.Memory <= 0 || s.Disk <= 0) {
		fail("a size that is not a positive number of bytes")
	}
	if labels, err := config.ParseLabels(strings.Join(s.Labels, ",")); err != nil || len(labels) != len(s.Labels) {
		fail("labels that do not read back")
	}
	if s.MaxRunners < 0 || s.MaxRunners != 0 && s.Runners > s.MaxRunners {
		fail("a cap below the base")
	}
	if s.ScaleSet != "" && !regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`).MatchString(s.ScaleSet) {
		fail("a scale-set name GitHub's client cannot take")
	}
	if s.Runners < 0 || s.CPU < 1 || s.ReconcileInterval < time.Minute || s.ReconcileInterval > 24*time.Hour || s.Group == "" {
		fail("a number out of range")
	}
	if s.RunnerType != RunnerTypeVM && s.RunnerType != RunnerTypeContainer {
		fail("a runner type")
	}
	if s.OpenStack != nil && (!validCloudsYAML(s.OpenStack.CloudsYAML) || s.OpenStack.Flavor == "" || s.OpenStack.Network == "" || s.OpenStack.Image == "") {
		fail("an incomplete OpenStack")
	}
}

func validCloudsYAML(text string) bool {
	_, err := config.ParseCloudsYAML(text, "")
	return err == nil
}

func validAppKey(key string) bool {
	_, err := config.ParseAppKey(key)
	return err == nil
}
