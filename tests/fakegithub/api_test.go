package fakegithub_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// request sends one API request with token ("" for none) and returns the
// response with its body read.
func request(t *testing.T, srv *fakegithub.Server, method, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL()+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

type errorBody struct {
	Message          string   `json:"message"`
	DocumentationURL string   `json:"documentation_url"`
	Status           string   `json:"status"`
	Errors           []string `json:"errors"`
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("cannot decode %q: %v", data, err)
	}
	return v
}

func TestAuthAndScopes(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{
		{Value: "all"},
		{Value: "repo-only", Scope: "canonical/repo"},
		{Value: "org-only", Scope: "canonical"},
		{Value: "no-admin", Scope: "canonical/repo", Forbidden: true},
	}})
	tests := []struct {
		name, header, path string
		status             int
		message            string
	}{
		{"no header", "", "/repos/canonical/repo/actions/runners", 401, "Requires authentication"},
		{"unknown token", "Bearer nope", "/repos/canonical/repo/actions/runners", 401, "Bad credentials"},
		{"unknown scheme", "Basic all", "/repos/canonical/repo/actions/runners", 401, "Bad credentials"},
		{"bearer", "Bearer all", "/repos/canonical/repo/actions/runners", 200, ""},
		{"token scheme", "token all", "/orgs/other/actions/runners", 200, ""},
		{"repo token, its repo", "Bearer repo-only", "/repos/canonical/repo/actions/runners", 200, ""},
		{"repo token, other repo", "Bearer repo-only", "/repos/canonical/other/actions/runners", 404, "Not Found"},
		{"repo token, its owner", "Bearer repo-only", "/orgs/canonical/actions/runners", 403, "Resource not accessible by personal access token"},
		{"repo token, other org", "Bearer repo-only", "/orgs/other/actions/runners", 404, "Not Found"},
		{"org token, its org", "Bearer org-only", "/orgs/canonical/actions/runners", 200, ""},
		{"org token, its repo", "Bearer org-only", "/api/v3/repos/canonical/any/actions/runners", 200, ""},
		{"org token, other org", "Bearer org-only", "/orgs/other/actions/runner-groups", 404, "Not Found"},
		{"forbidden token", "Bearer no-admin", "/repos/canonical/repo/actions/runners", 403, "Resource not accessible by personal access token"},
		{"unknown path", "Bearer all", "/repos/canonical/repo/actions/nothing", 404, "Not Found"},
		{"wrong method", "Bearer all", "/repos/canonical/repo/actions/runners/downloads", 404, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "GET"
			if tt.name == "wrong method" {
				method = "DELETE"
			}
			req, _ := http.NewRequest(method, srv.URL()+tt.path, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, data)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", got)
			}
			if tt.message == "" {
				return
			}
			body := decode[errorBody](t, data)
			if body.Message != tt.message || body.Status != fmt.Sprint(tt.status) || body.DocumentationURL == "" {
				t.Errorf("body %+v, want message %q and status %q", body, tt.message, fmt.Sprint(tt.status))
			}
		})
	}
}

func TestTokenChangesAtRuntime(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	path := "/orgs/canonical/actions/runners"
	if resp, _ := request(t, srv, "GET", path, fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d before the change", resp.StatusCode)
	}
	srv.AddToken(fakegithub.Token{Value: fakegithub.DefaultToken, Forbidden: true})
	if resp, _ := request(t, srv, "GET", path, fakegithub.DefaultToken, ""); resp.StatusCode != 403 {
		t.Fatalf("status %d with a forbidden token, want 403", resp.StatusCode)
	}
	srv.RemoveToken(fakegithub.DefaultToken)
	if resp, _ := request(t, srv, "GET", path, fakegithub.DefaultToken, ""); resp.StatusCode != 401 {
		t.Fatalf("status %d with a removed token, want 401", resp.StatusCode)
	}
}

