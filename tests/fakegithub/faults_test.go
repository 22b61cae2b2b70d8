package fakegithub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

func TestRateLimitCountsDown(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{RateLimit: 3})
	var firstReset string
	for i, want := range []struct {
		status    int
		remaining string
	}{{200, "2"}, {200, "1"}, {200, "0"}, {403, "0"}} {
		resp, data := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, "")
		h := resp.Header
		if resp.StatusCode != want.status || h.Get("X-RateLimit-Remaining") != want.remaining {
			t.Fatalf("request %d: status %d remaining %s, want %d and %s", i, resp.StatusCode, h.Get("X-RateLimit-Remaining"), want.status, want.remaining)
		}
		remaining, _ := strconv.Atoi(want.remaining)
		if h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Used") != strconv.Itoa(3-remaining) || h.Get("X-RateLimit-Resource") != "core" {
			t.Errorf("request %d: rate headers %v", i, h)
		}
		if firstReset == "" {
			firstReset = h.Get("X-RateLimit-Reset")
		}
		if h.Get("X-RateLimit-Reset") != firstReset {
			t.Errorf("reset moved within the window: %s then %s", firstReset, h.Get("X-RateLimit-Reset"))
		}
		if want.status == 403 {
			if msg := decode[errorBody](t, data).Message; msg != "API rate limit exceeded for user ID 1." {
				t.Errorf("message %q", msg)
			}
		}
	}
	// Another token has its own budget.
	srv.AddToken(fakegithub.Token{Value: "other"})
	if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", "other", ""); resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Remaining") != "2" {
		t.Errorf("other token: status %d remaining %s", resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
	}
	srv.SetRateLimitRemaining(fakegithub.DefaultToken, 2)
	if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
		t.Errorf("after SetRateLimitRemaining: status %d", resp.StatusCode)
	}
	if got := srv.RateLimitRemaining(fakegithub.DefaultToken); got != 1 {
		t.Errorf("remaining %d, want 1", got)
	}
}

func TestExhaustedBudgetIsAGoGitHubRateLimitError(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.SetRateLimitRemaining(fakegithub.DefaultToken, 0)
	_, _, err := newClient(t, srv, false).Actions.ListOrganizationRunners(context.Background(), "o", nil)
	var rateErr *github.RateLimitError
	if !errors.As(err, &rateErr) || rateErr.Rate.Remaining != 0 {
		t.Fatalf("error %v, want a RateLimitError with remaining 0", err)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name       string
		fault      fakegithub.Fault
		status     int
		retryAfter string
		remaining0 bool
		message    string
	}{
		{"server error", fakegithub.Fault{Kind: fakegithub.ServerError}, 500, "", false, "Server Error"},
		{"bad gateway", fakegithub.Fault{Kind: fakegithub.ServerError, Status: 502}, 502, "", false, "Bad Gateway"},
		{"primary 403", fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit}, 403, "", true, "API rate limit exceeded for user ID 1."},
		{"primary 429", fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, Status: 429}, 429, "", true, "API rate limit exceeded for user ID 1."},
		{"secondary 403 with Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, RetryAfter: 1500 * time.Millisecond}, 403, "2", false,
			"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."},
		{"secondary 429 without Retry-After", fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 429}, 429, "", false,
			"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."},
		{"forbidden", fakegithub.Fault{Kind: fakegithub.Forbidden}, 403, "", false, "Resource not accessible by personal access token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakegithub.NewTest(t, fakegithub.Options{})
			tt.fault.Endpoint = fakegithub.ListOrgRunners
			tt.fault.Times = 2
			if err := srv.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			// Other endpoints are untouched.
			if resp, _ := request(t, srv, "GET", "/repos/o/r/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
				t.Fatalf("other endpoint: status %d", resp.StatusCode)
			}
			for i := range 2 {
				resp, data := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, "")
				if resp.StatusCode != tt.status {
					t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, tt.status)
				}
				if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
				}
				if got := resp.Header.Get("X-RateLimit-Remaining") == "0"; got != tt.remaining0 {
					t.Errorf("remaining %s", resp.Header.Get("X-RateLimit-Remaining"))
				}
				body := decode[errorBody](t, data)
				if body.Message != tt.message || body.DocumentationURL == "" {
					t.Errorf("body %+v, want message %q", body, tt.message)
				}
			}
			// The burst is over.
			if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
				t.Fatalf("after the burst: status %d", resp.StatusCode)
			}
			if got := srv.Count(fakegithub.ListOrgRunners); got != 3 {
				t.Errorf("counted %d requests, want 3: faulted requests count too", got)
			}
		})
	}
}

