package scaleset

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/runner"
)

var testIdentity = runner.Identity{Model: "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10", App: "github-runner", Unit: 2}

func TestConfigURL(t *testing.T) {
	tests := []struct {
		api, path, want string
	}{
		{"", "my-org", "https://github.com/my-org"},
		{"https://api.github.com", "owner/repo", "https://github.com/owner/repo"},
		{"https://api.github.com/", "my-org", "https://github.com/my-org"},
		{"https://github.com", "my-org", "https://github.com/my-org"},
		{"https://api.acme.ghe.com/", "my-org", "https://acme.ghe.com/my-org"},
		{"https://ghes.example.com/api/v3", "my-org", "https://ghes.example.com/my-org"},
		{"https://ghes.example.com/api/v3/", "owner/repo", "https://ghes.example.com/owner/repo"},
		{"https://ghes.example.com", "my-org", "https://ghes.example.com/my-org"},
		// The fake on loopback: the client then calls <url>/api/v3/…
		{"http://127.0.0.1:41234", "my-org", "http://127.0.0.1:41234/my-org"},
		{"http://127.0.0.1:41234/api/v3/", "owner/repo", "http://127.0.0.1:41234/owner/repo"},
	}
	for _, test := range tests {
		got, err := ConfigURL(test.api, test.path)
		if err != nil || got != test.want {
			t.Errorf("ConfigURL(%q, %q) = %q, %v; want %q", test.api, test.path, got, err, test.want)
		}
	}
	for _, bad := range []struct{ api, path string }{{"https://x.example.com/other", "org"}, {"", ""}, {"http://example.com", "org"}} {
		if got, err := ConfigURL(bad.api, bad.path); err == nil {
			t.Errorf("ConfigURL(%q, %q) = %q, want an error", bad.api, bad.path, got)
		}
	}
}

func TestSetLabels(t *testing.T) {
	s, err := New(Config{Path: "org", Token: "t", Option: "linux", Labels: []string{"x64", "linux", "gpu", "x64"}, Identity: testIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.Labels(), ","), "linux,x64,gpu"; got != want {
		t.Errorf("labels %s, want %s", got, want)
	}
	if s.Name() != testIdentity.ScaleSetName("linux") {
		t.Errorf("name %s", s.Name())
	}
}

// service is a stand-in for GitHub answering the scale-set calls with the
// shapes of the reference (scale-sets.md §3): the bootstrap, and svc for
// the Actions service's paths.
func service(t *testing.T, registration http.HandlerFunc, svc http.HandlerFunc) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/api/v3/orgs/org/actions/runners/registration-token":
			answer(w, 201, map[string]any{"token": "reg-token", "expires_at": time.Now().Add(time.Hour)})
		case r.Method == "POST" && r.URL.Path == "/api/v3/actions/runner-registration":
			if registration != nil {
				registration(w, r)
				return
			}
			answer(w, 201, map[string]string{"url": srv.URL + "/_svc/t1/", "token": adminJWT()})
		case strings.HasPrefix(r.URL.Path, "/_svc/t1/"):
			r.URL.Path = strings.TrimPrefix(r.URL.Path, "/_svc/t1")
			svc(w, r)
		default:
			answer(w, 404, map[string]string{"message": "Not Found"})
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func exception(w http.ResponseWriter, status int, typeName, message string) {
	answer(w, status, map[string]string{"typeName": typeName, "message": message})
}

func adminJWT() string {
	enc := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"exp": time.Now().Add(time.Hour).Unix()})
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(payload) + ".c2ln"
}

func scaleSetJSON(id int, name string, labels ...string) map[string]any {
	ls := []map[string]string{}
	for _, l := range labels {
		ls = append(ls, map[string]string{"type": "System", "name": l})
	}
	return map[string]any{"id": id, "name": name, "runnerGroupId": 1, "runnerGroupName": "Default", "labels": ls,
		"RunnerSetting": map[string]bool{"disableUpdate": true}, "createdOn": "2026-01-01T00:00:00Z", "statistics": map[string]int{}}
}

