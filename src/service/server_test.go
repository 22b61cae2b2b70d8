package service_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/src/service"
	"github.com/canonical/github-runner-charm/src/service/api"
)

func startServer(t *testing.T, target int) (*api.Client, *managertest.Platform, string) {
	t.Helper()
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: target}, log),
		Expected: target, Interval: time.Hour, Metrics: metrics.New("github-runner", nil), Log: log,
	}
	client, socket := serve(t, srv)
	return client, platform, socket
}

// serve answers the socket API of srv until the test ends.
func serve(t *testing.T, srv *service.Server) (*api.Client, string) {
	t.Helper()
	socket := filepath.Join(t.TempDir(), api.SocketName)
	l, err := service.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	return api.NewClient(socket, 10*time.Second), socket
}

func TestAPI(t *testing.T) {
	client, platform, socket := startServer(t, 3)
	ctx := context.Background()
	if info, err := os.Stat(socket); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", info.Mode(), err)
	}
	result, err := client.Reconcile(ctx)
	if err != nil || result.Delta != 3 {
		t.Fatalf("reconcile = %+v, %v", result, err)
	}
	for _, name := range platform.Names() {
		platform.Set(name, true, false)
	}
	platform.Set(platform.Names()[0], true, true)
	client.Reconcile(ctx) // the report is the last cycle's view
	report, err := client.Runners(ctx)
	if err != nil || report.Online != 3 || report.Busy != 1 || report.Expected != 3 || len(report.Runners) != 3 || report.Problem != "" {
		t.Fatalf("runners = %+v, %v", report, err)
	}
	flushed, err := client.Flush(ctx, false)
	if err != nil || flushed.Removed != 2 {
		t.Errorf("flush idle = %+v, %v", flushed, err)
	}
	flushed, err = client.Flush(ctx, true)
	if err != nil || flushed.Removed != 3 {
		t.Errorf("flush all = %+v, %v", flushed, err)
	}
	if _, err := client.UpdateDependencies(ctx); err == nil || !strings.Contains(err.Error(), "not managed by the charm") {
		t.Errorf("update-dependencies without an updater: %v", err)
	}
}

func TestProblemIsReported(t *testing.T) {
	client, platform, _ := startServer(t, 1)
	platform.FailRegister = errors.New("the GitHub token is invalid or expired")
	if _, err := client.Reconcile(context.Background()); err != nil {
		t.Fatal(err) // a create failure is not a failed cycle
	}
	report, err := client.Runners(context.Background())
	if err != nil || !strings.Contains(report.Problem, "token is invalid or expired") {
		t.Errorf("report = %+v, %v", report, err)
	}
	platform.FailList = errors.New("GitHub is down")
	if _, err := client.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "GitHub is down") {
		t.Errorf("reconcile with GitHub down: %v", err)
	}
}

func TestBadFlushParameter(t *testing.T) {
	_, _, socket := startServer(t, 0)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Post("http://manager/flush?busy=maybe", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d", resp.StatusCode)
	}
	resp, err = hc.Get("http://manager/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "expected_runners_count{") {
		t.Errorf("metrics lack the expected gauge")
	}
}

func TestDrainCreatesNothing(t *testing.T) {
	client, platform, _ := startServer(t, 2)
	ctx := context.Background()
	client.Reconcile(ctx)
	for _, name := range platform.Names() {
		platform.Set(name, true, false)
	}
	out, err := client.Drain(ctx, false)
	if err != nil || out.Removed != 2 || len(platform.Names()) != 0 {
		t.Errorf("drain = %+v, %v, runners left %v", out, err, platform.Names())
	}
	if err := client.Health(ctx); err != nil {
		t.Errorf("health: %v", err)
	}
}

// The charm drains just before it stops the manager (a settings change,
// the unit going away): a periodic cycle after the drain must not create
// runners again, which the stop would then leave behind.
func TestNoPeriodicCreateAfterADrain(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 2}, log),
		Expected: 2, Interval: 10 * time.Millisecond, Log: log,
	}
	client, _ := serve(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() { srv.Run(ctx); close(loopDone) }()
	t.Cleanup(func() { cancel(); <-loopDone })

	for deadline := time.Now().Add(5 * time.Second); len(cloud.Names()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the loop created %v, want 2 runners", cloud.Names())
		}
	}
	for _, busy := range []bool{false, true} {
		if _, err := client.Drain(context.Background(), busy); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // ten intervals
		if names := cloud.Names(); len(names) != 0 {
			t.Errorf("drain busy=%v: the loop created %v after it", busy, names)
		}
		for _, name := range cloud.Names() {
			cloud.Delete(context.Background(), name)
			platform.Delete(name)
		}
	}
}

