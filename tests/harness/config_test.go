package harness_test

import (
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/harness"
)

// The manager refuses some values the charm used to accept, and then every
// hook that replans it failed ("exited quickly with code 1"). Each of these
// must be Blocked at install, naming the option, with no hook failing.
func TestValuesTheManagerRefusesAreBlockedAtInstall(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   string
	}{
		// 192.0.2.0/24 is TEST-NET-1: never loopback, never reached.
		{"http api url off loopback", map[string]any{"github-api-url": "http://192.0.2.1:8080/"}, "github-api-url"},
		{"api url path", map[string]any{"github-api-url": "https://ghes.example.com/some/where"}, "github-api-url"},
		{"api url credentials", map[string]any{"github-api-url": "https://user:hunter2@ghes.example.com"}, "github-api-url"},
		{"github.com with a path", map[string]any{"github-api-url": "https://github.com/canonical"}, "github-api-url"},
		{"token with a space", map[string]any{"token": "ghp_hunter2 x"}, "token must hold only visible ASCII characters"},
		{"app key not an RSA key", map[string]any{"token": "", "github-app-id": 1, "github-app-installation-id": 2,
			"github-app-private-key": "-----BEGIN PRIVATE KEY-----\naHVudGVyMg==\n-----END PRIVATE KEY-----\n"},
			"github-app-private-key must be the App's RSA private key"},
		{"clouds.yaml without credentials", map[string]any{"openstack-flavor": "f", "openstack-network": "n", "openstack-image": "i",
			"openstack-clouds-yaml": "clouds:\n  prod:\n    auth: {auth_url: https://keystone.example.com:5000/v3, password: hunter2}\n"},
			`openstack-clouds-yaml lacks required settings: cloud "prod" has no auth.username`},
		// The hook executes the script itself: without its shebang the
		// kernel could not, and every job would warn of it.
		{"pre-job-script without a shebang", map[string]any{"pre-job-script": "echo hunter2"}, "pre-job-script must start with a shebang line"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			config := map[string]any{}
			for k, v := range validConfig {
				config[k] = v
			}
			for k, v := range test.config {
				config[k] = v
			}
			u := harness.New(t, harness.Options{Leader: true})
			u.SetConfig(config)
			u.Deploy() // fails the test if any hook exits non-zero
			s := u.Status()
			if s.Status != "blocked" || !strings.Contains(s.Message, test.want) {
				t.Errorf("status = %+v, want blocked naming %s", s, test.want)
			}
			if strings.Contains(s.Message, "hunter2") {
				t.Errorf("status %q shows the URL's password", s.Message)
			}
			assertNoSecret(t, u)
		})
	}
}
