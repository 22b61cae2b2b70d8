package charm

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// defaults mirrors config.yaml's defaults as config-get --all returns them.
func defaults() map[string]any {
	return map[string]any{
		"path": "", "token": "", "github-api-url": "https://api.github.com", "group": "default",
		"labels": "", "virtual-machines": json.Number("1"), "runner-type": "virtual-machine",
		"base-image": "noble", "vm-cpu": json.Number("2"), "vm-memory": "7GiB", "vm-disk": "10GiB",
		"reconcile-interval": json.Number("5"), "denylist": "", "dockerhub-mirror": "",
		"runner-http-proxy": "", "openstack-clouds-yaml": "", "openstack-flavor": "",
		"openstack-network": "", "openstack-image": "", "github-app-id": json.Number("0"),
		"github-app-installation-id": json.Number("0"), "github-app-private-key": "",
		"base-virtual-machines": json.Number("0"), "max-total-virtual-machines": json.Number("0"), "runner-scale-set": "",
		"pre-job-script": "", "allow-external-contributor": true,
	}
}

const secretToken = "ghp_SECRETSECRETSECRET0123456789"

func with(changes map[string]any) map[string]any {
	raw := defaults()
	raw["path"], raw["token"] = "canonical/runners", secretToken
	for k, v := range changes {
		raw[k] = v
	}
	return raw
}

func testKey(t *testing.T) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

