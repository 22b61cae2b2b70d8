package charm

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
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
// *InvalidConfigError whose every problem is a sentence, none showing a
// secret; accepted settings hold only valid values.
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
				if strings.TrimSpace(p) == "" {
					t.Fatalf("ParseSettings(%s): an empty problem in %q", data, invalid.Problems)
				}
				if !namesOption(p) {
					t.Fatalf("ParseSettings(%s): problem %q names no option", data, p)
				}
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
// make a config file the manager starts with: it reads back through the
// service's own validation, and the GitHub client the service makes from
// it is created. A manager that refuses its file exits at start, and the
// hook that replans it fails.
func checkManagerAccepts(t *testing.T, data []byte, s Settings) {
	t.Helper()
	const unit = "github-runner/0"
	if problems := testCharm(t, nil).hostProblems(s); len(problems) > 0 {
		for _, p := range problems {
			if !namesOption(p) {
				t.Fatalf("ParseSettings(%s): problem %q names no option", data, p)
			}
		}
		return // Blocked, naming the options
	}
	f, err := managerConfig(s, testModel, unit, t.TempDir(), Proxy{})
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
	if _, err := github.New(service.GitHubConfig(read, nil)); err != nil {
		t.Fatalf("ParseSettings(%s) accepted settings the manager's GitHub client refuses: %v", data, err)
	}
}

var optionName = regexp.MustCompile(`(^|[ (])(path|token|github-[a-z-]+|group|labels|virtual-machines|runner-type|base-image|vm-[a-z]+|reconcile-interval|denylist|dockerhub-mirror|runner-http-proxy|openstack-[a-z-]+)\b`)

// namesOption tells whether a problem names an option, or is one of the
// identity problems, which name Juju's environment.
func namesOption(problem string) bool {
	return optionName.MatchString(problem) || strings.Contains(problem, "JUJU_")
}

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
	if s.Runners < 0 || s.CPU < 1 || s.ReconcileInterval < time.Minute || s.Group == "" {
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
