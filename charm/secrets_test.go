package charm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
)

// fakeSecrets is secret-get over a fixed set of user secrets: the URIs
// granted to the application, and the ones that exist but are not.
type fakeSecrets struct {
	granted    map[string]map[string]string
	notGranted map[string]bool
	fail       error // any other failure of the tool
	reads      []string
}

func (f *fakeSecrets) SecretGet(_ context.Context, uri string, refresh bool) (map[string]string, error) {
	f.reads = append(f.reads, fmt.Sprintf("%s refresh=%v", uri, refresh))
	switch {
	case f.fail != nil:
		return nil, f.fail
	case f.notGranted["secret:"+uri[len(uri)-20:]]:
		return nil, fmt.Errorf("cannot read secret %s: %w (ERROR permission denied)", uri, ErrSecretNotGranted)
	}
	content, ok := f.granted["secret:"+uri[len(uri)-20:]] // secret:<id> or secret://<model>/<id>
	if !ok {
		return nil, fmt.Errorf("cannot read secret %s: %w (ERROR secret %q not found)", uri, ErrSecretNotFound, uri)
	}
	return content, nil
}

// parseWithSecrets is readSettings without the host: the secrets resolved,
// then the settings parsed.
func parseWithSecrets(t *testing.T, raw map[string]any, secrets secretReader) (Settings, error) {
	t.Helper()
	if err := resolveSecrets(context.Background(), secrets, "runners-x", raw); err != nil {
		return Settings{}, err
	}
	return ParseSettings(raw)
}

const (
	tokenSecret     = "secret:d1dbdk0dn2vs79lqg7og"
	keySecret       = "secret:d1dbdk0dn2vs79lqg7p0"
	cloudsSecret    = "secret:d1dbdk0dn2vs79lqg7pg"
	otherSecret     = "secret:d1dbdk0dn2vs79lqg7q0"
	secretValueMark = "ghp_FROMTHESECRET0123456789abcdef"
)