type runnerJSON struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	OS            string `json:"os"`
	Status        string `json:"status"`
	Busy          bool   `json:"busy"`
	Ephemeral     bool   `json:"ephemeral"`
	RunnerGroupID int64  `json:"runner_group_id"`
	Labels        []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"labels"`
}

func labelSummary(r runnerJSON) string {
	var parts []string
	for _, l := range r.Labels {
		parts = append(parts, l.Name+":"+l.Type)
	}
	return strings.Join(parts, ",")
}

func TestJITConfigCreatesOfflineRunner(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	body := `{"name":"jit-1","runner_group_id":1,"labels":["self-hosted","x64","large"]}`
	resp, data := request(t, srv, "POST", "/repos/canonical/repo/actions/runners/generate-jitconfig", fakegithub.DefaultToken, body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d, want 201 (%s)", resp.StatusCode, data)
	}
	got := decode[struct {
		Runner runnerJSON `json:"runner"`
		Config string     `json:"encoded_jit_config"`
	}](t, data)
	r := got.Runner
	if r.Name != "jit-1" || r.Status != "offline" || r.Busy || !r.Ephemeral || r.OS != "unknown" || r.RunnerGroupID != 1 {
		t.Errorf("runner %+v, want an offline, idle, ephemeral runner jit-1 in group 1", r)
	}
	if want := "self-hosted:read-only,Linux:read-only,X64:read-only,large:custom"; labelSummary(r) != want {
		t.Errorf("labels %s, want %s", labelSummary(r), want)
	}
	config, err := fakegithub.DecodeJITConfig(got.Config)
	if err != nil {
		t.Fatal(err)
	}
	if config.RunnerID != r.ID || config.RunnerName != "jit-1" || config.ServerURL != srv.URL() || !config.Ephemeral {
		t.Errorf("JIT config %+v does not match runner %d at %s", config, r.ID, srv.URL())
	}

	// The record exists at once, as on GitHub.
	resp, data = request(t, srv, "GET", fmt.Sprintf("/repos/canonical/repo/actions/runners/%d", r.ID), fakegithub.DefaultToken, "")
	if resp.StatusCode != 200 || decode[runnerJSON](t, data).Name != "jit-1" {
		t.Fatalf("GET runner: status %d, body %s", resp.StatusCode, data)
	}
	// Another scope does not see it.
	resp, _ = request(t, srv, "GET", fmt.Sprintf("/orgs/canonical/actions/runners/%d", r.ID), fakegithub.DefaultToken, "")
	if resp.StatusCode != 404 {
		t.Errorf("GET the repo runner through the org: status %d, want 404", resp.StatusCode)
	}
	// The same name again is a conflict.
	resp, data = request(t, srv, "POST", "/repos/canonical/repo/actions/runners/generate-jitconfig", fakegithub.DefaultToken, body)
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("second JIT config: status %d, want 409", resp.StatusCode)
	}
	if msg := decode[errorBody](t, data).Message; msg != "Already exists - A runner with the name *** already exists." {
		t.Errorf("409 message %q", msg)
	}
}

func TestJITConfigValidation(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	tooMany := `["` + strings.Repeat(`l","`, 100) + `l"]`
	tests := []struct {
		name, body string
		status     int
		message    string
	}{
		{"missing name", `{"runner_group_id":1,"labels":["a"]}`, 422, "Invalid request.\n\n\"name\" wasn't supplied."},
		{"missing labels", `{"name":"a","runner_group_id":1}`, 422, "Invalid request.\n\n\"labels\" wasn't supplied."},
		{"null labels, as go-github sends a nil slice", `{"name":"a","runner_group_id":1,"labels":null}`, 422, "Invalid request.\n\nFor 'properties/labels', nil is not an array."},
		{"empty labels", `{"name":"a","runner_group_id":1,"labels":[]}`, 422, "Invalid request.\n\nFor 'properties/labels', [] should have at least 1 item(s)."},
		{"101 labels", `{"name":"a","runner_group_id":1,"labels":` + tooMany + `}`, 422, "Invalid request.\n\nFor 'properties/labels', array of 101 items should have at most 100 item(s)."},
		{"group id as string", `{"name":"a","runner_group_id":"1","labels":["a"]}`, 422, "Invalid request.\n\nFor 'properties/runner_group_id', \"1\" is not an integer."},
		{"unknown group, as go-github sends when unset", `{"name":"a","runner_group_id":0,"labels":["a"]}`, 404, "Not Found"},
		{"not JSON", `name=a`, 400, "Problems parsing JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := request(t, srv, "POST", "/orgs/canonical/actions/runners/generate-jitconfig", fakegithub.DefaultToken, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, data)
			}
			if got := decode[errorBody](t, data); got.Message != tt.message {
				t.Errorf("message %q, want %q", got.Message, tt.message)
			}
		})
	}
	if runners := srv.Runners(""); len(runners) != 0 {
		t.Errorf("invalid requests created runners: %+v", runners)
	}
}

func TestRunnerGroupsAndCustomGroupJIT(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	id := srv.AddRunnerGroup("canonical", "large")
	resp, data := request(t, srv, "GET", "/orgs/canonical/actions/runner-groups", fakegithub.DefaultToken, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	groups := decode[struct {
		TotalCount   int `json:"total_count"`
		RunnerGroups []struct {
			ID      int64  `json:"id"`
			Name    string `json:"name"`
			Default bool   `json:"default"`
		} `json:"runner_groups"`
	}](t, data)
	if groups.TotalCount != 2 || groups.RunnerGroups[0].Name != "Default" || !groups.RunnerGroups[0].Default ||
		groups.RunnerGroups[1].ID != id || groups.RunnerGroups[1].Default {
		t.Fatalf("groups %+v, want Default and large (%d)", groups, id)
	}
	body := fmt.Sprintf(`{"name":"g","runner_group_id":%d,"labels":["a"]}`, id)
	if resp, _ := request(t, srv, "POST", "/orgs/canonical/actions/runners/generate-jitconfig", fakegithub.DefaultToken, body); resp.StatusCode != 201 {
		t.Errorf("JIT in org group: status %d, want 201", resp.StatusCode)
	}
	if resp, _ := request(t, srv, "POST", "/orgs/other/actions/runners/generate-jitconfig", fakegithub.DefaultToken, body); resp.StatusCode != 404 {
		t.Errorf("JIT in another org's group: status %d, want 404", resp.StatusCode)
	}
}

func TestDeleteRunner(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	idle, _ := srv.AddRunner("canonical", fakegithub.RunnerSpec{Name: "idle", Online: true})
	busy, _ := srv.AddRunner("canonical", fakegithub.RunnerSpec{Name: "busy", Online: true, Busy: true})
	offline, _ := srv.AddRunner("canonical", fakegithub.RunnerSpec{Name: "offline"})
	tests := []struct {
		name    string
		id      int64
		status  int
		message string
	}{
		{"idle", idle.ID, 204, ""},
		{"offline", offline.ID, 204, ""},
		{"busy", busy.ID, 422, `Bad request - Runner "busy" is still running a job"`},
		{"already deleted", idle.ID, 404, "Not Found"},
		{"never existed", 999, 404, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := request(t, srv, "DELETE", fmt.Sprintf("/orgs/canonical/actions/runners/%d", tt.id), fakegithub.DefaultToken, "")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, data)
			}
			if tt.status == 204 {
				if len(data) != 0 {
					t.Errorf("204 with a body: %q", data)
				}
				if _, ok := srv.Runner(tt.id); ok {
					t.Errorf("runner %d still exists", tt.id)
				}
				return
			}
			if got := decode[errorBody](t, data); got.Message != tt.message || got.DocumentationURL == "" {
				t.Errorf("body %+v, want message %q", got, tt.message)
			}
		})
	}
	if _, ok := srv.Runner(busy.ID); !ok {
		t.Error("the busy runner was deleted")
	}
}