// When the cloud cannot start runners (Prepare fails: an image gone), a
// cycle still cleans up but registers nothing at GitHub.
func TestPrepareFailureCreatesNothing(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 2}, log),
		Expected: 2, Interval: time.Hour, Log: log,
		Prepare: func(context.Context) (bool, error) {
			return false, errors.New(`OpenStack image not found: no image named "noble"`)
		},
	}
	client, _ := serve(t, srv)

	orphan := platform.Add(managertest.Identity.NewName(), false, false)
	result, err := client.Reconcile(context.Background())
	if err != nil || result.Delta != -1 {
		t.Errorf("reconcile = %+v, %v; want the orphan removed and nothing created", result, err)
	}
	if platform.Removes != 1 || len(platform.Names()) != 0 || cloud.Creates != 0 {
		t.Errorf("removes %d (orphan %d), runners %v, creates %d", platform.Removes, orphan, platform.Names(), cloud.Creates)
	}
	if report, _ := client.Runners(context.Background()); !strings.Contains(report.Problem, `no image named "noble"`) {
		t.Errorf("problem = %q", report.Problem)
	}
}

// A cycle that cannot read its snapshot saw nothing: the gauges and the
// events log keep the last cycle's truth (no spurious runner_stop for a
// busy runner, no second runner_start later), and a failed cycle counts.
func TestFailedSnapshotReportsNothing(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var events strings.Builder
	m := metrics.New("github-runner", &events)
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 2}, log),
		Expected: 2, Interval: time.Hour, Metrics: m, Log: log,
	}
	client, socket := serve(t, srv)
	ctx := context.Background()

	client.Reconcile(ctx)
	names := platform.Names()
	platform.Set(names[0], true, true)
	platform.Set(names[1], true, false)
	client.Reconcile(ctx) // busy 1, idle 1: runner_installed ×2, runner_start ×1
	gauges := func() string {
		var lines []string
		for _, line := range strings.Split(scrape(t, socket), "\n") {
			if strings.HasPrefix(line, "idle_runners_count{") || strings.HasPrefix(line, "busy_runners_count{") {
				lines = append(lines, line)
			}
		}
		return strings.Join(lines, "; ")
	}
	before, eventsBefore := gauges(), events.String()
	if strings.Count(before, ";") != 1 {
		t.Fatalf("the scrape lacks the idle and busy gauges: %q", before)
	}

	platform.FailList = errors.New("GitHub is down")
	if _, err := client.Reconcile(ctx); err == nil {
		t.Fatal("a cycle without GitHub's list succeeded")
	}
	if got := gauges(); got != before {
		t.Errorf("a failed cycle moved the gauges: %s, was %s", got, before)
	}
	if got := events.String(); got != eventsBefore {
		t.Errorf("a failed cycle wrote events: %s", strings.TrimPrefix(got, eventsBefore))
	}
	if !strings.Contains(scrape(t, socket), `github_runner_reconcile_failures_total{reason="list"} 1`) {
		t.Error("the failed cycle was not counted")
	}
	platform.FailList = nil
	client.Reconcile(ctx)
	if n := strings.Count(events.String(), `"event":"runner_start"`); n != 1 {
		t.Errorf("runner_start written %d times for one job", n)
	}
	if strings.Contains(events.String(), `"event":"runner_stop"`) {
		t.Error("a runner_stop for a runner that never stopped")
	}
}