// The secret options give the token, the App's key and clouds.yaml; each
// wins over its plain option; one that cannot be read blocks the unit with
// a problem naming the option and the fix, never a value.
func TestSettingsFromSecrets(t *testing.T) {
	key := testKey(t)
	secrets := func() *fakeSecrets {
		return &fakeSecrets{
			granted: map[string]map[string]string{
				tokenSecret:  {"github-token": secretValueMark},
				keySecret:    {"private-key": key},
				cloudsSecret: {"clouds-yaml": testCloudsYAML},
				otherSecret:  {"token": secretValueMark}, // not the field the option reads
			},
			notGranted: map[string]bool{"secret:d1dbdk0dn2vs79lqg7r0": true},
		}
	}
	openstack := map[string]any{"openstack-flavor": "m1.small", "openstack-network": "runners", "openstack-image": "noble"}
	tests := []struct {
		name   string
		config map[string]any
		check  func(t *testing.T, s Settings)
		want   []string // problems; none: valid
		unwant []string // said by no problem
	}{
		{name: "token", config: map[string]any{"token": "", "token-secret-id": tokenSecret},
			check: func(t *testing.T, s Settings) {
				if s.Token != secretValueMark {
					t.Errorf("token = %q, want the secret's", s.Token)
				}
			}},
		{name: "the secret wins over the plain token", config: map[string]any{"token": secretToken, "token-secret-id": tokenSecret},
			check: func(t *testing.T, s Settings) {
				if s.Token != secretValueMark {
					t.Errorf("token = %q, want the secret's", s.Token)
				}
			}},
		{name: "a bare secret ID", config: map[string]any{"token": "", "token-secret-id": strings.TrimPrefix(tokenSecret, "secret:")},
			check: func(t *testing.T, s Settings) {
				if s.Token != secretValueMark {
					t.Errorf("token = %q, want the secret's", s.Token)
				}
			}},
		{name: "the long URI, pasted with a newline", config: map[string]any{"token": "", "token-secret-id": " secret://3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10/" + strings.TrimPrefix(tokenSecret, "secret:") + "\n"},
			check: func(t *testing.T, s Settings) {
				if s.Token != secretValueMark {
					t.Errorf("token = %q, want the secret's", s.Token)
				}
			}},
		{name: "App by client ID with the key from a secret", config: map[string]any{
			"token": "", "github-app-client-id": "Iv1.0123456789abcdef", "github-app-installation-id": json.Number("42"),
			"github-app-private-key": "not a key", "github-app-private-key-secret-id": keySecret},
			check: func(t *testing.T, s Settings) {
				if s.App == nil || *s.App != (GitHubApp{ClientID: "Iv1.0123456789abcdef", InstallationID: 42, PrivateKey: strings.TrimSpace(key)}) {
					t.Errorf("App = %s, want the client ID and the secret's key", appString(s.App))
				}
			}},
		{name: "clouds.yaml", config: with2(openstack, map[string]any{"openstack-clouds-yaml-secret-id": cloudsSecret}),
			check: func(t *testing.T, s Settings) {
				if s.OpenStack == nil || s.OpenStack.CloudsYAML != strings.TrimSpace(testCloudsYAML) {
					t.Errorf("OpenStack = %v, want the secret's clouds.yaml", s.OpenStack != nil)
				}
			}},
		{name: "not granted", config: map[string]any{"token": secretToken, "token-secret-id": "secret:d1dbdk0dn2vs79lqg7r0"},
			want:   []string{"token-secret-id names secret:d1dbdk0dn2vs79lqg7r0, which is not granted to runners-x: run `juju grant-secret secret:d1dbdk0dn2vs79lqg7r0 runners-x`"},
			unwant: []string{"token is required"}},
		{name: "no such secret", config: map[string]any{"token": "", "token-secret-id": "secret:d1dbdk0dn2vs79lqg7s0"},
			want:   []string{"token-secret-id names secret:d1dbdk0dn2vs79lqg7s0, which does not exist: create it with `juju add-secret <name> github-token=...`"},
			unwant: []string{"token is required"}},
		{name: "no such field", config: map[string]any{"token": "", "token-secret-id": otherSecret},
			want:   []string{"token-secret-id names " + otherSecret + ", which has no github-token field: run `juju update-secret " + otherSecret + " github-token=...`"},
			unwant: []string{"token is required"}},
		{name: "not a secret URI", config: map[string]any{"token": "", "token-secret-id": secretValueMark},
			want:   []string{"token-secret-id must be a Juju secret's URI, such as secret:"},
			unwant: []string{"token is required"}},
		{name: "the secret's token is no token", config: map[string]any{"token": "", "token-secret-id": "secret:d1dbdk0dn2vs79lqg7t0"},
			want:   []string{"token-secret-id must hold only visible ASCII characters, no spaces"},
			unwant: []string{"token must", "token:"}},
		{name: "the App's key secret not granted", config: map[string]any{
			"token": "", "github-app-id": json.Number("7"), "github-app-installation-id": json.Number("42"),
			"github-app-private-key-secret-id": "secret:d1dbdk0dn2vs79lqg7r0"},
			want:   []string{"github-app-private-key-secret-id names secret:d1dbdk0dn2vs79lqg7r0, which is not granted to runners-x: run `juju grant-secret"},
			unwant: []string{"github-app-private-key must", "github-app-private-key-secret-id must"}},
		{name: "clouds.yaml secret missing: the other OpenStack options still checked", config: map[string]any{
			"openstack-clouds-yaml-secret-id": "secret:d1dbdk0dn2vs79lqg7s0", "openstack-image": "noble", "vm-memory": "lots"},
			want: []string{"openstack-clouds-yaml-secret-id names secret:d1dbdk0dn2vs79lqg7s0, which does not exist",
				"openstack-flavor is required", "openstack-network is required"},
			unwant: []string{"vm-memory", "openstack-clouds-yaml is", "openstack-clouds-yaml-secret-id is"}},
		{name: "token secret with an App", config: map[string]any{
			"token": "", "token-secret-id": tokenSecret, "github-app-id": json.Number("7")},
			want: []string{"set either token-secret-id or a GitHub App"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			fake := secrets()
			fake.granted["secret:d1dbdk0dn2vs79lqg7t0"] = map[string]string{"github-token": "ghp_SECRET WITH SPACE"}
			s, err := parseWithSecrets(t, with(test.config), fake)
			for _, read := range fake.reads {
				if !strings.HasSuffix(read, "refresh=true") || !strings.HasPrefix(read, "secret:") {
					t.Errorf("secret-get %s, want a secret: URI with --refresh (the latest revision, tracked)", read)
				}
			}
			if len(test.want) == 0 {
				if err != nil {
					t.Fatalf("ParseSettings: %v", err)
				}
				test.check(t, s)
				return
			}
			var invalid *InvalidConfigError
			if !errors.As(err, &invalid) {
				t.Fatalf("error = %v, want an *InvalidConfigError", err)
			}
			msg := invalid.Error()
			for _, want := range test.want {
				if !strings.Contains(msg, want) {
					t.Errorf("problems %q do not say %q", invalid.Problems, want)
				}
			}
			for _, unwant := range test.unwant {
				if strings.Contains(msg, unwant) {
					t.Errorf("problems %q say %q", invalid.Problems, unwant)
				}
			}
			for _, secret := range []string{secretValueMark, secretToken, "SECRET WITH SPACE", "hunter2", key[40:80]} {
				if strings.Contains(msg, secret) {
					t.Errorf("problems %q show a secret", invalid.Problems)
				}
			}
		})
	}
}

