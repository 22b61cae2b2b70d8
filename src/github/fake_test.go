package github

// Tests against the fake GitHub (tests/fakegithub): the client end to end
// over HTTP, with GitHub's status codes, headers, pagination and faults.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// fakeEnv is one fake GitHub served over HTTP, and the logs of the clients
// made for it.
type fakeEnv struct {
	fake *fakegithub.Server
	srv  *httptest.Server
	logs *syncBuffer
}

// newFake serves a fake GitHub that accepts testToken (scoped to scope,
// empty for everything), optionally through wrap.
func newFake(t *testing.T, tokens []fakegithub.Token, wrap func(http.Handler) http.Handler) *fakeEnv {
	t.Helper()
	if tokens == nil {
		tokens = []fakegithub.Token{{Value: testToken}}
	}
	fake, err := fakegithub.New(fakegithub.Options{Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler = fake
	if wrap != nil {
		handler = wrap(fake)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { fake.Close() })
	return &fakeEnv{fake: fake, srv: srv, logs: &syncBuffer{}}
}

// client talks to the fake as to a GitHub Enterprise Server at its URL.
func (e *fakeEnv) client(t *testing.T, path string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := testConfig(path, e.srv.URL, e.logs)
	for _, m := range mod {
		m(&cfg)
	}
	return mustNew(t, cfg)
}

func (e *fakeEnv) inject(t *testing.T, f fakegithub.Fault) {
	t.Helper()
	if err := e.fake.InjectFault(f); err != nil {
		t.Fatal(err)
	}
}

// scopes is the table of the two path kinds; the endpoint keys differ.
var scopes = []struct {
	path                             string
	list, jit, del, token, downloads string
}{
	{"canonical/repo", fakegithub.ListRepoRunners, fakegithub.RepoJITConfig, fakegithub.DeleteRepoRunner, fakegithub.RepoRegistrationToken, fakegithub.ListRepoRunnerDownloads},
	{"canonical", fakegithub.ListOrgRunners, fakegithub.OrgJITConfig, fakegithub.DeleteOrgRunner, fakegithub.OrgRegistrationToken, fakegithub.ListOrgRunnerDownloads},
}

func TestFakeRegisterRunnerJIT(t *testing.T) {
	for _, sc := range scopes {
		t.Run(sc.path, func(t *testing.T) {
			env := newFake(t, nil, nil)
			c := env.client(t, sc.path)
			reg, err := c.RegisterRunner(context.Background(), "unit-0-abc", []string{"self-hosted", "linux", "large"})
			if err != nil {
				t.Fatalf("RegisterRunner: %v", err)
			}
			if reg.EncodedJITConfig == "" {
				t.Fatalf("registration = %v, want JIT with a config", reg)
			}
			runner, ok := env.fake.Runner(reg.RunnerID)
			if !ok || runner.Name != "unit-0-abc" || runner.Scope != sc.path || runner.GroupID != 1 || runner.Status != fakegithub.StatusOffline {
				t.Fatalf("fake's runner %d = %+v, %v; want the offline runner unit-0-abc in group 1 of %s", reg.RunnerID, runner, ok, sc.path)
			}
			if !hasLabel(runner.Labels, "large") {
				t.Errorf("runner labels = %v, want large among them", runner.Labels)
			}
			if got := env.fake.Count(sc.jit); got != 1 {
				t.Errorf("JIT requests = %d, want 1", got)
			}
			assertNoSecret(t, "logs", env.logs.String(), reg.EncodedJITConfig, testToken)
		})
	}
}

func hasLabel(labels []fakegithub.Label, name string) bool {
	for _, l := range labels {
		if l.Name == name {
			return true
		}
	}
	return false
}

func TestFakeRegisterRunnerLooksUpGroupAcrossPages(t *testing.T) {
	env := newFake(t, nil, nil)
	for i := range 150 {
		env.fake.AddRunnerGroup("canonical", fmt.Sprintf("team-%03d", i))
	}
	gpu := env.fake.AddRunnerGroup("canonical", "gpu") // on page 2 of 100
	c := env.client(t, "canonical", func(cfg *Config) { cfg.RunnerGroup = "gpu" })
	ctx := context.Background()
	for i := range 2 {
		reg, err := c.RegisterRunner(ctx, fmt.Sprintf("unit-0-%d", i), []string{"linux"})
		if err != nil {
			t.Fatalf("RegisterRunner: %v", err)
		}
		if runner, _ := env.fake.Runner(reg.RunnerID); runner.GroupID != gpu {
			t.Errorf("runner group = %d, want gpu's %d", runner.GroupID, gpu)
		}
	}
	if got := env.fake.Count(fakegithub.ListOrgRunnerGroups); got != 2 {
		t.Errorf("runner group requests = %d, want 2: two pages, looked up once", got)
	}

	t.Run("default group by the charm's default name", func(t *testing.T) {
		c := env.client(t, "canonical") // RunnerGroup "" → "default", GitHub's "Default"
		reg, err := c.RegisterRunner(ctx, "unit-0-default", []string{"linux"})
		if err != nil {
			t.Fatal(err)
		}
		if runner, _ := env.fake.Runner(reg.RunnerID); runner.GroupID != 1 {
			t.Errorf("runner group = %d, want 1", runner.GroupID)
		}
	})
	t.Run("unknown group", func(t *testing.T) {
		c := env.client(t, "canonical", func(cfg *Config) { cfg.RunnerGroup = "nope" })
		_, err := c.RegisterRunner(ctx, "unit-0-x", []string{"linux"})
		if !errors.Is(err, ErrRunnerGroupNotFound) || !strings.Contains(OperatorMessage(err), `runner group "nope" not found`) {
			t.Fatalf("error = %v, want ErrRunnerGroupNotFound", err)
		}
	})
}

// withoutJIT makes the fake an older GitHub Enterprise Server: no
// generate-jitconfig endpoint (404), everything else as before.
func withoutJIT(fake http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/actions/runners/generate-jitconfig") {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"Not Found","documentation_url":"https://docs.github.com/enterprise-server@3.8/rest"}`))
			return
		}
		fake.ServeHTTP(w, r)
	})
}