// Deletions records each DELETE the API answered: who asked (the token),
// about which runner, and what GitHub said.
func TestDeletionsTellWhoAsked(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{
		{Value: "first", Scope: "canonical"}, {Value: "second", Scope: "canonical"},
	}})
	idle, _ := srv.AddRunner("canonical/repo", fakegithub.RunnerSpec{Name: "idle", Online: true})
	busy, _ := srv.AddRunner("canonical", fakegithub.RunnerSpec{Name: "busy", Online: true, Busy: true})
	srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.DeleteOrgRunner, Kind: fakegithub.ServerError, Times: 1})
	steps := []struct {
		token, path string
		status      int
	}{
		{"second", fmt.Sprintf("/orgs/canonical/actions/runners/%d", busy.ID), 500}, // a fault: GitHub did not answer
		{"second", fmt.Sprintf("/orgs/canonical/actions/runners/%d", busy.ID), 422},
		{"first", fmt.Sprintf("/repos/canonical/repo/actions/runners/%d", idle.ID), 204},
		{"first", fmt.Sprintf("/repos/canonical/repo/actions/runners/%d", idle.ID), 404},
		{"nobody", fmt.Sprintf("/orgs/canonical/actions/runners/%d", busy.ID), 401},
	}
	for _, s := range steps {
		if resp, _ := request(t, srv, "DELETE", s.path, s.token, ""); resp.StatusCode != s.status {
			t.Fatalf("DELETE %s as %s: status %d, want %d", s.path, s.token, resp.StatusCode, s.status)
		}
	}
	want := []fakegithub.Deletion{
		{RunnerID: busy.ID, Name: "busy", Scope: "canonical", Token: "second", Busy: true, Status: 422},
		{RunnerID: idle.ID, Name: "idle", Scope: "canonical/repo", Token: "first", Status: 204},
		{RunnerID: idle.ID, Scope: "canonical/repo", Token: "first", Status: 404},
	}
	got := srv.Deletions()
	if len(got) != len(want) {
		t.Fatalf("deletions %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i].At.IsZero() {
			t.Errorf("deletion %d has no time", i)
		}
		got[i].At = time.Time{}
		if got[i] != want[i] {
			t.Errorf("deletion %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestListRunnersNameFilter(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.AddRunners("canonical/repo", 3, fakegithub.RunnerSpec{Name: "r"})
	srv.AddRunner("canonical/other", fakegithub.RunnerSpec{Name: "r-1"})
	tests := []struct {
		query string
		names []string
	}{
		{"", []string{"r-0", "r-1", "r-2"}},
		{"?name=r-1", []string{"r-1"}},
		{"?name=r", nil},
		{"?name=", nil},
	}
	for _, tt := range tests {
		resp, data := request(t, srv, "GET", "/repos/canonical/repo/actions/runners"+tt.query, fakegithub.DefaultToken, "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.query, resp.StatusCode)
		}
		got := decode[struct {
			TotalCount int           `json:"total_count"`
			Runners    *[]runnerJSON `json:"runners"`
		}](t, data)
		if got.Runners == nil {
			t.Fatalf("%s: runners is null, GitHub sends []", tt.query)
		}
		var names []string
		for _, r := range *got.Runners {
			names = append(names, r.Name)
		}
		if fmt.Sprint(names) != fmt.Sprint(tt.names) || got.TotalCount != len(tt.names) {
			t.Errorf("%q: total %d, names %v, want %v", tt.query, got.TotalCount, names, tt.names)
		}
	}
}

func TestRegistrationAndRemoveTokens(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	for _, path := range []string{"/repos/o/r/actions/runners/registration-token", "/orgs/o/actions/runners/remove-token"} {
		resp, data := request(t, srv, "POST", path, fakegithub.DefaultToken, "")
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s: status %d, want 201", path, resp.StatusCode)
		}
		got := decode[struct {
			Token     string `json:"token"`
			ExpiresAt string `json:"expires_at"`
		}](t, data)
		if len(got.Token) != 29 || strings.ToUpper(got.Token) != got.Token || got.ExpiresAt == "" {
			t.Errorf("%s: token %+v, want 29 upper-case characters and an expiry", path, got)
		}
	}
}

func TestRateLimitEndpoint(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{RateLimit: 100})
	request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, "")
	resp, data := request(t, srv, "GET", "/rate_limit", fakegithub.DefaultToken, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := decode[struct {
		Resources struct {
			Core struct{ Limit, Remaining, Used int } `json:"core"`
		} `json:"resources"`
	}](t, data)
	if core := got.Resources.Core; core.Limit != 100 || core.Remaining != 99 || core.Used != 1 {
		t.Errorf("core %+v, want limit 100, remaining 99, used 1: /rate_limit must not count", core)
	}
}
