package harness_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
)

// Tests of the credentials in Juju secrets through the packed charm, with
// Juju's secret-get and secret-changed (tests/harness/secrets.go) and the
// real manager under Pebble against the fake GitHub.

// plainToken is a token the fake GitHub refuses, set in the plain option
// beside a secret option that wins over it.
const plainToken = "ghp_PLAIN_FALLBACK_NOT_USED_0123456789"

// drainStatus is what configure says while it drains the idle runners of
// the previous credentials.
const drainStatus = "removing the idle runners made with the previous settings"

// managerConfigFile is the unit's manager config file, as the manager reads it.
func managerConfigFile(t *testing.T, u *harness.Unit) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(u.StateDir(), "config.yaml"))
	if err != nil {
		t.Fatalf("the manager's config file: %v", err)
	}
	return string(data)
}

// assertSecretsOnlyInConfig checks that none of secrets reached anything
// the operator or another user sees: statuses, the unit's log, hook
// stderr, any file of the unit's state but the manager's 0600 config file
// and its 0600 record of scopes, and the command lines of the unit's
// processes (the manager's, Pebble's).
func assertSecretsOnlyInConfig(t *testing.T, u *harness.Unit, secrets ...string) {
	t.Helper()
	var seen []string
	for _, s := range u.StatusHistory() {
		seen = append(seen, "status "+s.Message)
	}
	for _, l := range u.Logs() {
		seen = append(seen, "log "+l.Message)
	}
	for _, pid := range []int{u.ManagerPID(), u.PebblePID()} {
		if pid != 0 {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			environ, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
			seen = append(seen, "argv "+string(cmdline), "environment "+string(environ))
		}
	}
	configFile := filepath.Join(u.StateDir(), "config.yaml")
	filepath.Walk(u.StateDir(), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || info.Mode()&os.ModeSocket != 0 {
			return nil
		}
		if (path == configFile || filepath.Base(path) == "scopes.json") && info.Mode().Perm() == 0o600 {
			return nil
		}
		data, _ := os.ReadFile(path)
		seen = append(seen, "file "+path+": "+string(data))
		return nil
	})
	for _, s := range seen {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				what, _, _ := strings.Cut(s, ":")
				t.Errorf("a secret leaked into %s", strings.SplitN(what, "\n", 2)[0])
			}
		}
	}
}

// statusesSince are the statuses set after the first n.
func statusesSince(u *harness.Unit, n int) []string {
	var texts []string
	for _, s := range u.StatusHistory()[n:] {
		texts = append(texts, s.Status+": "+s.Message)
	}
	return texts
}

func containsText(texts []string, part string) bool {
	for _, s := range texts {
		if strings.Contains(s, part) {
			return true
		}
	}
	return false
}

// The token comes from a granted secret and wins over the plain option; a
// new revision (juju update-secret) fires secret-changed, which gives the
// manager the new token and replaces the idle runners of the old one,
// while a revision with the same token changes nothing.
func TestTokenFromSecretRotated(t *testing.T) {
	config, srv := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	uri := u.AddSecret(map[string]string{"github-token": token})
	u.GrantSecret(uri)
	config["token"], config["token-secret-id"] = plainToken, uri
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Fatalf("status after deploy = %+v", s)
	}
	if file := managerConfigFile(t, u); !strings.Contains(file, token) || strings.Contains(file, plainToken) {
		t.Fatalf("the manager's config does not hold the secret's token (or holds the plain one)")
	}
	if got := u.TrackedRevision(uri); got != 1 {
		t.Fatalf("tracked revision %d, want 1 (the charm reads the secret, so it tracks it)", got)
	}

	// The same token in a new revision: nothing to drain, the same config.
	before, n := managerConfigFile(t, u), len(u.StatusHistory())
	hooks := len(u.Hooks())
	if r := u.UpdateSecret(uri, map[string]string{"github-token": token}); r.Code != 0 || len(u.Hooks()) != hooks+1 || u.Hooks()[hooks].Name != "secret-changed" {
		t.Fatalf("update-secret: exit %d, hooks %d → %d; want secret-changed, exit 0", r.Code, hooks, len(u.Hooks()))
	}
	if got := u.TrackedRevision(uri); got != 2 {
		t.Errorf("tracked revision %d after secret-changed, want 2 (--refresh)", got)
	}
	if got := statusesSince(u, n); containsText(got, drainStatus) {
		t.Errorf("a revision with the same token drained the runners: %q", got)
	}
	if managerConfigFile(t, u) != before {
		t.Errorf("a revision with the same token changed the manager's config")
	}

	// A new token: the manager gets it, the idle runners go first.
	const rotated = "ghp_ROTATED_SECRET_TOKEN_0123456789ab"
	srv.AddToken(fakegithub.Token{Value: rotated})
	n = len(u.StatusHistory())
	if r := u.UpdateSecret(uri, map[string]string{"github-token": rotated}); r.Code != 0 {
		t.Fatalf("secret-changed exit %d: %s", r.Code, r.Stderr)
	}
	if file := managerConfigFile(t, u); !strings.Contains(file, rotated) || strings.Contains(file, token) {
		t.Errorf("the manager's config after the rotation does not hold the new token alone")
	}
	if got := statusesSince(u, n); !containsText(got, drainStatus) {
		t.Errorf("statuses after the rotation %q, want %q first", got, drainStatus)
	}
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Errorf("status after the rotation = %+v", s)
	}
	assertSecretsOnlyInConfig(t, u, token, rotated)
}