// A server without the JIT endpoint is not worked around: no registration
// token is asked for (no caller could start a runner from one).
func TestFakeRegisterRunnerWithoutJIT(t *testing.T) {
	for _, sc := range scopes {
		t.Run(sc.path, func(t *testing.T) {
			env := newFake(t, nil, withoutJIT)
			_, err := env.client(t, sc.path).RegisterRunner(context.Background(), "unit-0-abc", []string{"linux"})
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("error = %v, want ErrNotFound", err)
			}
			if got := env.fake.Count(sc.token); got != 0 {
				t.Errorf("registration token requests = %d, want 0", got)
			}
		})
	}
}

func TestFakeRegisterRunnerNameTaken(t *testing.T) {
	env := newFake(t, nil, nil)
	c := env.client(t, "canonical/repo")
	ctx := context.Background()
	if _, err := c.RegisterRunner(ctx, "unit-0-abc", []string{"linux"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.RegisterRunner(ctx, "unit-0-abc", []string{"linux"})
	if !errors.Is(err, ErrRunnerExists) {
		t.Fatalf("error = %v, want ErrRunnerExists", err)
	}
}

func TestFakeListRunners(t *testing.T) {
	for _, sc := range scopes {
		t.Run(sc.path, func(t *testing.T) {
			env := newFake(t, nil, nil)
			if _, err := env.fake.AddRunners(sc.path, 250, fakegithub.RunnerSpec{Name: "unit-0", Labels: []string{"large"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := env.fake.AddRunners(sc.path, 20, fakegithub.RunnerSpec{Name: "other-unit"}); err != nil {
				t.Fatal(err)
			}
			busy, err := env.fake.AddRunner(sc.path, fakegithub.RunnerSpec{Name: "unit-0-busy", Online: true, Busy: true})
			if err != nil {
				t.Fatal(err)
			}
			// 271 runners: 3 pages of 100 wherever the prefix matches.
			c := env.client(t, sc.path)
			runners, err := c.ListRunners(context.Background(), "unit-0-")
			if err != nil {
				t.Fatalf("ListRunners: %v", err)
			}
			if len(runners) != 251 {
				t.Fatalf("runners = %d, want 251 with the prefix", len(runners))
			}
			if got := env.fake.Count(sc.list); got != 3 {
				t.Errorf("list requests = %d, want ceil(271/100) = 3", got)
			}
			if got := env.fake.TotalCount(); got != 3 {
				t.Errorf("requests = %d, want 3 in all: never one per runner", got)
			}
			byID := map[int64]Runner{}
			for _, r := range runners {
				if !strings.HasPrefix(r.Name, "unit-0-") {
					t.Errorf("runner %q lacks the prefix", r.Name)
				}
				byID[r.ID] = r
			}
			got := byID[busy.ID]
			if got.Name != "unit-0-busy" || got.Status != RunnerOnline || !got.Busy {
				t.Errorf("busy runner = %+v, want online and busy", got)
			}
			if first := runners[0]; first.Status != RunnerOffline || first.Busy || !containsString(first.Labels, "large") || !containsString(first.Labels, "self-hosted") {
				t.Errorf("first runner = %+v, want offline, idle, labels with large and self-hosted", first)
			}
		})
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestFakeDeleteRunner(t *testing.T) {
	for _, sc := range scopes {
		t.Run(sc.path, func(t *testing.T) {
			env := newFake(t, nil, nil)
			c := env.client(t, sc.path)
			ctx := context.Background()
			idle, _ := env.fake.AddRunner(sc.path, fakegithub.RunnerSpec{Name: "unit-0-idle", Online: true})
			busy, _ := env.fake.AddRunner(sc.path, fakegithub.RunnerSpec{Name: "unit-0-busy", Online: true, Busy: true})

			if err := c.DeleteRunner(ctx, idle.ID); err != nil {
				t.Errorf("deleting an idle runner (204): %v", err)
			}
			if _, ok := env.fake.Runner(idle.ID); ok {
				t.Errorf("idle runner still on the fake after delete")
			}
			if err := c.DeleteRunner(ctx, idle.ID); err != nil {
				t.Errorf("deleting a runner already gone (404): %v, want success", err)
			}
			err := c.DeleteRunner(ctx, busy.ID)
			if !errors.Is(err, ErrRunnerBusy) {
				t.Fatalf("deleting a busy runner (422): %v, want ErrRunnerBusy", err)
			}
			var ghErr *Error
			if !errors.As(err, &ghErr) || ghErr.StatusCode != 422 || !strings.Contains(err.Error(), fmt.Sprintf("delete runner %d", busy.ID)) {
				t.Errorf("busy error = %v, want 422 naming the runner", err)
			}
			if _, ok := env.fake.Runner(busy.ID); !ok {
				t.Errorf("busy runner removed")
			}
			if got := env.fake.Count(sc.del); got != 3 {
				t.Errorf("delete requests = %d, want 3 (no retries)", got)
			}
		})
	}
}

func TestFakeAuthErrors(t *testing.T) {
	tokens := []fakegithub.Token{
		{Value: testToken, Scope: "canonical/repo"},
		{Value: "ghp_FORBIDDENsecret", Forbidden: true},
	}
	tests := []struct {
		name, path, token string
		wantKind          error
		wantWords         string
	}{
		{"401 unknown token", "canonical/repo", "ghp_UNKNOWNsecret", ErrBadCredentials, "invalid or expired"},
		{"403 token lacks permission on repo", "canonical/repo", "ghp_FORBIDDENsecret", ErrPermission, "repo scope"},
		{"403 repo token on the org", "canonical", testToken, ErrPermission, "admin:org"},
		{"404 repository outside the token", "canonical/other", testToken, ErrNotFound, "repository canonical/other not found or not visible"},
		{"404 organisation outside the token", "elsewhere", testToken, ErrNotFound, "organisation elsewhere not found or not visible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFake(t, tokens, nil)
			c := env.client(t, tt.path, func(cfg *Config) { cfg.Token = tt.token })
			_, err := c.ListRunners(context.Background(), "")
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("error = %v, want %v", err, tt.wantKind)
			}
			if msg := OperatorMessage(err); !strings.Contains(msg, tt.wantWords) {
				t.Errorf("operator message = %q, want %q in it", msg, tt.wantWords)
			}
			assertNoSecret(t, "error", err.Error()+OperatorMessage(err)+env.logs.String(), tt.token)
		})
	}
}

func TestFakeBaseURLs(t *testing.T) {
	env := newFake(t, nil, nil)
	for _, base := range []string{env.srv.URL, env.srv.URL + "/", env.srv.URL + "/api/v3", env.srv.URL + "/api/v3/"} {
		c := env.client(t, "canonical/repo", func(cfg *Config) { cfg.BaseURL = base })
		if _, err := c.ListRunners(context.Background(), ""); err != nil {
			t.Errorf("BaseURL %q: %v", base, err)
		}
	}

	t.Run("github.com by default", func(t *testing.T) {
		target, _ := url.Parse(env.srv.URL)
		rt := &toFake{target: target}
		c := env.client(t, "canonical/repo", func(cfg *Config) {
			cfg.BaseURL = ""
			cfg.Transport = rt
		})
		if _, err := c.ListRunners(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		if got := rt.lastURL.Load(); got != "https://api.github.com/repos/canonical/repo/actions/runners?per_page=100&page=1" &&
			got != "https://api.github.com/repos/canonical/repo/actions/runners?page=1&per_page=100" {
			t.Errorf("request went to %v, want api.github.com", got)
		}
	})
}

// toFake sends requests meant for https://api.github.com/ to the fake.
type toFake struct {
	target  *url.URL
	lastURL atomic.Value
}

func (rt *toFake) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.lastURL.Store(req.URL.String())
	if req.URL.Host != "api.github.com" {
		return nil, fmt.Errorf("unexpected host %s", req.URL.Host)
	}
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host = rt.target.Scheme, rt.target.Host
	return http.DefaultTransport.RoundTrip(req)
}

func TestFakeRateLimits(t *testing.T) {
	tests := []struct {
		name     string
		fault    fakegithub.Fault
		wantKind error
		wantIn   time.Duration // RetryAt about this far ahead
	}{
		{"primary 403", fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, RetryAfter: 20 * time.Minute}, ErrRateLimited, 20 * time.Minute},
		{"primary 429", fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, Status: 429, RetryAfter: 20 * time.Minute}, ErrRateLimited, 20 * time.Minute},
		{"secondary 403", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, RetryAfter: 2 * time.Minute}, ErrSecondaryRateLimited, 2 * time.Minute},
		{"secondary 429", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 429, RetryAfter: 2 * time.Minute}, ErrSecondaryRateLimited, 2 * time.Minute},
		{"secondary 403 without Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit}, ErrSecondaryRateLimited, time.Minute},
		{"secondary 429 without Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 429}, ErrSecondaryRateLimited, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFake(t, nil, nil)
			tt.fault.Times = 1
			env.inject(t, tt.fault)
			c := env.client(t, "canonical")
			_, err := c.ListRunners(context.Background(), "")
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("error = %v, want %v", err, tt.wantKind)
			}
			at, ok := retryAt(err)
			if !ok || absDuration(time.Until(at)-tt.wantIn) > 5*time.Second {
				t.Errorf("RetryAt = %v, %v (in %v), want in about %v", at, ok, time.Until(at), tt.wantIn)
			}
			msg := OperatorMessage(err)
			if tt.wantKind == ErrRateLimited && !strings.Contains(msg, "until "+hhmmUTC(at)) {
				t.Errorf("operator message = %q, want the reset time %s", msg, hhmmUTC(at))
			}
			if tt.wantKind == ErrSecondaryRateLimited && !strings.Contains(msg, "waiting "+tt.wantIn.String()) {
				t.Errorf("operator message = %q, want the wait %v", msg, tt.wantIn)
			}
			// The fault has fired; the limit still holds: no request reaches GitHub.
			if _, err := c.ListRunners(context.Background(), ""); !errors.Is(err, tt.wantKind) {
				t.Errorf("second call error = %v, want %v held locally", err, tt.wantKind)
			}
			if got := env.fake.Count(fakegithub.ListOrgRunners); got != 1 {
				t.Errorf("list requests = %d, want 1", got)
			}
		})
	}

	t.Run("budget exhausted", func(t *testing.T) {
		env := newFake(t, nil, nil)
		env.fake.SetRateLimitRemaining(testToken, 1)
		c := env.client(t, "canonical")
		if _, err := c.ListRunners(context.Background(), ""); err != nil {
			t.Fatalf("last request of the budget: %v", err)
		}
		if b, ok := c.RateBudget(); !ok || b.Remaining != 0 {
			t.Fatalf("RateBudget = %+v, %v; want 0 remaining", b, ok)
		}
		_, err := c.ListRunners(context.Background(), "")
		if !errors.Is(err, ErrRateLimited) {
			t.Fatalf("error = %v, want ErrRateLimited", err)
		}
		if got := env.fake.TotalCount(); got != 1 {
			t.Errorf("requests = %d, want 1: go-github refuses locally once remaining is 0", got)
		}
	})
}