func TestFaultsUntilCleared(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.InjectFault(fakegithub.Fault{Kind: fakegithub.ServerError, Status: 503})
	for _, path := range []string{"/orgs/o/actions/runners", "/repos/o/r/actions/runners/downloads", "/rate_limit"} {
		if resp, _ := request(t, srv, "GET", path, fakegithub.DefaultToken, ""); resp.StatusCode != 503 {
			t.Errorf("%s: status %d, want 503 from a fault on every endpoint", path, resp.StatusCode)
		}
	}
	// Authentication comes first.
	if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", "", ""); resp.StatusCode != 401 {
		t.Errorf("no token: status %d, want 401", resp.StatusCode)
	}
	srv.ClearFaults()
	if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
		t.Errorf("after ClearFaults: status %d", resp.StatusCode)
	}
}

func TestInjectFaultRejectsNonsense(t *testing.T) {
	srv, err := fakegithub.New(fakegithub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []fakegithub.Fault{
		{Endpoint: "GET /nowhere", Kind: fakegithub.ServerError},
		{Kind: fakegithub.ServerError, Status: 404},
		{Kind: fakegithub.SecondaryRateLimit, Status: 500},
		{Kind: 0},
		{Kind: fakegithub.Latency, Times: -1},
	} {
		if err := srv.InjectFault(f); err == nil {
			t.Errorf("InjectFault(%+v) succeeded", f)
		}
	}
}

func TestGoGitHubClassifiesRateLimitFaults(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	client := newClient(t, srv, false)
	ctx := context.Background()

	srv.InjectFault(fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, RetryAfter: time.Second, Times: 1})
	_, _, err := client.Actions.ListOrganizationRunners(ctx, "o", nil)
	var abuse *github.AbuseRateLimitError
	if !errors.As(err, &abuse) || abuse.GetRetryAfter() != time.Second {
		t.Fatalf("error %v, want an AbuseRateLimitError with RetryAfter 1s", err)
	}
	time.Sleep(time.Second) // go-github refuses every call until then

	srv.InjectFault(fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, RetryAfter: time.Second, Times: 1})
	_, _, err = client.Actions.ListOrganizationRunners(ctx, "o", nil)
	var primary *github.RateLimitError
	if !errors.As(err, &primary) {
		t.Fatalf("error %v, want a RateLimitError", err)
	}
	if until := time.Until(primary.Rate.Reset.Time); until > 2*time.Second {
		t.Errorf("reset in %v, want about 1s", until)
	}
	if got := srv.Count(fakegithub.ListOrgRunners); got != 2 {
		t.Errorf("%d requests reached the fake, want 2", got)
	}
}

func TestLatencyAndDroppedConnections(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.GetRateLimit, Kind: fakegithub.Latency, Delay: 200 * time.Millisecond, Times: 1})
	start := time.Now()
	if resp, _ := request(t, srv, "GET", "/rate_limit", fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("answered in %v despite 200ms latency", elapsed)
	}

	srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.OrgJITConfig, Kind: fakegithub.DropConnection, Times: 1})
	req, _ := http.NewRequest("POST", srv.URL()+"/orgs/o/actions/runners/generate-jitconfig", nil)
	req.Header.Set("Authorization", "Bearer "+fakegithub.DefaultToken)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d from a dropped connection", resp.StatusCode)
	}
	if got := srv.Count(fakegithub.OrgJITConfig); got != 1 {
		t.Errorf("counted %d JIT requests, want 1", got)
	}
}

func TestCountsReset(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, "")
	request(t, srv, "POST", "/orgs/o/actions/runners/registration-token", fakegithub.DefaultToken, "")
	request(t, srv, "GET", "/_fake/control/counts", "", "")
	want := map[string]int{fakegithub.ListOrgRunners: 1, fakegithub.OrgRegistrationToken: 1}
	if got := srv.Counts(); len(got) != len(want) || got[fakegithub.ListOrgRunners] != 1 || got[fakegithub.OrgRegistrationToken] != 1 {
		t.Errorf("counts %v, want %v", got, want)
	}
	srv.ResetCounts()
	if got := srv.TotalCount(); got != 0 {
		t.Errorf("%d requests after reset", got)
	}
}

// listNames lists a scope's runners at path (query included) and returns
// total_count and the names of the page.
func listNames(t *testing.T, srv *fakegithub.Server, path string) (int, []string) {
	t.Helper()
	resp, data := request(t, srv, "GET", path, fakegithub.DefaultToken, "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, data)
	}
	got := decode[struct {
		TotalCount int          `json:"total_count"`
		Runners    []runnerJSON `json:"runners"`
	}](t, data)
	names := []string{}
	for _, r := range got.Runners {
		names = append(names, r.Name)
	}
	return got.TotalCount, names
}

