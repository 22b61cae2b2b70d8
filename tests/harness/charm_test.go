package harness_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
)

const token = "ghp_RECOGNISABLE_SECRET_0123456789abcdef"

// validConfig points at GitHub's API, which CI cannot reach: tests that need
// a working GitHub use withFakeGitHub.
// It keeps no runners, and names the test bed's local base image (there is
// no image server here), so the manager is healthy without creating any.
var validConfig = map[string]any{
	"path": "canonical/runners", "token": token, "labels": "large,gpu", "runner-type": "container",
	"virtual-machines": 0, "base-image": "github-runner-test-base",
}

// withFakeGitHub is validConfig against a fake GitHub that accepts token.
func withFakeGitHub(t *testing.T) (map[string]any, *fakegithub.Server) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.AddToken(fakegithub.Token{Value: token})
	config := map[string]any{"github-api-url": srv.URL()}
	for k, v := range validConfig {
		config[k] = v
	}
	return config, srv
}

// assertNoSecret checks that the token reached nothing the operator sees.
func assertNoSecret(t *testing.T, u *harness.Unit, extra ...string) {
	t.Helper()
	seen := extra
	for _, s := range u.StatusHistory() {
		seen = append(seen, s.Message)
	}
	for _, l := range u.Logs() {
		seen = append(seen, l.Message)
	}
	for _, s := range seen {
		if strings.Contains(s, token) {
			t.Errorf("the token leaked into %q", s)
		}
	}
	// The manager's log and events log (under the harness's log root).
	filepath.WalkDir(filepath.Join(u.StateRoot, "log"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if data, _ := os.ReadFile(path); strings.Contains(string(data), token) {
				t.Errorf("the token leaked into %s", path)
			}
		}
		return nil
	})
}

func TestDeployWithEmptyConfigIsBlockedNamingPathAndToken(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	u.Deploy() // fails the test if any hook exits non-zero
	s := u.Status()
	if s.Status != "blocked" || !strings.Contains(s.Message, "path is required") || !strings.Contains(s.Message, "token is required") {
		t.Errorf("status = %+v, want blocked naming path and token", s)
	}
	for _, h := range u.StatusHistory() {
		if h.Status == "error" {
			t.Errorf("a hook failed: %+v", h)
		}
	}
	if u.AppVersion() != "harness" {
		t.Errorf("application version = %q, want the charm's build version", u.AppVersion())
	}
}

func TestBadConfigIsBlockedWithEveryProblemThenFixed(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   []string
	}{
		{"path", map[string]any{"path": "a/b/c"}, []string{`path: "a/b/c" is neither an organisation nor owner/repo`}},
		{"label", map[string]any{"labels": "ok,not ok"}, []string{`labels: "not ok" may only contain`}},
		{"runners", map[string]any{"virtual-machines": -2}, []string{"virtual-machines must be 0 or more, not -2"}},
		{"cpu", map[string]any{"vm-cpu": 0}, []string{"vm-cpu must be at least 1"}},
		{"memory", map[string]any{"vm-memory": "8G"}, []string{`vm-memory: "8G" is not a size`}},
		{"disk", map[string]any{"vm-disk": "ten"}, []string{`vm-disk: "ten" is not a size`}},
		{"interval", map[string]any{"reconcile-interval": 0}, []string{"reconcile-interval must be at least 1"}},
		{"mirror", map[string]any{"dockerhub-mirror": "http://mirror.local"}, []string{"dockerhub-mirror must be an https:// URL"}},
		{"denylist", map[string]any{"denylist": "10.0.0.0/33"}, []string{`denylist: "10.0.0.0/33" is not an IPv4 CIDR`}},
		{"runner type", map[string]any{"runner-type": "kvm"}, []string{`runner-type must be "virtual-machine" or "container", not "kvm"`}},
		{"api url", map[string]any{"github-api-url": "github.example.com"}, []string{`github-api-url: "github.example.com" is not a URL like https://HOST`}},
		{"clouds yaml", map[string]any{"openstack-clouds-yaml": "clouds: {}"}, []string{
			"openstack-clouds-yaml is not valid clouds.yaml: it has no clouds", "openstack-flavor is required", "openstack-network is required",
			"provide an image: set openstack-image or relate to an image builder"}},
		{"token and app", map[string]any{"github-app-id": 7}, []string{"set either token or a GitHub App"}},
		{"several at once", map[string]any{"path": "", "vm-cpu": 0, "labels": "a b"}, []string{"path is required", "vm-cpu must be", "labels:"}},
	}
	// One unit lives through every case, as an operator's would.
	config, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(config)
	u.Deploy()
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			if r := u.Configure(test.config); r.Code != 0 {
				t.Fatalf("config-changed exit %d: %s", r.Code, r.Stderr)
			}
			s := u.Status()
			if s.Status != "blocked" {
				t.Fatalf("status = %+v, want blocked", s)
			}
			for _, want := range test.want {
				if !strings.Contains(s.Message, want) {
					t.Errorf("status %q does not say %q", s.Message, want)
				}
			}
			// Resetting the options (juju config --reset) clears Blocked.
			reset := map[string]any{}
			for k := range test.config {
				reset[k] = validConfig[k] // nil (juju config --reset) unless validConfig sets it
			}
			if r := u.Configure(reset); r.Code != 0 {
				t.Fatalf("config-changed exit %d: %s", r.Code, r.Stderr)
			}
			if s := u.Status(); s.Status == "blocked" {
				t.Errorf("status after the fix = %+v, want not blocked", s)
			}
			assertNoSecret(t, u)
		})
	}
}