// scrape reads /metrics from the socket.
func scrape(t *testing.T, socket string) string {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := c.Get("http://unit" + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// Status and check-runners never wait for a cycle: with one stuck in a slow
// GitHub list, /runners answers at once from the last completed cycle,
// saying when that was, and costs GitHub nothing.
func TestRunnersNeverWaitForACycle(t *testing.T) {
	client, platform, _ := startServer(t, 2)
	ctx := context.Background()
	if _, err := client.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	stuck, release := make(chan struct{}), make(chan struct{})
	var lists atomic.Int32
	platform.OnList = func() {
		if lists.Add(1) == 1 {
			close(stuck)
			<-release
		}
	}
	defer close(release)
	go client.Reconcile(ctx)
	<-stuck
	start := time.Now()
	report, err := client.Runners(ctx)
	if elapsed := time.Since(start); err != nil || elapsed > time.Second {
		t.Fatalf("runners took %v during a stuck cycle: %+v, %v", elapsed, report, err)
	}
	if len(report.Runners) != 2 || report.AsOf.IsZero() || time.Since(report.AsOf) > time.Minute {
		t.Errorf("report %+v: want the last cycle's 2 runners and its time", report)
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("GitHub listed %d times, want only the stuck cycle's", n)
	}
}

// An image build has a budget of its own, well past the cycle's 15 minutes
// (a virtual machine image can take 30), and while it runs the report says
// so at once, never waiting for it; its failure is then the report's problem.
func TestImageBuildHasItsOwnBudgetAndShowsProgress(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	started, release := make(chan time.Duration, 1), make(chan error)
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 2}, log),
		Expected: 2, Interval: time.Hour, Log: log,
		Prepare: func(ctx context.Context) (bool, error) {
			deadline, _ := ctx.Deadline()
			started <- time.Until(deadline)
			return false, <-release
		},
		PrepareProgress: func() string { return "downloading base image ubuntu:24.04: rootfs: 42% (3.2MB/s)" },
	}
	client, _ := serve(t, srv)
	ctx := context.Background()
	reconciled := make(chan error, 1)
	go func() { _, err := client.Reconcile(ctx); reconciled <- err }()
	if budget := <-started; budget < 30*time.Minute {
		t.Errorf("the image build's budget is %v, want at least the 30 minutes a VM image can take", budget.Round(time.Minute))
	}
	time.Sleep(2500 * time.Millisecond)
	start := time.Now()
	report, err := client.Runners(ctx)
	if elapsed := time.Since(start); err != nil || elapsed > time.Second {
		t.Fatalf("runners took %v during a build: %+v, %v", elapsed, report, err)
	}
	if since := time.Since(report.PreparingSince); report.PreparingSince.IsZero() || since < 2*time.Second || since > time.Minute {
		t.Errorf("report during a build of 2.5s: preparing since %v (%v ago)", report.PreparingSince, since)
	}
	if report.Preparing != "downloading base image ubuntu:24.04: rootfs: 42% (3.2MB/s)" {
		t.Errorf("report during a build: preparing %q, want the cloud's progress", report.Preparing)
	}
	release <- errors.New("cannot build the runner image: cloud-init failed")
	if err := <-reconciled; err != nil {
		t.Fatal(err)
	}
	report, err = client.Runners(ctx)
	if err != nil || !report.PreparingSince.IsZero() || report.Preparing != "" || !strings.Contains(report.Problem, "cloud-init failed") || cloud.Creates != 0 {
		t.Errorf("after the failed build: %+v, %v, %d creates", report, err, cloud.Creates)
	}
}