func TestFakeServerErrorsRetried(t *testing.T) {
	for _, status := range []int{500, 502, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			env := newFake(t, nil, nil)
			env.inject(t, fakegithub.Fault{Endpoint: fakegithub.ListRepoRunners, Kind: fakegithub.ServerError, Status: status, Times: 2})
			c := env.client(t, "canonical/repo")
			if _, err := c.ListRunners(context.Background(), ""); err != nil {
				t.Fatalf("ListRunners after a burst of two %d: %v", status, err)
			}
			if got := env.fake.Count(fakegithub.ListRepoRunners); got != 3 {
				t.Errorf("requests = %d, want 3", got)
			}
		})
	}
	t.Run("burst longer than the attempts", func(t *testing.T) {
		env := newFake(t, nil, nil)
		env.inject(t, fakegithub.Fault{Kind: fakegithub.ServerError, Status: 502})
		c := env.client(t, "canonical/repo")
		_, err := c.ListRunners(context.Background(), "")
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(OperatorMessage(err), "HTTP 502 after 3 attempts") {
			t.Fatalf("error = %v (%q), want ErrUnavailable after 3 attempts", err, OperatorMessage(err))
		}
	})
}

func TestFakeDroppedConnection(t *testing.T) {
	env := newFake(t, nil, nil)
	env.inject(t, fakegithub.Fault{Kind: fakegithub.DropConnection, Times: 1})
	c := env.client(t, "canonical/repo")
	if _, err := c.ListRunners(context.Background(), ""); err != nil {
		t.Fatalf("ListRunners after one dropped connection: %v", err)
	}
	if got := env.fake.Count(fakegithub.ListRepoRunners); got != 2 {
		t.Errorf("requests = %d, want 2", got)
	}
	env.fake.ResetCounts()
	env.inject(t, fakegithub.Fault{Kind: fakegithub.DropConnection})
	_, err := c.ListRunners(context.Background(), "")
	var ghErr *Error
	if !errors.As(err, &ghErr) || ghErr.Kind != ErrUnavailable || ghErr.Attempts != 3 {
		t.Fatalf("error = %v, want ErrUnavailable after 3 attempts", err)
	}
	// net/http replays a GET once by itself when a kept-alive connection
	// dies before answering, so the fake may see up to one more per attempt.
	if got := env.fake.Count(fakegithub.ListRepoRunners); got < 3 || got > 6 {
		t.Errorf("requests = %d, want 3 attempts (up to 6 with net/http's replays)", got)
	}
}