// fakeManager answers on the unit's manager socket as the service does.
type fakeManager struct {
	mu       sync.Mutex
	requests []string
	report   api.RunnersReport
}

func startFakeManager(t *testing.T, u *harness.Unit, report api.RunnersReport) *fakeManager {
	t.Helper()
	m := &fakeManager{report: report}
	if err := os.MkdirAll(u.StateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(u.StateDir(), api.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return m
}

func (m *fakeManager) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.requests = append(m.requests, r.Method+" "+r.URL.RequestURI())
	report := m.report
	m.mu.Unlock()
	if report.AsOf.IsZero() && report.Problem == "" {
		report.AsOf = time.Now() // a manager that has completed a cycle
	}
	var body any
	switch r.URL.Path {
	case api.PathRunners:
		body = report
	case api.PathReconcile:
		body = api.ReconcileResult{Delta: 2}
	case api.PathFlush:
		body = api.FlushResult{Removed: 1}
		if r.URL.Query().Get("busy") == "true" {
			body = api.FlushResult{Removed: 3}
		}
	case api.PathUpdateDependencies:
		body = api.UpdateResult{Updated: true, RunnerVersion: "2.321.0"}
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.ErrorBody{Error: "no such endpoint"})
		return
	}
	json.NewEncoder(w).Encode(body)
}

func (m *fakeManager) Requests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.requests...)
}

var threeRunners = api.RunnersReport{
	Expected: 3, Online: 3, Busy: 1, AsOf: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
	Runners: []api.RunnerInfo{{Name: "github-runner-0-aa", State: "idle"}, {Name: "github-runner-0-bb", State: "idle"}, {Name: "github-runner-0-cc", State: "busy"}},
}

// The actions' plumbing against a stand-in for the service: params in,
// results out with keys Juju accepts. (No config-changed runs, so the
// charm never starts the real service on this socket.)
func TestActions(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(validConfig)
	manager := startFakeManager(t, u, threeRunners)

	tests := []struct {
		action  string
		params  map[string]any
		results map[string]any
		request string
	}{
		{"check-runners", nil, map[string]any{"online": "3", "busy": "1", "offline": "0", "unknown": "0",
			"runners": "github-runner-0-aa,github-runner-0-bb,github-runner-0-cc", "as-of": "2026-12-01T12:00:00Z"}, "GET /runners"},
		{"reconcile-runners", nil, map[string]any{"delta": "2"}, "POST /reconcile"},
		{"flush-runners", nil, map[string]any{"removed": "1"}, "POST /flush?busy=false"},
		{"flush-runners", map[string]any{"flush-busy": true}, map[string]any{"removed": "3"}, "POST /flush?busy=true"},
		{"update-dependencies", nil, map[string]any{"updated": "true", "runner-version": "2.321.0"}, "POST /update-dependencies"},
	}
	for _, test := range tests {
		r := u.Action(test.action, test.params)
		if r.Status != "completed" || r.Code != 0 {
			t.Errorf("%s: %+v", test.action, r)
			continue
		}
		if len(r.Results) != len(test.results) {
			t.Errorf("%s results = %v, want %v", test.action, r.Results, test.results)
		}
		for k, v := range test.results {
			if r.Results[k] != v {
				t.Errorf("%s result %s = %v, want %v", test.action, k, r.Results[k], v)
			}
		}
		if waits := strings.HasPrefix(test.action, "reconcile") || strings.HasPrefix(test.action, "flush"); waits && len(r.Log) == 0 {
			t.Errorf("%s logged no progress before waiting for its cycle", test.action)
		}
		requests := manager.Requests()
		if last := requests[len(requests)-1]; last != test.request {
			t.Errorf("%s asked the manager %q, want %q", test.action, last, test.request)
		}
	}
	assertNoSecret(t, u)
}