func newTestSet(t *testing.T, srv *httptest.Server) *Set {
	t.Helper()
	s, err := New(Config{APIURL: srv.URL, Path: "org", Token: "pat", Option: "linux", Labels: []string{"x64", "gpu"},
		Identity: testIdentity, Timing: Timing{Retries: -1, Call: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEnsureOnGHESWithoutScaleSets(t *testing.T) {
	srv := service(t, func(w http.ResponseWriter, r *http.Request) {
		answer(w, 404, map[string]string{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
	}, nil)
	s := newTestSet(t, srv)
	if err := s.Ensure(context.Background()); err == nil {
		t.Fatal("Ensure succeeded")
	}
	want := "this GitHub Enterprise Server does not support runner scale sets (they need 3.9 or later): unset runner-scale-set to use classic runners"
	if got := s.Problem(); got != want {
		t.Errorf("problem %q, want %q", got, want)
	}
}

func TestEnsureLabelsDropped(t *testing.T) {
	var mu sync.Mutex
	var created []string
	srv := service(t, nil, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == "GET" && r.URL.Path == "/_apis/runtime/runnerscalesets":
			if len(created) == 0 {
				answer(w, 200, map[string]any{"count": 0, "value": []any{}})
				return
			}
			answer(w, 200, map[string]any{"count": 1, "value": []any{scaleSetJSON(7, created[0], created[0])}})
		case r.Method == "POST" && r.URL.Path == "/_apis/runtime/runnerscalesets":
			var body struct{ Name string }
			json.NewDecoder(r.Body).Decode(&body)
			created = append(created, body.Name)
			// GHES 3.17: the name is the only label.
			answer(w, 200, scaleSetJSON(7, body.Name, body.Name))
		case r.Method == "PATCH" && r.URL.Path == "/_apis/runtime/runnerscalesets/7":
			answer(w, 200, scaleSetJSON(7, created[0], created[0]))
		default:
			exception(w, 404, "NotFound", r.Method+" "+r.URL.Path)
		}
	})
	s := newTestSet(t, srv)
	for range 2 { // made, then found
		if err := s.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
		p := s.Problem()
		for _, want := range []string{"GitHub Enterprise Server dropped the runner labels linux, x64, gpu of scale set " + s.Name(), "GHES 3.18 or later", "runs-on: " + s.Name()} {
			if !strings.Contains(p, want) {
				t.Errorf("problem %q does not say %q", p, want)
			}
		}
	}
	if len(created) != 1 {
		t.Errorf("created %d scale sets, want 1", len(created))
	}
}

// The client's errors for the session answers of the reference are
// classified as Listen needs.
func TestSessionErrors(t *testing.T) {
	tests := []struct {
		name                string
		status              int
		typeName            string
		conflict, setIsGone bool
	}{
		{"conflict", 409, "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, GitHub.Actions.Runtime.WebApi", true, false},
		{"set deleted", 404, "GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, GitHub.Actions.Runtime.WebApi", false, true},
		{"outage", 400, "GitHub.Actions.Runtime.WebApi.SomethingElseException", false, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			srv := service(t, nil, func(w http.ResponseWriter, r *http.Request) {
				exception(w, test.status, test.typeName, "The actions runner scaleset linux already has an active session for owner other.")
			})
			s := newTestSet(t, srv)
			_, err := s.client.MessageSessionClient(context.Background(), 7, s.owner)
			if err == nil {
				t.Fatal("no error")
			}
			if isConflict(err) != test.conflict || isScaleSetNotFound(err) != test.setIsGone {
				t.Errorf("conflict %v, set gone %v for %v", isConflict(err), isScaleSetNotFound(err), err)
			}
		})
	}
}

// A name registered already in the set (a create that failed after GitHub
// answered) is removed and registered again; in another set it is not
// touched.
func TestRegisterExisting(t *testing.T) {
	for _, otherSet := range []bool{false, true} {
		t.Run(fmt.Sprintf("other set %v", otherSet), func(t *testing.T) {
			var mu sync.Mutex
			agents := map[string]int{"r-1": 41}
			var removed []string
			srv := service(t, nil, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.Method == "GET" && r.URL.Path == "/_apis/runtime/runnerscalesets":
					answer(w, 200, map[string]any{"count": 1, "value": []any{scaleSetJSON(7, "n", "linux", "x64", "gpu")}})
				case r.Method == "POST" && r.URL.Path == "/_apis/runtime/runnerscalesets/7/generatejitconfig":
					var body struct{ Name string }
					json.NewDecoder(r.Body).Decode(&body)
					if _, ok := agents[body.Name]; ok {
						exception(w, 409, "GitHub.DistributedTask.WebApi.AgentExistsException, GitHub.DistributedTask.WebApi", "A runner exists with the same name "+body.Name)
						return
					}
					agents[body.Name] = 42
					answer(w, 200, map[string]any{"runner": map[string]any{"id": 42, "name": body.Name, "runnerScaleSetId": 7}, "encodedJITConfig": "ZW5jb2RlZA=="})
				case r.Method == "GET" && r.URL.Path == "/_apis/distributedtask/pools/0/agents":
					name := r.URL.Query().Get("agentName")
					set := 7
					if otherSet {
						set = 8
					}
					answer(w, 200, map[string]any{"count": 1, "value": []any{map[string]any{"id": agents[name], "name": name, "runnerScaleSetId": set}}})
				case r.Method == "DELETE" && r.URL.Path == "/_apis/distributedtask/pools/0/agents/41":
					delete(agents, "r-1")
					removed = append(removed, "r-1")
					w.WriteHeader(204)
				default:
					exception(w, 404, "NotFound", r.Method+" "+r.URL.Path)
				}
			})
			s := newTestSet(t, srv)
			id, jit, err := s.Register(context.Background(), "r-1")
			if otherSet {
				if err == nil || len(removed) != 0 {
					t.Fatalf("registered over another set's runner: %v, removed %v", err, removed)
				}
				return
			}
			if err != nil || id != 42 || jit != "ZW5jb2RlZA==" || len(removed) != 1 {
				t.Fatalf("Register = %d, %q, %v; removed %v", id, jit, err, removed)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	err := fmt.Errorf(`request GET https://broker.example/message?token=secret&lastMessageId=3 failed(status="500 Internal")`)
	if got := redact(err); strings.Contains(got, "secret") || !strings.Contains(got, "broker.example/message") {
		t.Errorf("redact: %s", got)
	}
}
