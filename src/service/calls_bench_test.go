package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// What a reconcile cycle costs in GitHub API requests, measured with the
// real engine, the real go-github client and the service's platform
// adapter against the fake GitHub on loopback (its per-endpoint counters);
// only the cloud is in memory. A cycle is manager.Engine.Run(Reconcile):
// the service's Prepare (one runner-application downloads check per cycle)
// is not in it, so these are the engine's own requests.

const costRepo = "canonical/runners"

var (
	costID     = managertest.Identity
	costPrefix = costID.Prefix()
	costScope  = managertest.Scope
)

// costBed is one unit's runners: n idle runners online at the fake GitHub
// and their running instances in an in-memory cloud.
type costBed struct {
	github *fakegithub.Server
	cloud  *managertest.Cloud
	client *github.Client
}

// runnerName is the i-th runner's name: the prefix and 8 hex digits, the
// shape Identity.NewName makes and the engine insists on.
func runnerName(i int) string { return fmt.Sprintf("%s-%08x", costPrefix, i) }

// costSettings are the engine's settings for a unit keeping target runners.
func costSettings(target int) manager.Settings {
	return manager.Settings{Identity: costID, Scope: costScope, Target: target}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCostBed(tb testing.TB, n int) *costBed {
	tb.Helper()
	// The rate limit is raised so that many benchmark iterations never
	// run into the fake's 5000 an hour.
	srv := fakegithub.NewTest(tb, fakegithub.Options{RateLimit: 1 << 30})
	client, err := github.New(github.Config{Path: costRepo, BaseURL: srv.URL(), Token: fakegithub.DefaultToken, Logger: discardLog()})
	if err != nil {
		tb.Fatal(err)
	}
	bed := &costBed{github: srv, cloud: managertest.NewCloud(), client: client}
	bed.addRunners(tb, 0, n)
	return bed
}

// addRunners adds runners first … first+n-1, idle and online, each with
// its running instance.
func (b *costBed) addRunners(tb testing.TB, first, n int) {
	tb.Helper()
	now := time.Now()
	for i := first; i < first+n; i++ {
		r, err := b.github.AddRunner(costRepo, fakegithub.RunnerSpec{Name: runnerName(i), Online: true, Ephemeral: true})
		if err != nil {
			tb.Fatal(err)
		}
		b.cloud.Put(cloud.Instance{Name: r.Name, RunnerID: r.ID, CreatedAt: now, Status: cloud.Running})
	}
}

func (b *costBed) engine(target int) *manager.Engine {
	platform := newPlatform(b.client, costID, costScope, nil)
	return manager.New(b.cloud, platform, costSettings(target), discardLog())
}

// cycle runs one reconcile cycle and returns what it cost: the API
// requests by endpoint.
func (b *costBed) cycle(tb testing.TB, e *manager.Engine) (manager.Outcome, map[string]int) {
	tb.Helper()
	b.github.ResetCounts()
	out, err := e.Run(context.Background(), manager.Reconcile)
	if err != nil {
		tb.Fatalf("reconcile: %v", err)
	}
	if len(out.Errors) > 0 {
		tb.Fatalf("reconcile failed: %v", out.Errors)
	}
	return out, b.github.Counts()
}

func total(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// listPages is GitHub's minimum to read n runners: one page per 100.
func listPages(n int) int { return max(1, (n+99)/100) }

// steadyCost is the API requests of one cycle at steady state with n
// runners: nothing to create, nothing to remove.
func steadyCost(tb testing.TB, b *costBed, e *manager.Engine, n int) map[string]int {
	tb.Helper()
	out, counts := b.cycle(tb, e)
	if out.Created != 0 || out.RemovedTotal() != 0 || len(out.Views) != n {
		tb.Fatalf("not a steady state: %d views, created %d, removed %v", len(out.Views), out.Created, out.Removed)
	}
	return counts
}

// createdCost creates k runners from none and returns the API requests
// per created runner, the list pages left out.
func createdCost(tb testing.TB, k int) (perRunner float64, counts map[string]int) {
	tb.Helper()
	b := newCostBed(tb, 0)
	out, counts := b.cycle(tb, b.engine(k))
	if out.Created != k {
		tb.Fatalf("created %d runners, want %d", out.Created, k)
	}
	others := maps.Clone(counts)
	delete(others, fakegithub.ListRepoRunners)
	return float64(total(others)) / float64(k), counts
}

var costSizes = []int{10, 250, 1000}

// A steady-state cycle costs exactly the list pages, ceil(N/100), and no
// request per runner; a created runner costs exactly its JIT config.
func TestGitHubCallsPerReconcile(t *testing.T) {
	for _, n := range costSizes {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			b := newCostBed(t, n)
			e := b.engine(n)
			for cycle := range 2 { // the second cycle has seen every runner online
				counts := steadyCost(t, b, e, n)
				want := map[string]int{fakegithub.ListRepoRunners: listPages(n)}
				if !maps.Equal(counts, want) {
					t.Errorf("cycle %d with %d runners made requests %v, want %v", cycle, n, counts, want)
				}
			}
		})
	}
}

