package fakegithub_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// newClient returns a go-github client of the fake; enterprise clients use
// the /api/v3/ prefix.
func newClient(t *testing.T, srv *fakegithub.Server, enterprise bool) *github.Client {
	t.Helper()
	client := github.NewClient(nil).WithAuthToken(fakegithub.DefaultToken)
	if enterprise {
		var err error
		client, err = client.WithEnterpriseURLs(srv.URL(), srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		return client
	}
	base, err := url.Parse(srv.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	client.BaseURL = base
	return client
}

func TestPaginationCostsOneRequestPerPage(t *testing.T) {
	tests := []struct {
		runners, perPage, requests int
		enterprise                 bool
	}{
		{250, 100, 3, false},
		{250, 100, 3, true},
		{200, 100, 2, false},
		{250, 0, 9, false}, // GitHub's default page size is 30
		{250, 500, 3, false},
		{0, 100, 1, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d runners per %d enterprise=%v", tt.runners, tt.perPage, tt.enterprise), func(t *testing.T) {
			srv := fakegithub.NewTest(t, fakegithub.Options{})
			if _, err := srv.AddRunners("canonical", tt.runners, fakegithub.RunnerSpec{Online: true}); err != nil {
				t.Fatal(err)
			}
			client := newClient(t, srv, tt.enterprise)
			seen := make(map[int64]bool)
			opts := &github.ListRunnersOptions{ListOptions: github.ListOptions{PerPage: tt.perPage}}
			for {
				runners, resp, err := client.Actions.ListOrganizationRunners(context.Background(), "canonical", opts)
				if err != nil {
					t.Fatal(err)
				}
				if runners.TotalCount != tt.runners {
					t.Fatalf("total_count %d, want %d", runners.TotalCount, tt.runners)
				}
				for _, r := range runners.Runners {
					if seen[r.GetID()] {
						t.Fatalf("runner %d listed twice", r.GetID())
					}
					seen[r.GetID()] = true
				}
				if resp.NextPage == 0 {
					break
				}
				opts.Page = resp.NextPage
			}
			if len(seen) != tt.runners {
				t.Errorf("listed %d runners, want %d", len(seen), tt.runners)
			}
			if got := srv.Count(fakegithub.ListOrgRunners); got != tt.requests {
				t.Errorf("%d requests by the fake's counter, want %d", got, tt.requests)
			}
			if got := srv.TotalCount(); got != tt.requests {
				t.Errorf("%d requests in all, want %d", got, tt.requests)
			}
		})
	}
}

func TestLinkHeader(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	srv.AddRunners("canonical/repo", 250, fakegithub.RunnerSpec{})
	base := srv.URL() + "/repos/canonical/repo/actions/runners"
	page := func(query string) string { return fmt.Sprintf("<%s?%s>", base, query) }
	tests := []struct {
		query, link string
		count       int
	}{
		{"?per_page=100", page("page=2&per_page=100") + `; rel="next", ` + page("page=3&per_page=100") + `; rel="last"`, 100},
		{"?per_page=100&page=2", page("page=1&per_page=100") + `; rel="prev", ` + page("page=3&per_page=100") + `; rel="next", ` +
			page("page=3&per_page=100") + `; rel="last", ` + page("page=1&per_page=100") + `; rel="first"`, 100},
		{"?per_page=100&page=3", page("page=2&per_page=100") + `; rel="prev", ` + page("page=1&per_page=100") + `; rel="first"`, 50},
		{"?per_page=300", page("page=2&per_page=300") + `; rel="next", ` + page("page=3&per_page=300") + `; rel="last"`, 100},
		{"?per_page=100&name=runner-7", "", 1},
		{"", page("page=2") + `; rel="next", ` + page("page=9") + `; rel="last"`, 30},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, data := request(t, srv, "GET", "/repos/canonical/repo/actions/runners"+tt.query, fakegithub.DefaultToken, "")
			if got := resp.Header.Get("Link"); got != tt.link {
				t.Errorf("Link\n got %s\nwant %s", got, tt.link)
			}
			got := decode[struct {
				TotalCount int          `json:"total_count"`
				Runners    []runnerJSON `json:"runners"`
			}](t, data)
			if len(got.Runners) != tt.count {
				t.Errorf("%d runners on the page, want %d", len(got.Runners), tt.count)
			}
			if tt.link != "" && got.TotalCount != 250 {
				t.Errorf("total_count %d, want 250", got.TotalCount)
			}
		})
	}
}

func TestRunnersThroughGoGitHub(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	client := newClient(t, srv, true)
	ctx := context.Background()
	jit, resp, err := client.Actions.GenerateRepoJITConfig(ctx, "canonical", "repo", &github.GenerateJITConfigRequest{
		Name: "r1", RunnerGroupID: 1, Labels: []string{"jammy"},
	})
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("cannot generate JIT config: %v", err)
	}
	runner, _, err := client.Actions.GetRunner(ctx, "canonical", "repo", jit.GetRunner().GetID())
	if err != nil || runner.GetName() != "r1" || runner.GetStatus() != "offline" {
		t.Fatalf("runner %+v, %v", runner, err)
	}
	if _, err := srv.AssignJob(runner.GetID(), fakegithub.JobSpec{}); err == nil {
		t.Fatal("an offline runner took a job")
	}
	if err := srv.SetRunnerStatus(runner.GetID(), true); err != nil {
		t.Fatal(err)
	}
	job, err := srv.AssignJob(runner.GetID(), fakegithub.JobSpec{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Actions.RemoveRunner(ctx, "canonical", "repo", runner.GetID())
	if errResp, ok := err.(*github.ErrorResponse); !ok || errResp.Response.StatusCode != 422 {
		t.Fatalf("removing a busy runner: %v, want a 422 ErrorResponse", err)
	}
	if err := srv.CompleteJob(job.ID, 0); err != nil {
		t.Fatal(err)
	}
	_, _, err = client.Actions.GetRunner(ctx, "canonical", "repo", runner.GetID())
	if errResp, ok := err.(*github.ErrorResponse); !ok || errResp.Response.StatusCode != 404 {
		t.Fatalf("GET of an ephemeral runner after its job: %v, want 404", err)
	}
	apps, _, err := client.Actions.ListRunnerApplicationDownloads(ctx, "canonical", "repo")
	if err != nil || len(apps) != 2 {
		t.Fatalf("downloads %v, %v", apps, err)
	}
	for _, app := range apps {
		if app.GetSHA256Checksum() != srv.RunnerSHA256(app.GetArchitecture()) {
			t.Errorf("%s checksum %s, want %s", app.GetArchitecture(), app.GetSHA256Checksum(), srv.RunnerSHA256(app.GetArchitecture()))
		}
	}
	token, resp, err := client.Actions.CreateOrganizationRegistrationToken(ctx, "canonical")
	if err != nil || resp.StatusCode != 201 || token.GetToken() == "" || token.GetExpiresAt().IsZero() {
		t.Fatalf("registration token %+v, %v", token, err)
	}
	groups, _, err := client.Actions.ListOrganizationRunnerGroups(ctx, "canonical", nil)
	if err != nil || groups.TotalCount != 1 || groups.RunnerGroups[0].GetName() != "Default" {
		t.Fatalf("runner groups %+v, %v", groups, err)
	}
	limits, _, err := client.RateLimit.Get(ctx)
	if err != nil || limits.GetCore().Limit != 5000 {
		t.Fatalf("rate limits %+v, %v", limits, err)
	}
}