// An OmitBusyRunners fault answers the runner lists as if busy runners did
// not exist (total_count and pages too), for its burst, and touches no
// other endpoint.
func TestOmitBusyRunners(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	for _, scope := range []string{"o", "o/r"} {
		srv.AddRunner(scope, fakegithub.RunnerSpec{Name: "idle", Online: true})
		srv.AddRunner(scope, fakegithub.RunnerSpec{Name: "busy", Online: true, Busy: true})
		srv.AddRunner(scope, fakegithub.RunnerSpec{Name: "offline"})
	}
	busy := srv.Runners("o")[1]
	tests := []struct {
		name  string
		fault fakegithub.Fault
		path  string
		total int
		names []string
	}{
		{"org list", fakegithub.Fault{Endpoint: fakegithub.ListOrgRunners}, "/orgs/o/actions/runners", 2, []string{"idle", "offline"}},
		{"repo list, any list endpoint", fakegithub.Fault{}, "/repos/o/r/actions/runners", 2, []string{"idle", "offline"}},
		{"paged", fakegithub.Fault{}, "/orgs/o/actions/runners?per_page=1&page=2", 2, []string{"offline"}},
		{"filtered by a busy name", fakegithub.Fault{}, "/orgs/o/actions/runners?name=busy", 0, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fault.Kind, tt.fault.Times = fakegithub.OmitBusyRunners, 1
			if err := srv.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			// Another endpoint neither sees the fault nor uses it up.
			if resp, _ := request(t, srv, "GET", fmt.Sprintf("/orgs/o/actions/runners/%d", busy.ID), fakegithub.DefaultToken, ""); resp.StatusCode != 200 {
				t.Fatalf("get the busy runner: status %d", resp.StatusCode)
			}
			if total, names := listNames(t, srv, tt.path); total != tt.total || fmt.Sprint(names) != fmt.Sprint(tt.names) {
				t.Errorf("with the fault: total %d, names %v; want %d, %v", total, names, tt.total, tt.names)
			}
			if total, _ := listNames(t, srv, tt.path); total == tt.total {
				t.Errorf("after its one request the fault still omits busy runners (total %d)", total)
			}
		})
	}
	if err := srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.DeleteOrgRunner, Kind: fakegithub.OmitBusyRunners}); err == nil {
		t.Error("an OmitBusyRunners fault was armed on the delete endpoint")
	}
}

// OmitBusyRunners modifies an answer, so a fault that answers still fires.
func TestOmitBusyRunnersWithAServerError(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.AddRunner("o", fakegithub.RunnerSpec{Name: "busy", Online: true, Busy: true})
	srv.InjectFault(fakegithub.Fault{Kind: fakegithub.OmitBusyRunners})
	srv.InjectFault(fakegithub.Fault{Kind: fakegithub.ServerError, Status: 502, Times: 1})
	if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != 502 {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if total, _ := listNames(t, srv, "/orgs/o/actions/runners"); total != 0 {
		t.Errorf("total %d: the fault armed until cleared stopped omitting", total)
	}
	srv.ClearFaults()
	if total, _ := listNames(t, srv, "/orgs/o/actions/runners"); total != 1 {
		t.Errorf("total %d after ClearFaults, want 1", total)
	}
}

// A rate limit lasts the time it was injected for, whoever calls during it:
// GitHub's window resets at a fixed time (every 403 names the same reset),
// a secondary limit's Retry-After counts down, and both are over at the
// end, so a client that called late in the storm is not told to wait
// longer than the rest.
func TestRateLimitFaultsLastFromTheirInjection(t *testing.T) {
	const holds = 3 * time.Second
	for _, kind := range []fakegithub.FaultKind{fakegithub.PrimaryRateLimit, fakegithub.SecondaryRateLimit} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			srv := fakegithub.NewTest(t, fakegithub.Options{})
			if err := srv.InjectFault(fakegithub.Fault{Kind: kind, RetryAfter: holds}); err != nil {
				t.Fatal(err)
			}
			lifts := time.Now().Add(holds)
			for _, at := range []time.Duration{0, 2 * time.Second} {
				time.Sleep(time.Until(lifts.Add(-holds + at)))
				resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, "")
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("at +%v: status %d, want 403", at, resp.StatusCode)
				}
				// Whole seconds, rounded up: the time left at most,
				// and not less than a second before the lift.
				var said time.Time
				if kind == fakegithub.PrimaryRateLimit {
					epoch, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
					said = time.Unix(epoch, 0)
				} else {
					secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					said = time.Now().Add(time.Duration(secs) * time.Second)
				}
				if said.Before(lifts.Add(-time.Second)) || said.After(lifts.Add(time.Second)) {
					t.Errorf("at +%v: told to wait until %v, want about %v", at, said.Format("15:04:05.000"), lifts.Format("15:04:05.000"))
				}
			}
			time.Sleep(time.Until(lifts))
			if resp, _ := request(t, srv, "GET", "/orgs/o/actions/runners", fakegithub.DefaultToken, ""); resp.StatusCode != http.StatusOK {
				t.Errorf("after the limit lifted: status %d, want 200", resp.StatusCode)
			}
		})
	}
}