func TestParseSettingsValid(t *testing.T) {
	s, err := ParseSettings(with(map[string]any{
		"labels": "gpu, large,", "denylist": "10.0.0.0/8, 192.168.1.7/32", "reconcile-interval": json.Number("2"),
		"dockerhub-mirror": "https://mirror.example.com", "runner-type": "container",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Path.Owner != "canonical" || s.Path.Repo != "runners" || s.Token != secretToken || s.App != nil {
		t.Errorf("path/auth = %+v %q %v", s.Path, s.Token, s.App)
	}
	if strings.Join(s.Labels, "|") != "gpu|large" || len(s.Denylist) != 2 || s.ReconcileInterval != 2*time.Minute {
		t.Errorf("labels %v denylist %v interval %v", s.Labels, s.Denylist, s.ReconcileInterval)
	}
	if s.Runners != 1 || s.CPU != 2 || s.Memory != 7<<30 || s.RunnerType != RunnerTypeContainer || s.OpenStack != nil {
		t.Errorf("runner settings = %+v", s)
	}
}

// virtual-machines is the fixed pool while base-virtual-machines and
// max-total-virtual-machines are 0; in a scale set it is fixed too (base and
// cap). The new options give the base and the cap.
func TestParseSettingsScaling(t *testing.T) {
	tests := []struct {
		name         string
		changes      map[string]any
		runners, max int
		scaleSet     string
	}{
		{"default", nil, 1, 0, ""},
		{"virtual-machines", map[string]any{"virtual-machines": json.Number("3")}, 3, 0, ""},
		{"virtual-machines in a scale set", map[string]any{"virtual-machines": json.Number("3"), "runner-scale-set": "linux"}, 3, 3, "linux"},
		{"base and max", map[string]any{"virtual-machines": json.Number("0"), "base-virtual-machines": json.Number("1"), "max-total-virtual-machines": json.Number("4"),
			"runner-scale-set": " linux "}, 1, 4, "linux"},
		{"base alone", map[string]any{"virtual-machines": json.Number("0"), "base-virtual-machines": json.Number("2")}, 2, 0, ""},
		{"max alone", map[string]any{"virtual-machines": json.Number("0"), "max-total-virtual-machines": json.Number("5"), "runner-scale-set": "x"}, 0, 5, "x"},
	}
	for _, test := range tests {
		s, err := ParseSettings(with(test.changes))
		if err != nil {
			t.Errorf("%s: %v", test.name, err)
			continue
		}
		if s.Runners != test.runners || s.MaxRunners != test.max || s.ScaleSet != test.scaleSet {
			t.Errorf("%s: runners %d max %d scale set %q, want %d %d %q", test.name, s.Runners, s.MaxRunners, s.ScaleSet, test.runners, test.max, test.scaleSet)
		}
		f, err := managerConfig(s, testModel, "github-runner/0", "/x", Proxy{})
		if err != nil || f.Runners != test.runners || f.MaxRunners != test.max || f.GitHub.ScaleSet != test.scaleSet {
			t.Errorf("%s: config file %+v, %v", test.name, f, err)
		}
	}
}

func TestParseSettingsGitHubApp(t *testing.T) {
	key := testKey(t)
	s, err := ParseSettings(with(map[string]any{
		"token": "", "github-app-id": json.Number("123"), "github-app-installation-id": json.Number("456"),
		"github-app-private-key": key,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.App == nil || s.App.AppID != 123 || s.App.InstallationID != 456 || s.App.PrivateKey != strings.TrimSpace(key) {
		t.Errorf("app = %+v", s.App)
	}
}

// testCloudsYAML has all a password authentication needs.
const testCloudsYAML = "clouds:\n  prod:\n    auth: {auth_url: https://keystone:5000/v3, username: u, password: hunter2, project_name: p, user_domain_name: d, project_domain_name: d}\n"

func TestParseSettingsOpenStack(t *testing.T) {
	s, err := ParseSettings(with(map[string]any{
		"openstack-clouds-yaml": testCloudsYAML,
		"openstack-flavor":      "m1.small", "openstack-network": "runners", "openstack-image": "runner-noble",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.OpenStack == nil || s.OpenStack.Flavor != "m1.small" || s.OpenStack.Network != "runners" {
		t.Errorf("openstack = %+v", s.OpenStack)
	}
}

func TestParseSettingsProblems(t *testing.T) {
	tests := []struct {
		name    string
		changes map[string]any
		want    []string // each must appear in the message
	}{
		{"empty config", map[string]any{"path": "", "token": ""}, []string{"path is required", "token is required"}},
		{"path with three parts", map[string]any{"path": "a/b/c"}, []string{`path: "a/b/c" is neither`}},
		{"path with spaces", map[string]any{"path": "my org"}, []string{"path:"}},
		{"bad label", map[string]any{"labels": "ok,not ok,x.y"}, []string{`labels: "not ok", "x.y" may only contain`}},
		{"negative runners", map[string]any{"virtual-machines": json.Number("-1")}, []string{"virtual-machines must be 0 or more"}},
		{"virtual-machines with base", map[string]any{"virtual-machines": json.Number("2"), "base-virtual-machines": json.Number("1")},
			[]string{"set either virtual-machines or base-virtual-machines/max-total-virtual-machines, not both"}},
		{"virtual-machines with max", map[string]any{"virtual-machines": json.Number("3"), "max-total-virtual-machines": json.Number("4")},
			[]string{"set either virtual-machines or base-virtual-machines/max-total-virtual-machines, not both"}},
		{"base above max", map[string]any{"virtual-machines": json.Number("0"), "base-virtual-machines": json.Number("3"), "max-total-virtual-machines": json.Number("2")},
			[]string{"max-total-virtual-machines must be 0 (no cap) or at least the base of 3 runners, not 2"}},
		{"negative base", map[string]any{"virtual-machines": json.Number("0"), "base-virtual-machines": json.Number("-1"), "max-total-virtual-machines": json.Number("2")},
			[]string{"base-virtual-machines must be 0 or more, not -1"}},
		{"negative max", map[string]any{"virtual-machines": json.Number("0"), "max-total-virtual-machines": json.Number("-2")},
			[]string{"max-total-virtual-machines must be 0 (no cap) or more, not -2"}},
		{"base not a number", map[string]any{"base-virtual-machines": "many"}, []string{"base-virtual-machines must be a whole number"}},
		{"scale set name", map[string]any{"runner-scale-set": "linux x64"}, []string{`runner-scale-set: "linux x64" may only contain letters, digits`}},
		{"scale set name too long", map[string]any{"runner-scale-set": strings.Repeat("n", 37)}, []string{`runner-scale-set: "` + strings.Repeat("n", 37) + `" is too long: the unit's scale set`}},
		{"no cpu", map[string]any{"vm-cpu": json.Number("0")}, []string{"vm-cpu must be at least 1"}},
		{"memory unit", map[string]any{"vm-memory": "7GB"}, []string{`vm-memory: "7GB" is not a size`}},
		{"disk zero", map[string]any{"vm-disk": "0GiB"}, []string{`vm-disk: "0GiB" must be more than zero`}},
		{"interval", map[string]any{"reconcile-interval": json.Number("0")}, []string{"reconcile-interval must be at least 1 minute and at most 1 day"}},
		{"interval over a day", map[string]any{"reconcile-interval": json.Number("1441")}, []string{"reconcile-interval must be at least 1 minute and at most 1 day"}},
		// 307445736 minutes wraps a duration around to 86 s.
		{"interval past a duration", map[string]any{"reconcile-interval": json.Number("307445736")}, []string{"reconcile-interval must be at least 1 minute and at most 1 day"}},
		{"negative interval past a duration", map[string]any{"reconcile-interval": json.Number("-307445736")}, []string{"reconcile-interval must be at least 1 minute and at most 1 day"}},
		{"mirror http", map[string]any{"dockerhub-mirror": "http://mirror"}, []string{"dockerhub-mirror must be an https:// URL"}},
		{"mirror with a quote", map[string]any{"dockerhub-mirror": "https://mirror.example.com/'x"}, []string{"dockerhub-mirror must be an https:// URL"}},
		{"denylist", map[string]any{"denylist": "10.0.0.0/8,fe80::/10,10.1.1.1"}, []string{`denylist: "fe80::/10", "10.1.1.1" are not an IPv4 CIDR`}},
		{"runner type", map[string]any{"runner-type": "pod"}, []string{`runner-type must be "virtual-machine" or "container", not "pod"`}},
		{"api url scheme", map[string]any{"github-api-url": "ftp://x"}, []string{`github-api-url: "ftp://x" must use https`}},
		{"api url http off loopback", map[string]any{"github-api-url": "http://192.0.2.1:8080/"}, []string{`github-api-url: "http://192.0.2.1:8080/" must use https`}},
		{"api url path", map[string]any{"github-api-url": "https://ghes.example.com/x"}, []string{"github-api-url: \"https://ghes.example.com/x\" is not a URL like"}},
		{"api url password", map[string]any{"github-api-url": "https://u:hunter2@ghes.example.com"}, []string{"github-api-url must not contain credentials"}},
		{"proxy", map[string]any{"runner-http-proxy": "proxy:3128"}, []string{"runner-http-proxy must be an http(s) URL"}},
		{"proxy with a space", map[string]any{"runner-http-proxy": "http://u:hunter2 x@proxy:3128"}, []string{"runner-http-proxy must be an http(s) URL"}},
		{"sizes on OpenStack are not read", map[string]any{"vm-memory": "lots", "openstack-clouds-yaml": testCloudsYAML, "openstack-flavor": "f", "openstack-network": "n"},
			[]string{"openstack-image is required"}},
		{"clouds not yaml", map[string]any{"openstack-clouds-yaml": "clouds: [password: hunter2", "openstack-flavor": "f", "openstack-network": "n", "openstack-image": "i"},
			[]string{"openstack-clouds-yaml is not valid clouds.yaml: cannot parse it as YAML (line"}},
		{"clouds wrong type", map[string]any{"openstack-clouds-yaml": "clouds: hunter2", "openstack-flavor": "f", "openstack-network": "n", "openstack-image": "i"},
			[]string{"openstack-clouds-yaml is not valid clouds.yaml"}},
		{"clouds empty", map[string]any{"openstack-clouds-yaml": "clouds: {}", "openstack-flavor": "f", "openstack-network": "n", "openstack-image": "i"},
			[]string{"openstack-clouds-yaml is not valid clouds.yaml: it has no clouds"}},
		{"clouds without credentials", map[string]any{"openstack-clouds-yaml": "clouds:\n  prod:\n    auth: {auth_url: https://keystone:5000/v3, password: hunter2}\n",
			"openstack-flavor": "f", "openstack-network": "n", "openstack-image": "i"},
			[]string{`openstack-clouds-yaml lacks required settings: cloud "prod" has no auth.username (or user_id), auth.project_name (or project_id)`}},
		{"openstack without flavor, network and image", map[string]any{"openstack-clouds-yaml": testCloudsYAML},
			[]string{"openstack-flavor is required", "openstack-network is required", "openstack-image is required"}},
		{"token and app", map[string]any{"github-app-id": json.Number("1")}, []string{"set either token or a GitHub App"}},
		{"app incomplete", map[string]any{"token": "", "github-app-id": json.Number("1"), "github-app-private-key": "hunter2"},
			[]string{"github-app-installation-id must be", "github-app-private-key must be the App's RSA private key in PEM"}},
		{"app key not a key", map[string]any{"token": "", "github-app-id": json.Number("1"), "github-app-installation-id": json.Number("2"),
			"github-app-private-key": "-----BEGIN PRIVATE KEY-----\naHVudGVyMg==\n-----END PRIVATE KEY-----\n"},
			[]string{"github-app-private-key must be the App's RSA private key in PEM"}},
		{"token with a space", map[string]any{"token": "ghp_hunter2 x"}, []string{"token must hold only visible ASCII characters"}},
		{"token not ascii", map[string]any{"token": "ghp_hunter2…"}, []string{"token must hold only visible ASCII characters"}},
		{"int as string", map[string]any{"vm-cpu": "two"}, []string{"vm-cpu must be a whole number"}},
		{"empty group", map[string]any{"group": " "}, []string{"group must name a runner group"}},
		{"pre-job-script without a shebang", map[string]any{"pre-job-script": "echo hello"},
			[]string{`pre-job-script must start with a shebang line naming its interpreter, such as "#!/bin/bash"`}},
		{"pre-job-script with a relative interpreter", map[string]any{"pre-job-script": "#!bash\necho hello"},
			[]string{"pre-job-script must start with a shebang line"}},
		{"pre-job-script too big", map[string]any{"pre-job-script": "#!/bin/sh\n" + strings.Repeat("#", 16<<10)},
			[]string{"pre-job-script must be at most 16 KiB, not 16394 bytes"}},
		{"allow-external-contributor not a boolean", map[string]any{"allow-external-contributor": "no"},
			[]string{"allow-external-contributor must be true or false"}},
		{"every problem at once", map[string]any{"path": "", "labels": "a b", "vm-cpu": json.Number("0")},
			[]string{"path is required", "labels:", "vm-cpu must be"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := ParseSettings(with(test.changes))
			invalid, ok := err.(*InvalidConfigError)
			if !ok {
				t.Fatalf("error = %v, want *InvalidConfigError", err)
			}
			msg := invalid.Error()
			for _, want := range test.want {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not say %q", msg, want)
				}
			}
			if len(invalid.Problems) != len(test.want) && test.name != "empty config" {
				t.Errorf("problems = %q, want %d", invalid.Problems, len(test.want))
			}
			for _, secret := range []string{secretToken, "hunter2"} {
				if strings.Contains(msg, secret) {
					t.Errorf("message %q reveals a secret", msg)
				}
			}
		})
	}
}

// An operator switching to the new options need not touch virtual-machines:
// at its default it gives way (Juju cannot tell it from one set to 1).
func TestParseSettingsNewPoolOptionsBesideTheDefault(t *testing.T) {
	for _, pool := range []string{"0", "1"} {
		s, err := ParseSettings(with(map[string]any{
			"virtual-machines": json.Number(pool), "base-virtual-machines": json.Number("2"), "max-total-virtual-machines": json.Number("4"),
		}))
		if err != nil {
			t.Fatalf("virtual-machines=%s: %v", pool, err)
		}
		if s.Runners != 2 || s.MaxRunners != 4 {
			t.Errorf("virtual-machines=%s: runners %d max %d, want 2 and 4", pool, s.Runners, s.MaxRunners)
		}
	}
}