func TestFakeTimeout(t *testing.T) {
	env := newFake(t, nil, nil)
	env.inject(t, fakegithub.Fault{Kind: fakegithub.Latency, Delay: time.Second})
	c := env.client(t, "canonical", func(cfg *Config) { cfg.RequestTimeout = 100 * time.Millisecond })
	start := time.Now()
	_, err := c.ListRunners(context.Background(), "")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("error = %v, want ErrTimeout", err)
	}
	if elapsed := time.Since(start); elapsed > 900*time.Millisecond {
		t.Errorf("took %v, want about 100ms", elapsed)
	}
}

func TestFakeRateBudget(t *testing.T) {
	env := newFake(t, nil, nil)
	c := env.client(t, "canonical")
	if _, ok := c.RateBudget(); ok {
		t.Fatalf("RateBudget before any request says ok")
	}
	ctx := context.Background()
	for range 3 {
		if _, err := c.ListRunners(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	b, ok := c.RateBudget()
	want := env.fake.RateLimitRemaining(testToken)
	if !ok || b.Remaining != want || b.Limit != 5000 || b.Used != 5000-want || b.Resource != "core" || time.Until(b.Reset) <= 0 {
		t.Errorf("RateBudget = %+v, %v; want remaining %d of 5000, resource core, reset ahead", b, ok, want)
	}
	// Recorded from error answers too.
	env.inject(t, fakegithub.Fault{Kind: fakegithub.ServerError, Status: 500})
	c.ListRunners(ctx, "")
	if after, _ := c.RateBudget(); after.Remaining != env.fake.RateLimitRemaining(testToken) || !after.ObservedAt.After(b.ObservedAt) {
		t.Errorf("RateBudget after errors = %+v, want the fake's %d", after, env.fake.RateLimitRemaining(testToken))
	}
}

// TestFakeSecretsStayOut runs every operation, succeeding and failing, and
// checks that no token or JIT config reaches the logs or the errors.
func TestFakeSecretsStayOut(t *testing.T) {
	env := newFake(t, nil, nil)
	c := env.client(t, "canonical/repo")
	ctx := context.Background()
	var texts []string
	note := func(err error) {
		if err != nil {
			texts = append(texts, err.Error(), OperatorMessage(err), fmt.Sprintf("%+v %#v", err, err))
		}
	}
	reg, err := c.RegisterRunner(ctx, "unit-0-a", []string{"linux"})
	note(err)
	texts = append(texts, fmt.Sprintf("%v %+v %#v", reg, reg, reg))
	_, err = c.RegisterRunner(ctx, "unit-0-a", []string{"linux"}) // 409
	note(err)
	_, err = c.ListRunners(ctx, "unit-0-")
	note(err)
	busy, _ := env.fake.AddRunner("canonical/repo", fakegithub.RunnerSpec{Name: "unit-0-busy", Busy: true})
	note(c.DeleteRunner(ctx, busy.ID))
	for _, kind := range []fakegithub.FaultKind{fakegithub.ServerError, fakegithub.DropConnection, fakegithub.Forbidden} {
		env.inject(t, fakegithub.Fault{Kind: kind, Times: 3})
		_, err = c.ListRunners(ctx, "")
		note(err)
	}
	env.fake.RemoveToken(testToken)
	_, err = c.RegisterRunner(ctx, "unit-0-b", []string{"linux"}) // 401
	note(err)

	if reg.EncodedJITConfig == "" {
		t.Fatalf("setup: registration %v lacks its secret", reg)
	}
	all := strings.Join(texts, "\n") + env.logs.String()
	assertNoSecret(t, "errors and logs", all, testToken, reg.EncodedJITConfig, "Bearer", "Authorization")
	if !strings.Contains(env.logs.String(), "retrying") {
		t.Errorf("logs lack the retries, so this test saw less than it should:\n%s", env.logs)
	}
}

func TestFakeDownloadRunnerApplication(t *testing.T) {
	for _, sc := range scopes {
		t.Run(sc.path, func(t *testing.T) {
			var downloadAuth atomic.Value
			var downloads atomic.Int64
			env := newFake(t, nil, func(fake http.Handler) http.Handler {
				// Watch the non-API requests: the download must not carry our token.
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.Contains(r.URL.Path, "/objects/") {
						downloads.Add(1)
						downloadAuth.Store(r.Header.Get("Authorization"))
					}
					fake.ServeHTTP(w, r)
				})
			})
			c := env.client(t, sc.path)
			cache := t.TempDir()
			ctx := context.Background()
			for _, arch := range fakegithub.RunnerArchitectures {
				app, err := c.DownloadRunnerApplication(ctx, cache, arch)
				if err != nil {
					t.Fatalf("DownloadRunnerApplication(%s): %v", arch, err)
				}
				if app.Version != fakegithub.DefaultRunnerVersion || app.Filename != fakegithub.RunnerFilename(fakegithub.DefaultRunnerVersion, arch) || app.FromCache {
					t.Errorf("app = %+v", app)
				}
				if got, _ := fileSHA256(app.Path); got != env.fake.RunnerSHA256(arch) || app.SHA256 != got {
					t.Errorf("%s: cached file sha256 = %s, want the fake's %s", arch, got, env.fake.RunnerSHA256(arch))
				}
			}
			if auth, _ := downloadAuth.Load().(string); auth != "" {
				t.Errorf("download carried Authorization %q, want none", strings.Repeat("*", len(auth)))
			}
			// Reuse without downloading; a new version is a new file.
			app, err := c.DownloadRunnerApplication(ctx, cache, "x64")
			if err != nil || !app.FromCache {
				t.Fatalf("second download = %+v, %v; want the cached file", app, err)
			}
			if downloads.Load() != 2 {
				t.Errorf("downloads = %d, want 2 (one per architecture)", downloads.Load())
			}
			if err := env.fake.SetRunnerVersion("2.337.0"); err != nil {
				t.Fatal(err)
			}
			newer, err := c.DownloadRunnerApplication(ctx, cache, "x64")
			if err != nil || newer.FromCache || newer.Version != "2.337.0" || newer.Path == app.Path {
				t.Fatalf("after a release = %+v, %v; want 2.337.0 downloaded beside 2.336.0", newer, err)
			}
			if got := env.fake.Count(sc.downloads); got != 4 {
				t.Errorf("downloads listings = %d, want 4 (one per call)", got)
			}
			assertNoTempFiles(t, cache)
		})
	}
}