// The cloud's teardown runs only once no instance of the unit is left,
// after a build in progress has ended (the drain cuts it short), and no
// cycle runs after it: nothing would be made again.
func TestTeardownOnlyOnceNoInstanceIsLeft(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var events []string
	var mu sync.Mutex
	note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	building := make(chan struct{}, 1)
	var builds atomic.Int32
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 2}, log),
		Expected: 2, Interval: time.Hour, Log: log,
		Prepare: func(ctx context.Context) (bool, error) {
			if builds.Add(1) == 1 {
				return false, nil // the first cycle's image is there
			}
			building <- struct{}{}
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // a build takes a moment to stop
			note("build ended")
			return false, ctx.Err()
		},
		Teardown: func(context.Context) error { note("teardown"); return nil },
	}
	client, _ := serve(t, srv)
	ctx := context.Background()
	if _, err := client.Reconcile(ctx); err != nil || len(cloud.Names()) != 2 {
		t.Fatalf("reconcile: %v, instances %v", err, cloud.Names())
	}
	go client.Reconcile(ctx) // a second cycle, building an image
	<-building
	err := client.Teardown(ctx)
	if err == nil || !strings.Contains(err.Error(), "2 instances of this unit are left") {
		t.Errorf("teardown with 2 instances: %v", err)
	}
	if _, err := client.Drain(ctx, true); err != nil || len(cloud.Names()) != 0 {
		t.Fatalf("drain: %v, instances %v", err, cloud.Names())
	}
	if err := client.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if strings.Join(events, ", ") != "build ended, teardown" {
		t.Errorf("events %v, want the build ended before the one teardown", events)
	}
	mu.Unlock()
	if _, err := client.Reconcile(ctx); err == nil || len(cloud.Names()) != 0 {
		t.Errorf("a reconcile after the teardown: %v, instances %v", err, cloud.Names())
	}
	if _, err := client.Drain(ctx, true); err != nil {
		t.Errorf("a drain after the teardown (a stop hook retried): %v", err)
	}
}

// update-dependencies is an image build like a cycle's: it shows in the
// report while it runs, has the build's budget rather than the action's,
// and none starts once the unit drains (it would rebuild the image a
// teardown is about to remove).
func TestUpdateDependenciesIsAnImageBuild(t *testing.T) {
	cloud, platform := managertest.NewCloud(), managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	started, release := make(chan time.Duration, 1), make(chan struct{})
	var updates atomic.Int32
	srv := &service.Server{
		Engine:   manager.New(cloud, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 1}, log),
		Expected: 1, Interval: time.Hour, Log: log,
		UpdateDependencies: func(ctx context.Context) (api.UpdateResult, error) {
			updates.Add(1)
			deadline, _ := ctx.Deadline()
			started <- time.Until(deadline)
			<-release
			return api.UpdateResult{Updated: true, RunnerVersion: "2.330.0"}, nil
		},
	}
	client, _ := serve(t, srv)
	ctx := context.Background()
	updated := make(chan error, 1)
	go func() { _, err := client.UpdateDependencies(ctx); updated <- err }()
	if budget := <-started; budget < 30*time.Minute {
		t.Errorf("update-dependencies' build has %v, want the image build's budget", budget.Round(time.Minute))
	}
	time.Sleep(2500 * time.Millisecond)
	if report, err := client.Runners(ctx); err != nil || report.PreparingSince.IsZero() {
		t.Errorf("report during update-dependencies' build: %+v, %v", report, err)
	}
	close(release)
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	if _, err := client.Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.UpdateDependencies(ctx); err == nil {
		t.Error("update-dependencies after a drain succeeded")
	}
	if n := updates.Load(); n != 1 {
		t.Errorf("%d image builds, want none after the drain", n)
	}
}

// blockingCloud's creates never finish by themselves (a slow cloud);
// each leaves its instance, as a create cut short whose revert failed.
type blockingCloud struct {
	*managertest.Cloud
	creating chan struct{}
}

func (c *blockingCloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	if err := c.Cloud.Create(ctx, req); err != nil {
		return err
	}
	c.creating <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// A drain stops creation first: the cycle in progress, creating on a slow
// cloud, is cut short rather than waited for (a stop hook waited out
// every create), and the drain leaves nothing of what it was making.
func TestDrainCutsTheCreatesOfTheCycleInProgress(t *testing.T) {
	c := &blockingCloud{Cloud: managertest.NewCloud(), creating: make(chan struct{}, 10)}
	platform := managertest.NewPlatform()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine: manager.New(c, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: 3,
			CallTimeout: time.Minute}, log),
		Expected: 3, Interval: time.Hour, Log: log,
	}
	client, _ := serve(t, srv)
	ctx := context.Background()
	go client.Reconcile(ctx)
	<-c.creating
	start := time.Now()
	if _, err := client.Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the drain took %v: it waited for the creates it was about to undo", took.Round(time.Second))
	}
	if left, registered := c.Names(), platform.Names(); len(left) != 0 || len(registered) != 0 {
		t.Errorf("after the drain: instances %v, registrations %v", left, registered)
	}
}