// preparedCloud is the in-memory cloud with an image that never changes;
// like LXD's, its Prepare fetches the runner application.
type preparedCloud struct{ *managertest.Cloud }

func (preparedCloud) Prepare(ctx context.Context, fetch cloud.FetchRunner) (bool, error) {
	_, _, err := fetch(ctx)
	return false, err
}

func (preparedCloud) Teardown(context.Context) error { return nil }

// serviceCycleCost is the API requests of one of the service's own cycles
// at steady state: Prepare (the runner application, cached after the
// first cycle) and then the engine's cycle.
func serviceCycleCost(tb testing.TB, b *costBed, n int) map[string]int {
	tb.Helper()
	u := &updater{github: b.client, cacheDir: tb.TempDir(), log: discardLog(), cloud: preparedCloud{b.cloud}}
	srv := &Server{Engine: b.engine(n), Expected: n, Prepare: u.refresh, Log: discardLog()}
	for range 2 { // the first cycle downloads the runner application
		b.github.ResetCounts()
		if _, err := srv.cycle(manager.Reconcile); err != nil {
			tb.Fatal(err)
		}
		// Cycles on the interval are a minute or more apart: each
		// prepares (see refreshEvery).
		u.mu.Lock()
		u.prepared = u.prepared.Add(-refreshEvery)
		u.mu.Unlock()
	}
	if p := srv.currentProblem(); p.text != "" {
		tb.Fatalf("the service reports a problem: %s", p.text)
	}
	return b.github.Counts()
}

// The service's cycle adds one request to the engine's: the check for a
// newer runner application.
func TestGitHubCallsPerServiceCycle(t *testing.T) {
	const n = 250
	counts := serviceCycleCost(t, newCostBed(t, n), n)
	want := map[string]int{fakegithub.ListRepoRunners: listPages(n), fakegithub.ListRepoRunnerDownloads: 1}
	if !maps.Equal(counts, want) {
		t.Errorf("a service cycle with %d runners made requests %v, want %v", n, counts, want)
	}
}

func TestGitHubCallsPerCreatedRunner(t *testing.T) {
	perRunner, counts := createdCost(t, 10)
	if perRunner != 1 || counts[fakegithub.RepoJITConfig] != 10 {
		t.Errorf("creating 10 runners made requests %v (%.2f a runner besides listing), want one JIT config each", counts, perRunner)
	}
}

// BenchmarkGitHubCallsPerReconcile prints, for N = 10, 250 and 1000
// runners at steady state,
//
//	BENCH github-calls-per-reconcile <calls> calls n=<N> minimum=<ceil(N/100)> service-cycle=<calls>
//
// (service-cycle: the service's whole cycle, Prepare's check for a newer
// runner application included)
// and then, for 10 runners created from none,
//
//	BENCH github-calls-per-created-runner <calls> calls minimum=1
//
// where calls are the requests besides the list pages.
func BenchmarkGitHubCallsPerReconcile(b *testing.B) {
	for _, n := range costSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			bed := newCostBed(b, n)
			e := bed.engine(n)
			steadyCost(b, bed, e, n) // the first cycle notes every runner online
			calls := 0
			b.ResetTimer()
			for range b.N {
				calls += total(steadyCost(b, bed, e, n))
			}
			b.StopTimer()
			perCycle := float64(calls) / float64(b.N)
			service := total(serviceCycleCost(b, bed, n))
			b.ReportMetric(perCycle, "calls/reconcile")
			b.ReportMetric(float64(service), "calls/service-cycle")
			fmt.Printf("BENCH github-calls-per-reconcile %g calls n=%d minimum=%d service-cycle=%d\n", perCycle, n, listPages(n), service)
		})
	}
	b.Run("created", func(b *testing.B) {
		perRunner, _ := createdCost(b, 10)
		b.ReportMetric(perRunner, "calls/created-runner")
		fmt.Printf("BENCH github-calls-per-created-runner %g calls minimum=1\n", perRunner)
	})
}
