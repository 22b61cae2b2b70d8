package service

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// A unit with a scale set registers its runners in the set; the REST list
// shows them to the engine as any runner, so the next cycle makes none.
func TestScaleSetPlatformRegistersInTheSet(t *testing.T) {
	fake := fakegithub.NewTest(t, fakegithub.Options{})
	f := &config.File{Unit: "github-runner/0", Model: managertest.Model, MaxRunners: 4,
		GitHub: config.GitHub{Path: "org", APIURL: fake.URL(), Token: fakegithub.DefaultToken, ScaleSet: "linux", Labels: []string{"x64"}}}
	log := slog.New(slog.DiscardHandler)
	client, err := github.New(GitHubConfig(f, log))
	if err != nil {
		t.Fatal(err)
	}
	set, err := scaleset.New(ScaleSetConfig(f, managertest.Identity, log))
	if err != nil {
		t.Fatal(err)
	}
	scope := runner.NewScope(fake.URL(), "org")
	p := newPlatform(client, managertest.Identity, scope, f.GitHub.Labels)
	p.scaleSet = set
	cloud := managertest.NewCloud()
	e := manager.New(cloud, p, manager.Settings{Identity: managertest.Identity, Scope: scope, Target: 2}, log)
	for range 2 {
		if _, err := e.Run(t.Context(), manager.Reconcile); err != nil {
			t.Fatal(err)
		}
	}
	sets := fake.ScaleSets("org")
	if len(sets) != 1 || sets[0].Name != managertest.Identity.ScaleSetName("linux") {
		t.Fatalf("scale sets %+v", sets)
	}
	if got := sets[0].Statistics.TotalRegisteredRunners; got != 2 || cloud.Creates != 2 {
		t.Errorf("%d runners registered in the set, %d creates; want 2, 2", got, cloud.Creates)
	}
	for _, r := range fake.Runners("org") {
		if managertest.Identity.Generation(r.Name) != runner.Current {
			t.Errorf("runner %s is not the unit's", r.Name)
		}
	}
}

// waitUntil polls cond until it holds, or fails the test after a while.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The service of a scale set's unit, end to end against the fake GitHub:
// it makes the unit's set and listens to it; jobs GitHub assigns the set
// raise the target, and the loop, woken, creates runners for them at once
// (the interval is an hour), up to the cap; the report says the demand;
// stopping closes the session.
func TestRunScaleSetUnit(t *testing.T) {
	fake := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 200 * time.Millisecond})
	instances := managertest.NewCloud()
	f, ctx, done := runScaleSetUnit(t, fake, instances)
	owner := func() string {
		sets := fake.ScaleSets("org")
		if len(sets) != 1 || sets[0].Name != managertest.Identity.ScaleSetName("linux") {
			return ""
		}
		return sets[0].SessionOwner
	}
	waitUntil(t, "the unit's scale set, listened to", func() bool { return owner() != "" })
	waitUntil(t, "the base runner", func() bool { return len(instances.Names()) == 1 })

	for range 3 {
		if _, err := fake.QueueJob("org", []string{"linux", "x64"}, fakegithub.JobSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "a runner for the demand", func() bool { return len(instances.Names()) == 2 })
	client := api.NewClient(filepath.Join(f.StateDir, api.SocketName), 10*time.Second)
	waitUntil(t, "the demand in the report", func() bool {
		r, err := client.Runners(ctx)
		return err == nil && r.OnDemand && r.Max == 2 && r.Desired == 2 && r.Problem == ""
	})
	if n := len(instances.Names()); n > 2 {
		t.Errorf("%d instances, more than the cap of 2", n)
	}

	done.cancel()
	select {
	case <-done.done:
		if done.err != nil {
			t.Fatal(done.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of the stop")
	}
	if o := owner(); o != "" {
		t.Errorf("the session of %s is left after the stop", o)
	}
}

// running is a service Run in progress.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, err its error
	err    error
}

// runScaleSetUnit runs the service of github-runner/0 with a base of 1 and
// a cap of 2 on the scale set "linux" of the fake's org, on instances.
// edits change the config file first.
func runScaleSetUnit(t *testing.T, fake *fakegithub.Server, instances *managertest.Cloud, edits ...func(*config.File)) (*config.File, context.Context, *running) {
	t.Helper()
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		// Run has returned (the cleanup below runs first).
		if strings.Contains(logs.String(), fakegithub.DefaultToken) {
			t.Error("the token was logged")
		}
		if !strings.Contains(logs.String(), "scale-set=") {
			t.Errorf("the debug log says nothing of the scale set:\n%s", logs)
		}
	})
	f := &config.File{Unit: "github-runner/0", Model: managertest.Model, StateDir: t.TempDir(), Runners: 1, MaxRunners: 2,
		ReconcileInterval: time.Hour,
		GitHub:            config.GitHub{Path: "org", APIURL: fake.URL(), Token: fakegithub.DefaultToken, ScaleSet: "linux", Labels: []string{"x64"}}}
	for _, edit := range edits {
		edit(f)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = Run(ctx, f, func(*config.File, *slog.Logger) (cloud.Provider, error) { return preparedCloud{instances}, nil },
			slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return f, ctx, r
}

// A GitHub Enterprise Server without scale sets is the unit's problem, in
// words, once, and only the operator can clear it: Blocked, also when no
// create failed for it (a base of 0 creates nothing).
func TestRunScaleSetUnitOnOldGHES(t *testing.T) {
	for _, base := range []int{1, 0} {
		t.Run(fmt.Sprintf("base %d", base), func(t *testing.T) { testRunScaleSetUnitOnOldGHES(t, base) })
	}
}

func testRunScaleSetUnitOnOldGHES(t *testing.T, base int) {
	fake := fakegithub.NewTest(t, fakegithub.Options{GHESVersion: "3.8"})
	f, ctx, _ := runScaleSetUnit(t, fake, managertest.NewCloud(), func(f *config.File) { f.Runners = base })
	client := api.NewClient(filepath.Join(f.StateDir, api.SocketName), 10*time.Second)
	want := "this GitHub Enterprise Server does not support runner scale sets (they need 3.9 or later): unset runner-scale-set to use classic runners"
	waitUntil(t, "the problem in the report, blocking", func() bool {
		r, err := client.Runners(ctx)
		return err == nil && !r.AsOf.IsZero() && strings.HasSuffix(r.Problem, want) && strings.Count(r.Problem, want) == 1 && r.Blocking
	})
}