func TestFakeDownloadRunnerApplicationRefusesBadChecksum(t *testing.T) {
	tests := []struct {
		name  string
		mode  fakegithub.ChecksumMode
		words string
	}{
		{"wrong", fakegithub.ChecksumWrong, "has sha256 "},
		{"missing", fakegithub.ChecksumMissing, "no sha256_checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFake(t, nil, nil)
			env.fake.SetChecksumMode(tt.mode)
			c := env.client(t, "canonical")
			cache := t.TempDir()
			_, err := c.DownloadRunnerApplication(context.Background(), cache, "x64")
			if !errors.Is(err, ErrChecksum) || !strings.Contains(OperatorMessage(err), tt.words) {
				t.Fatalf("error = %v, want ErrChecksum saying %q", err, tt.words)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Errorf("cache holds %d entries after a refused download", len(entries))
			}
		})
	}
	t.Run("cached file re-verified", func(t *testing.T) {
		env := newFake(t, nil, nil)
		c := env.client(t, "canonical")
		cache := t.TempDir()
		app, err := c.DownloadRunnerApplication(context.Background(), cache, "x64")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(app.Path, []byte("tampered"), 0o644); err != nil {
			t.Fatal(err)
		}
		again, err := c.DownloadRunnerApplication(context.Background(), cache, "x64")
		if err != nil || again.FromCache {
			t.Fatalf("after tampering = %+v, %v; want a fresh download", again, err)
		}
		if got, _ := fileSHA256(app.Path); got != env.fake.RunnerSHA256("x64") {
			t.Errorf("cached file not replaced")
		}
	})
}
