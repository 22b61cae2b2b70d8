// Package conformance checks every response of the fake GitHub against
// GitHub's own API description (../testdata/rest-runners.json) with
// kin-openapi: it drives real requests through the fake, success and error
// cases, and validates status, headers and body of each.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

const descriptionFile = "../testdata/rest-runners.json"

// undocumentedErrors are the statuses GitHub sends from any endpoint
// although the description does not list them for each operation (bad
// JSON, credentials, permissions, hidden resources, rate limits, outages).
// Their body must still be GitHub's basic-error.
var undocumentedErrors = []int{400, 401, 403, 404, 429, 500, 502, 503}

// loadDescription loads the API description as it is. It is OpenAPI 3.0.3;
// the only option it needs is to skip the validation of its examples, some
// of which contradict their schema (e.g. a number 20.04 as the example of
// a string in actions-hosted-runner).
func loadDescription(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromFile(descriptionFile)
	if err != nil {
		t.Fatalf("cannot load %s: %v", descriptionFile, err)
	}
	if err := doc.Validate(loader.Context, openapi3.DisableExamplesValidation()); err != nil {
		t.Fatalf("invalid %s: %v", descriptionFile, err)
	}
	return doc
}

// exchange is one validated request and response.
type exchange struct {
	operation string // endpoint key: method and path template
	status    int
}

// validator is an http.RoundTripper that validates every response of the
// fake against the description.
type validator struct {
	t        *testing.T
	doc      *openapi3.T
	router   routers.Router
	next     http.RoundTripper
	mu       sync.Mutex
	observed []exchange
}

func newValidator(t *testing.T, baseURL string) *validator {
	doc := loadDescription(t)
	// The description has no servers; the fake is one, at the root and
	// under the GitHub Enterprise Server prefix.
	doc.Servers = openapi3.Servers{{URL: baseURL}, {URL: baseURL + "/api/v3"}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("cannot build router: %v", err)
	}
	return &validator{t: t, doc: doc, router: router, next: http.DefaultTransport}
}

func (v *validator) RoundTrip(req *http.Request) (*http.Response, error) {
	var requestBody []byte
	if req.Body != nil {
		requestBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(requestBody))
	}
	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		v.t.Errorf("%s %s is not in the description: %v", req.Method, req.URL.Path, err)
		return v.next.RoundTrip(req)
	}
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))

	check := req.Clone(req.Context())
	check.Body = io.NopCloser(bytes.NewReader(requestBody))
	operation := req.Method + " " + route.Path
	if err := v.validate(check, route, pathParams, resp, body); err != nil {
		v.t.Errorf("%s %s → %d does not conform: %v\nbody: %s", req.Method, req.URL, resp.StatusCode, err, body)
	}
	v.mu.Lock()
	v.observed = append(v.observed, exchange{operation: operation, status: resp.StatusCode})
	v.mu.Unlock()
	return resp, nil
}

func (v *validator) validate(req *http.Request, route *routers.Route, pathParams map[string]string, resp *http.Response, body []byte) error {
	ctx := context.Background()
	requestInput := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: pathParams,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	// What the fake accepts, GitHub must accept too: the request of a 2xx
	// must be valid.
	if resp.StatusCode < 300 {
		if err := openapi3filter.ValidateRequest(ctx, requestInput); err != nil {
			return fmt.Errorf("the fake accepted an invalid request: %w", err)
		}
	}
	if err := checkCommonHeaders(resp, body); err != nil {
		return err
	}
	if route.Operation.Responses.Status(resp.StatusCode) == nil {
		return v.validateUndocumentedError(resp, body)
	}
	responseInput := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: requestInput,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	responseInput.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(ctx, responseInput)
}

