package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// Runners on LXD register with what config.sh would give them (self-hosted,
// linux, the machine's architecture), the Python charm's extras (the
// application, the base image), then the labels option; a job that asks
// for the first ones (runs-on: [self-hosted, linux, x64, <app>]) runs.
func TestRunnerLabelsOnLXD(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "lbl", Token: token, Label: "e2e-lbl", Runners: 1})
	b.Unit.Deploy()
	b.Converge(1)
	app, _, _ := strings.Cut(b.Unit.Name, "/")
	want := []string{"self-hosted", "linux", "x64", app, lxdtest.BaseImageAlias, "e2e-lbl"}
	runners := b.GitHub.Runners(stack.Repo)
	if len(runners) != 1 {
		t.Fatalf("%d runners registered, want 1", len(runners))
	}
	var custom []string // what the registration asked for beyond GitHub's read-only labels
	for _, l := range runners[0].Labels {
		if l.Type == "custom" {
			custom = append(custom, l.Name)
		}
	}
	for _, label := range want {
		if !slices.ContainsFunc(runners[0].Labels, func(l fakegithub.Label) bool { return strings.EqualFold(l.Name, label) }) {
			t.Errorf("runner %s lacks label %q: %+v", runners[0].Name, label, runners[0].Labels)
		}
	}
	if wantCustom := []string{app, lxdtest.BaseImageAlias, "e2e-lbl"}; !slices.Equal(custom, wantCustom) {
		t.Errorf("custom labels %v, want %v in this order", custom, wantCustom)
	}
	job, err := b.GitHub.AssignJobToAny(stack.Repo, []string{"self-hosted", "linux", "x64", app}, fakegithub.JobSpec{Command: "true"})
	if err != nil {
		t.Fatalf("a job for [self-hosted, linux, x64, %s] found no runner: %v", app, err)
	}
	if done := b.WaitJob(job.ID); done.ExitCode != 0 {
		t.Errorf("job: %+v", done)
	}
}