// A secret that cannot be read blocks the unit with the option and the
// fix, whatever the plain option holds (the secret wins); the fix clears
// it: a grant (which fires no hook: update-status applies it), a new
// secret, or a revision with the field (secret-changed).
func TestTokenSecretProblemsBlockThenFixed(t *testing.T) {
	tests := []struct {
		name    string
		content map[string]string // the secret's; nil: none exists
		grant   bool
		want    string // %s: the secret's URI
		fix     func(t *testing.T, u *harness.Unit, uri string) harness.HookResult
	}{
		{
			name: "not granted", content: map[string]string{"github-token": token},
			want: "token-secret-id names %s, which is not granted to runners-x: run `juju grant-secret %s runners-x`",
			fix: func(t *testing.T, u *harness.Unit, uri string) harness.HookResult {
				u.GrantSecret(uri)
				return u.Hook("update-status")
			},
		},
		{
			name: "no such secret",
			want: "token-secret-id names %s, which does not exist: create it with `juju add-secret <name> github-token=...`",
			fix: func(t *testing.T, u *harness.Unit, _ string) harness.HookResult {
				uri := u.AddSecret(map[string]string{"github-token": token})
				u.GrantSecret(uri)
				return u.Configure(map[string]any{"token-secret-id": uri})
			},
		},
		{
			name: "no such field", content: map[string]string{"token": token}, grant: true,
			want: "token-secret-id names %s, which has no github-token field: run `juju update-secret %s github-token=...`",
			fix: func(t *testing.T, u *harness.Unit, uri string) harness.HookResult {
				before := len(u.Hooks())
				r := u.UpdateSecret(uri, map[string]string{"github-token": token})
				if hooks := u.Hooks(); len(hooks) != before+1 || hooks[before].Name != "secret-changed" {
					t.Errorf("the new revision fired no secret-changed: the charm does not track the secret")
				}
				return r
			},
		},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			config, _ := withFakeGitHub(t) // its token is valid: the plain option would work
			u := harness.New(t, harness.Options{App: "runners-x", Leader: true})
			uri := "secret:d0000000000000000000" // never added
			if test.content != nil {
				uri = u.AddSecret(test.content)
			}
			if test.grant {
				u.GrantSecret(uri)
			}
			config["token-secret-id"] = uri
			u.SetConfig(config)
			u.Deploy() // fails the test if a hook exits non-zero
			s := u.Status()
			if want := strings.ReplaceAll(test.want, "%s", uri); s.Status != "blocked" || !strings.Contains(s.Message, want) {
				t.Fatalf("status = %+v\nwant blocked saying %q", s, want)
			}
			if strings.Contains(s.Message, "token is required") {
				t.Errorf("status %q also says the token is missing", s.Message)
			}
			if _, err := os.Stat(filepath.Join(u.StateDir(), "config.yaml")); err == nil {
				t.Errorf("the manager was configured (with the plain token) although the secret option is set")
			}
			if r := test.fix(t, u, uri); r.Code != 0 {
				t.Fatalf("the fix's hook exit %d: %s", r.Code, r.Stderr)
			}
			if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
				t.Errorf("status after the fix = %+v", s)
			}
			if !strings.Contains(managerConfigFile(t, u), token) {
				t.Errorf("the manager's config after the fix does not hold the secret's token")
			}
			assertSecretsOnlyInConfig(t, u, token)
		})
	}
}

// A GitHub App named by its client ID, its key in a secret: the manager
// authenticates as the App (the fake GitHub mints installation tokens);
// a new key in the secret replaces the idle runners, a revision with the
// same key does not.
func TestAppClientIDWithKeyFromSecret(t *testing.T) {
	config, srv := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	key, rotated := appKeyPEM(t), appKeyPEM(t)
	uri := u.AddSecret(map[string]string{"private-key": key})
	u.GrantSecret(uri)
	config["token"] = ""
	config["github-app-client-id"] = "Iv1.0123456789abcdef"
	config["github-app-installation-id"] = 4242
	config["github-app-private-key"] = "not the key: the secret wins"
	config["github-app-private-key-secret-id"] = uri
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Fatalf("status after deploy = %+v", s)
	}
	file := managerConfigFile(t, u)
	if !strings.Contains(file, "client-id: Iv1.0123456789abcdef") || !strings.Contains(file, strings.Split(key, "\n")[1]) {
		t.Fatalf("the manager's config lacks the client ID or the secret's key")
	}
	deadline := time.Now().Add(30 * time.Second)
	for srv.Count(fakegithub.AppInstallationToken) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the manager never asked for an installation token as the App\n%s", u.ServiceLogs())
		}
		time.Sleep(100 * time.Millisecond)
	}

	n := len(u.StatusHistory())
	u.UpdateSecret(uri, map[string]string{"private-key": key})
	if got := statusesSince(u, n); containsText(got, drainStatus) {
		t.Errorf("a revision with the same key drained the runners: %q", got)
	}
	n = len(u.StatusHistory())
	if r := u.UpdateSecret(uri, map[string]string{"private-key": rotated}); r.Code != 0 {
		t.Fatalf("secret-changed exit %d: %s", r.Code, r.Stderr)
	}
	if got := statusesSince(u, n); !containsText(got, drainStatus) {
		t.Errorf("statuses after the new key %q, want %q first", got, drainStatus)
	}
	if file := managerConfigFile(t, u); !strings.Contains(file, strings.Split(rotated, "\n")[1]) {
		t.Errorf("the manager's config does not hold the new key")
	}
	assertSecretsOnlyInConfig(t, u, strings.Split(key, "\n")[1], strings.Split(rotated, "\n")[1])
}

func appKeyPEM(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}