// validateUndocumentedError checks an error status the operation does not
// list against basic-error, GitHub's error body everywhere.
func (v *validator) validateUndocumentedError(resp *http.Response, body []byte) error {
	if !slices.Contains(undocumentedErrors, resp.StatusCode) {
		return fmt.Errorf("status %d is neither documented nor a known GitHub error", resp.StatusCode)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("error body is not JSON: %w", err)
	}
	schema := v.doc.Components.Schemas["basic-error"].Value
	if err := schema.VisitJSON(value, openapi3.VisitAsResponse(), openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("error body is not a basic-error: %w", err)
	}
	if object, _ := value.(map[string]any); object["message"] == "" || object["message"] == nil {
		return fmt.Errorf("error body has no message")
	}
	return nil
}

// checkCommonHeaders checks what GitHub sends with every response,
// described in the docs rather than per operation.
func checkCommonHeaders(resp *http.Response, body []byte) error {
	for _, name := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Used", "X-RateLimit-Reset"} {
		if _, err := strconv.ParseInt(resp.Header.Get(name), 10, 64); err != nil {
			return fmt.Errorf("header %s %q is not an integer", name, resp.Header.Get(name))
		}
	}
	if resp.Header.Get("X-RateLimit-Resource") == "" || resp.Header.Get("X-GitHub-Request-Id") == "" {
		return fmt.Errorf("headers lack X-RateLimit-Resource or X-GitHub-Request-Id: %v", resp.Header)
	}
	if resp.StatusCode == http.StatusNoContent {
		if len(body) != 0 {
			return fmt.Errorf("204 with a body")
		}
		return nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		return fmt.Errorf("Content-Type %q", ct)
	}
	return nil
}

// saw reports whether an operation answered a status.
func (v *validator) saw(operation string, status int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Contains(v.observed, exchange{operation, status})
}

// driver sends requests to the fake through the validator.
type driver struct {
	t      *testing.T
	srv    *fakegithub.Server
	client *http.Client
	prefix string // "" or "/api/v3"
}

func (d *driver) call(method, path, token, body string) (int, []byte) {
	d.t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.srv.URL()+d.prefix+path, reader)
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (d *driver) want(method, path, token, body string, status int) []byte {
	d.t.Helper()
	got, data := d.call(method, path, token, body)
	if got != status {
		d.t.Errorf("%s %s%s: status %d, want %d (%s)", method, d.prefix, path, got, status, data)
	}
	return data
}

const token = fakegithub.DefaultToken

func TestResponsesConformToGitHubDescription(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{
		{Value: token},
		{Value: "forbidden", Forbidden: true},
		{Value: "elsewhere", Scope: "someone/else"},
	}})
	v := newValidator(t, srv.URL())
	for prefix, name := range map[string]string{"": "root", "/api/v3": "ghes"} {
		for _, scope := range []string{"canonical/repo-" + name, "org-" + name} {
			t.Run(prefix+" "+scope, func(t *testing.T) {
				d := &driver{t: t, srv: srv, client: &http.Client{Transport: v}, prefix: prefix}
				driveScope(t, d, scope)
			})
		}
	}
	d := &driver{t: t, srv: srv, client: &http.Client{Transport: v}}
	driveFaults(t, d)
	d.want("GET", "/rate_limit", token, "", 200)
	d.want("GET", "/rate_limit", "", "", 401)
	d.want("GET", "/orgs/org-root/actions/runner-groups?per_page=1", token, "", 200)
	srv.AddRunnerGroup("org-root", "large")
	d.want("GET", "/orgs/org-root/actions/runner-groups?visible_to_repository=repo", token, "", 200)
	d.want("GET", "/orgs/org-root/actions/runner-groups", "forbidden", "", 403)
	d.want("GET", "/orgs/org-root/actions/runner-groups", "", "", 401)

	checkCoverage(t, v)
}

// scoped turns a path template's scope into a concrete path.
func scoped(scope, rest string) string {
	if strings.Contains(scope, "/") {
		return "/repos/" + scope + "/actions/" + rest
	}
	return "/orgs/" + scope + "/actions/" + rest
}

