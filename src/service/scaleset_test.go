package service

import (
	"log/slog"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
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