func with2(a, b map[string]any) map[string]any {
	m := map[string]any{}
	for _, x := range []map[string]any{a, b} {
		for k, v := range x {
			m[k] = v
		}
	}
	return m
}

// A secret-get that fails for another reason than the secret (the agent
// gone, the tool timing out) fails the hook, for Juju to retry it: the
// unit is not Blocked on what the operator cannot fix, and the plain
// option is not used instead.
func TestSecretToolFailureFailsTheHook(t *testing.T) {
	fake := &fakeSecrets{fail: errors.New("cannot run secret-get: signal: killed")}
	_, err := parseWithSecrets(t, with(map[string]any{"token-secret-id": tokenSecret}), fake)
	var invalid *InvalidConfigError
	if err == nil || errors.As(err, &invalid) || !strings.Contains(err.Error(), "cannot read token-secret-id's secret") {
		t.Fatalf("error = %v, want a hook error naming token-secret-id", err)
	}
	if strings.Contains(err.Error(), secretToken) {
		t.Errorf("error %q shows the plain token", err)
	}
}

// An unset secret option reads no secret: the plain option is used.
func TestNoSecretOptionReadsNoSecret(t *testing.T) {
	fake := &fakeSecrets{fail: errors.New("secret-get must not run")}
	s, err := parseWithSecrets(t, with(map[string]any{"token-secret-id": "", "github-app-private-key-secret-id": nil}), fake)
	if err != nil {
		t.Fatal(err)
	}
	if s.Token != secretToken || len(fake.reads) != 0 {
		t.Errorf("token %q, secret reads %q; want the plain token and none", s.Token, fake.reads)
	}
}