func TestActionsFailWhenBlockedOrManagerDown(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	u.Deploy()
	blocked := u.Status().Message
	for _, action := range []string{"check-runners", "reconcile-runners", "flush-runners", "update-dependencies"} {
		r := u.Action(action, nil)
		if r.Status != "failed" || r.Message != blocked || r.Code != 0 {
			t.Errorf("%s while blocked: %+v, want failed with %q", action, r, blocked)
		}
	}
	u.SetConfig(validConfig) // no config-changed: the service is not started
	u.Hook("update-status")
	if s := u.Status(); s.Status != "waiting" || !strings.Contains(s.Message, "runner manager service") {
		t.Errorf("status with no manager running = %+v", s)
	}
	r := u.Action("flush-runners", map[string]any{"flush-busy": true})
	if r.Status != "failed" || r.Message != "cannot flush runners: the runner manager service is not running" {
		t.Errorf("flush with no manager: %+v", r)
	}
	// Blocked by the manager (a rejected token) fails every action too.
	problem := "the GitHub token is invalid or expired: set a new one with juju config github-runner token=…"
	startFakeManager(t, u, api.RunnersReport{Expected: 3, Blocking: true, Problem: problem})
	for _, action := range []string{"check-runners", "reconcile-runners", "flush-runners", "update-dependencies"} {
		r := u.Action(action, nil)
		if r.Status != "failed" || r.Message != problem || r.Code != 0 {
			t.Errorf("%s while the manager is blocked: %+v, want failed with %q", action, r, problem)
		}
	}
}

func TestStatusFollowsTheManager(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(validConfig)
	manager := startFakeManager(t, u, threeRunners)
	u.Hook("update-status")
	if s := u.Status(); s != (harness.Status{Status: "active", Message: "3 runners: 2 idle, 1 busy"}) {
		t.Errorf("status = %+v", s)
	}
	manager.mu.Lock()
	manager.report = api.RunnersReport{Expected: 3, Blocking: true, Problem: "the GitHub token is invalid or expired: set a new one with juju config github-runner token=…"}
	manager.mu.Unlock()
	u.Hook("update-status")
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "token is invalid") {
		t.Errorf("status = %+v", s)
	}
	manager.mu.Lock()
	manager.report = api.RunnersReport{Expected: 3, Problem: "cannot reach LXD"}
	manager.mu.Unlock()
	u.Hook("update-status")
	if s := u.Status(); s != (harness.Status{Status: "maintenance", Message: "cannot reach LXD"}) {
		t.Errorf("status = %+v", s)
	}
	manager.mu.Lock()
	manager.report = api.RunnersReport{Expected: 3, Online: 1}
	manager.mu.Unlock()
	u.Hook("update-status")
	if s := u.Status(); s != (harness.Status{Status: "waiting", Message: "1 of 3 runners online: 1 idle, 0 busy"}) {
		t.Errorf("status = %+v", s)
	}
}

func TestLifecycleHooksSucceed(t *testing.T) {
	config, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: false})
	u.SetConfig(config)
	u.Deploy()
	for _, hook := range []string{
		"upgrade-charm", "config-changed", "leader-elected", "debug-ssh-relation-changed",
		"image-relation-joined", "cos-agent-relation-created", "secret-changed", "collect-metrics", "stop", "remove",
	} {
		if r := u.Hook(hook); r.Code != 0 {
			t.Errorf("%s exit %d: %s\nunit log: %v", hook, r.Code, r.Stderr, u.Logs())
		}
	}
	if s := u.Status(); s.Status != "terminated" {
		t.Errorf("status after remove = %+v", s)
	}
	assertNoSecret(t, u)
}

// The deployed charm runs the real manager under a real Pebble: its socket
// answers, the token sits only in the 0600 config file, and a config change
// restarts the service with the new settings.
func TestDeployRunsTheManagerUnderPebble(t *testing.T) {
	config, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" || strings.Contains(s.Message, "waiting for the runner manager") {
		t.Fatalf("status after deploy = %+v", s)
	}
	r := u.Action("check-runners", nil)
	if r.Status != "completed" || r.Results["online"] != "0" {
		t.Fatalf("check-runners: %+v", r)
	}
	configFile := filepath.Join(u.StateDir(), "config.yaml")
	info, err := os.Stat(configFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("manager config: %v, %v; want mode 0600", info, err)
	}
	if dir, err := os.Stat(u.StateDir()); err != nil || dir.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v; want mode 0700", dir, err)
	}
	// The token is in that one file, and in the manager's 0600 record of
	// the scopes it must still clean up with their credentials, and nowhere
	// else the charm or the manager wrote.
	filepath.Walk(u.StateDir(), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || path == configFile || info.Mode()&os.ModeSocket != 0 {
			return nil
		}
		if filepath.Base(path) == "scopes.json" && info.Mode().Perm() == 0o600 {
			return nil
		}
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), token) {
			t.Errorf("the token is in %s", path)
		}
		return nil
	})
	if r := u.Configure(map[string]any{"virtual-machines": 0}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	data, _ := os.ReadFile(configFile)
	if !strings.Contains(string(data), "runners: 0") {
		t.Errorf("config not rewritten:\n%s", data)
	}
	assertNoSecret(t, u)
	if r := u.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	if r := u.Hook("remove"); r.Code != 0 {
		t.Fatalf("remove: %s", r.Stderr)
	}
	if _, err := os.Stat(u.StateDir()); !os.IsNotExist(err) {
		t.Errorf("state dir left after remove: %v", err)
	}
}