func driveScope(t *testing.T, d *driver, scope string) {
	runners := scoped(scope, "runners")
	// Empty list, then one JIT runner, then many for paging.
	d.want("GET", runners, token, "", 200)
	data := d.want("POST", runners+"/generate-jitconfig", token,
		`{"name":"jit","runner_group_id":1,"labels":["self-hosted","jammy"],"work_folder":"_work"}`, 201)
	var jit struct {
		Runner struct {
			ID int64 `json:"id"`
		} `json:"runner"`
	}
	if err := json.Unmarshal(data, &jit); err != nil {
		t.Fatal(err)
	}
	runnerPath := fmt.Sprintf("%s/%d", runners, jit.Runner.ID)
	d.want("GET", runnerPath, token, "", 200)
	d.want("POST", runners+"/generate-jitconfig", token, `{"name":"jit","runner_group_id":1,"labels":["a"]}`, 409)
	for _, invalid := range []string{
		`{"runner_group_id":1,"labels":["a"]}`,
		`{"name":"x","runner_group_id":1,"labels":null}`,
		`{"name":"x","runner_group_id":1,"labels":[]}`,
		`{"name":"x","runner_group_id":"one","labels":["a"]}`,
	} {
		d.want("POST", runners+"/generate-jitconfig", token, invalid, 422)
	}
	d.want("POST", runners+"/generate-jitconfig", token, `{"name":"x","runner_group_id":0,"labels":["a"]}`, 404)
	d.want("POST", runners+"/generate-jitconfig", token, `not json`, 400)

	// Online and busy, with a version, then deleted.
	if err := d.srv.ConnectRunner(jit.Runner.ID); err != nil {
		t.Fatal(err)
	}
	job, err := d.srv.AssignJob(jit.Runner.ID, fakegithub.JobSpec{Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	d.want("GET", runners+"?name=jit", token, "", 200)
	d.want("DELETE", runnerPath, token, "", 422)
	if err := d.srv.SetRunnerBusy(jit.Runner.ID, false); err != nil {
		t.Fatal(err)
	}
	d.want("DELETE", runnerPath, token, "", 204)
	d.want("DELETE", runnerPath, token, "", 404)
	d.want("GET", runnerPath, token, "", 404)
	if err := d.srv.CompleteJob(job.ID, 0); err != nil {
		t.Fatal(err)
	}

	if _, err := d.srv.AddRunners(scope, 250, fakegithub.RunnerSpec{Name: "many", Labels: []string{"x"}, Online: true}); err != nil {
		t.Fatal(err)
	}
	for page := 1; page <= 4; page++ {
		d.want("GET", fmt.Sprintf("%s?per_page=100&page=%d", runners, page), token, "", 200)
	}
	d.want("GET", runners+"?per_page=7&page=3", token, "", 200)

	d.want("POST", runners+"/registration-token", token, "", 201)
	d.want("POST", runners+"/remove-token", token, "", 201)
	d.want("GET", runners+"/downloads", token, "", 200)
	d.srv.SetChecksumMode(fakegithub.ChecksumMissing)
	d.want("GET", runners+"/downloads", token, "", 200)
	d.srv.SetChecksumMode(fakegithub.ChecksumCorrect)

	// Authentication and authorisation failures on every endpoint.
	endpoints := []struct{ method, path, body string }{
		{"GET", runners, ""},
		{"GET", runners + "/1", ""},
		{"DELETE", runners + "/1", ""},
		{"POST", runners + "/generate-jitconfig", `{"name":"y","runner_group_id":1,"labels":["a"]}`},
		{"POST", runners + "/registration-token", ""},
		{"POST", runners + "/remove-token", ""},
		{"GET", runners + "/downloads", ""},
	}
	for _, e := range endpoints {
		d.want(e.method, e.path, "", e.body, 401)
		d.want(e.method, e.path, "bad-token", e.body, 401)
		d.want(e.method, e.path, "forbidden", e.body, 403)
		d.want(e.method, e.path, "elsewhere", e.body, 404)
	}
}

func driveFaults(t *testing.T, d *driver) {
	faults := []struct {
		fault  fakegithub.Fault
		status int
	}{
		{fakegithub.Fault{Kind: fakegithub.ServerError}, 500},
		{fakegithub.Fault{Kind: fakegithub.ServerError, Status: 502}, 502},
		{fakegithub.Fault{Kind: fakegithub.ServerError, Status: 503}, 503},
		{fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit}, 403},
		{fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, Status: 429, RetryAfter: time.Second}, 429},
		{fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, RetryAfter: time.Minute}, 403},
		{fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 429}, 429},
		{fakegithub.Fault{Kind: fakegithub.Forbidden}, 403},
		{fakegithub.Fault{Kind: fakegithub.Latency, Delay: 10 * time.Millisecond}, 200},
	}
	for _, f := range faults {
		for _, endpoint := range []struct{ key, method, path string }{
			{fakegithub.ListOrgRunners, "GET", "/orgs/org-root/actions/runners"},
			{fakegithub.RepoRegistrationToken, "POST", "/repos/canonical/repo-root/actions/runners/registration-token"},
			{fakegithub.GetRateLimit, "GET", "/rate_limit"},
		} {
			f.fault.Endpoint, f.fault.Times = endpoint.key, 1
			if err := d.srv.InjectFault(f.fault); err != nil {
				t.Fatal(err)
			}
			status := f.status
			if status == 200 && endpoint.method == "POST" {
				status = 201
			}
			d.want(endpoint.method, endpoint.path, token, "", status)
		}
	}
	// A spent budget.
	d.srv.SetRateLimitRemaining(token, 0)
	d.want("GET", "/orgs/org-root/actions/runners", token, "", 403)
	d.want("GET", "/rate_limit", token, "", 200)
	d.srv.SetRateLimitRemaining(token, 5000)
}