// The App is named by its client ID or its numeric ID, one of the two.
func TestSettingsAppClientID(t *testing.T) {
	key := testKey(t)
	app := func(m map[string]any) map[string]any {
		return with(with2(map[string]any{"token": "", "github-app-installation-id": json.Number("42"), "github-app-private-key": key}, m))
	}
	tests := []struct {
		name string
		raw  map[string]any
		want *GitHubApp
		prob string
	}{
		{"client ID", app(map[string]any{"github-app-client-id": "Iv1.0123456789abcdef"}), &GitHubApp{ClientID: "Iv1.0123456789abcdef", InstallationID: 42, PrivateKey: strings.TrimSpace(key)}, ""},
		{"numeric ID", app(map[string]any{"github-app-id": json.Number("17")}), &GitHubApp{AppID: 17, InstallationID: 42, PrivateKey: strings.TrimSpace(key)}, ""},
		{"both", app(map[string]any{"github-app-id": json.Number("17"), "github-app-client-id": "Iv1.0123456789abcdef"}), nil,
			"github-app-client-id and github-app-id both name the App: set one of them"},
		{"neither", app(nil), nil, "github-app-client-id is required for a GitHub App"},
		{"client ID with a space", app(map[string]any{"github-app-client-id": "Iv1 0123"}), nil, "github-app-client-id must be the App's client ID"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			s, err := ParseSettings(test.raw)
			if test.prob != "" {
				if err == nil || !strings.Contains(err.Error(), test.prob) {
					t.Fatalf("error = %v, want one saying %q", err, test.prob)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.App == nil || *s.App != *test.want {
				t.Errorf("App = %s, want %s", appString(s.App), appString(test.want))
			}
			f, err := managerConfig(s, testModel, "github-runner/0", "/state", Proxy{})
			if err != nil {
				t.Fatal(err)
			}
			if f.GitHub.App.ClientID != test.want.ClientID || f.GitHub.App.ID != test.want.AppID {
				t.Errorf("the manager's App = %d/%q, want %s", f.GitHub.App.ID, f.GitHub.App.ClientID, appString(test.want))
			}
		})
	}
}

// A rotated credential is a new identity: the idle runners registered with
// the old one go (drainBefore); the client ID is part of the App's.
func TestDrainOnCredentialChange(t *testing.T) {
	base := func() *config.File {
		return &config.File{GitHub: config.GitHub{Path: "canonical", App: &config.GitHubApp{ClientID: "Iv1.aaaa", InstallationID: 1, PrivateKey: "k"}}, LXD: &config.LXD{}}
	}
	tests := []struct {
		name   string
		change func(*config.File)
		drain  bool
	}{
		{"nothing", func(*config.File) {}, false},
		{"client ID", func(f *config.File) { f.GitHub.App.ClientID = "Iv1.bbbb" }, true},
		{"client ID to the numeric ID", func(f *config.File) { f.GitHub.App.ClientID, f.GitHub.App.ID = "", 7 }, true},
		{"private key", func(f *config.File) { f.GitHub.App.PrivateKey = "k2" }, true},
		{"App to token", func(f *config.File) { f.GitHub.App, f.GitHub.Token = nil, "t" }, true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			next := base()
			test.change(next)
			if drain, busy := drainBefore(base(), next); drain != test.drain || busy {
				t.Errorf("drainBefore = %v, %v; want %v, false", drain, busy, test.drain)
			}
		})
	}
}

// appString shows an App without its key.
func appString(a *GitHubApp) string {
	if a == nil {
		return "no App"
	}
	return fmt.Sprintf("{AppID:%d ClientID:%q InstallationID:%d key:%d bytes}", a.AppID, a.ClientID, a.InstallationID, len(a.PrivateKey))
}

// rawString reads a plain option whether its value is its own or its
// secret option's.
func TestRawString(t *testing.T) {
	raw := with(map[string]any{"openstack-clouds-yaml-secret-id": cloudsSecret, "labels": " a,b "})
	if err := resolveSecrets(context.Background(), &fakeSecrets{granted: map[string]map[string]string{cloudsSecret: {"clouds-yaml": testCloudsYAML}}}, "x", raw); err != nil {
		t.Fatal(err)
	}
	if got := rawString(raw, "openstack-clouds-yaml"); got != strings.TrimSpace(testCloudsYAML) {
		t.Errorf("rawString(clouds-yaml) is not the secret's clouds.yaml")
	}
	if got := rawString(raw, "labels"); got != "a,b" {
		t.Errorf("rawString(labels) = %q", got)
	}
	if got := rawString(raw, "nope"); got != "" {
		t.Errorf("rawString(nope) = %q", got)
	}
}