// checkCoverage makes sure the drive reached every endpoint with the
// statuses that matter to a runner manager, validated.
func checkCoverage(t *testing.T, v *validator) {
	want := map[string][]int{
		fakegithub.ListRepoRunners:         {200, 401, 403, 404},
		fakegithub.ListOrgRunners:          {200, 401, 403, 404, 429, 500, 502, 503},
		fakegithub.GetRepoRunner:           {200, 404, 401},
		fakegithub.GetOrgRunner:            {200, 404, 401},
		fakegithub.DeleteRepoRunner:        {204, 404, 422, 401},
		fakegithub.DeleteOrgRunner:         {204, 404, 422, 401},
		fakegithub.RepoJITConfig:           {201, 400, 404, 409, 422, 401},
		fakegithub.OrgJITConfig:            {201, 400, 404, 409, 422, 401},
		fakegithub.RepoRegistrationToken:   {201, 401, 403, 429, 500},
		fakegithub.OrgRegistrationToken:    {201, 401},
		fakegithub.RepoRemoveToken:         {201, 401},
		fakegithub.OrgRemoveToken:          {201, 401},
		fakegithub.ListRepoRunnerDownloads: {200, 401},
		fakegithub.ListOrgRunnerDownloads:  {200, 401},
		fakegithub.ListOrgRunnerGroups:     {200, 401, 403},
		fakegithub.GetRateLimit:            {200, 401, 403, 429, 500},
	}
	if len(want) != len(fakegithub.Endpoints()) {
		t.Errorf("coverage lists %d endpoints, the fake serves %d", len(want), len(fakegithub.Endpoints()))
	}
	for _, endpoint := range fakegithub.Endpoints() {
		statuses, ok := want[endpoint]
		if !ok {
			t.Errorf("no coverage for %s", endpoint)
		}
		for _, status := range statuses {
			if !v.saw(endpoint, status) {
				t.Errorf("the drive never validated %s → %d", endpoint, status)
			}
		}
	}
}
