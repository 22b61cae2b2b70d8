// Package e2e runs the packed charm end to end, for real: the Juju hook
// harness runs dispatch, the charm starts a real Pebble, Pebble runs the real
// github-runner-manager, which builds a runner image and starts runners on
// the real LXD daemon; the runners register at the fake GitHub and run jobs.
package e2e

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/stack"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

const token = "ghp_E2E_RECOGNISABLE_TOKEN_0123456789"

func newBed(t *testing.T) *stack.Bed {
	return stack.New(t, stack.Options{Name: "e2e", Token: token, Label: "e2e", Runners: 3})
}

func TestRunnersEndToEnd(t *testing.T) {
	b := newBed(t)
	b.Unit.Deploy()
	b.Converge(3)
	if s := b.Unit.Status(); s.Status == "blocked" {
		t.Fatalf("status = %+v", s)
	}

	t.Log("two jobs run; their runners are replaced")
	first := b.RunnerNames()
	jobs := []fakegithub.Job{b.Assign(fakegithub.JobSpec{Command: "echo done"}), b.Assign(fakegithub.JobSpec{Command: "true"})}
	for _, j := range jobs {
		if done := b.WaitJob(j.ID); done.ExitCode != 0 {
			t.Errorf("job %d: %+v", j.ID, done)
		}
	}
	b.Converge(3)
	if kept := stack.Intersect(first, b.RunnerNames()); len(kept) != 1 {
		t.Errorf("after two jobs, %d of the first runners remain, want 1", len(kept))
	}
	b.Unit.Hook("update-status")
	if s := b.Unit.Status(); s != (harness.Status{Status: "active", Message: "3 runners: 3 idle, 0 busy"}) {
		t.Errorf("status = %+v", s)
	}

	t.Log("flush-runners replaces idle runners and leaves the busy one")
	busy := b.Assign(fakegithub.JobSpec{Sleep: 10 * time.Minute})
	r := b.Unit.Action("flush-runners", nil)
	if r.Status != "completed" || r.Results["removed"] != "2" {
		t.Fatalf("flush-runners: %+v", r)
	}
	if !slices.Contains(b.RunnerNames(), busy.RunnerName) {
		t.Fatalf("the busy runner %s was flushed", busy.RunnerName)
	}
	b.Converge(3)

	t.Log("flush-runners flush-busy=true replaces every runner")
	before := b.RunnerNames()
	r = b.Unit.Action("flush-runners", map[string]any{"flush-busy": true})
	if r.Status != "completed" || r.Results["removed"] != "3" {
		t.Fatalf("flush-runners flush-busy=true: %+v", r)
	}
	// GitHub notices the busy runner's instance is gone, fails its job and
	// drops the ephemeral runner; until then it refuses to delete it.
	b.GitHub.CompleteJob(busy.ID, 1)
	b.Converge(3)
	if kept := stack.Intersect(before, b.RunnerNames()); len(kept) != 0 {
		t.Errorf("runners survived a busy flush: %v", kept)
	}

	t.Log("a labels change replaces the runners with new labels")
	before = b.RunnerNames()
	if r := b.Unit.Configure(map[string]any{"labels": "e2e,fresh"}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	b.Converge(3)
	if kept := stack.Intersect(before, b.RunnerNames()); len(kept) != 0 {
		t.Errorf("runners with the old labels survived: %v", kept)
	}
	for _, runner := range b.GitHub.Runners(stack.Repo) {
		if !stack.HasLabel(runner, "fresh") {
			t.Errorf("runner %s lacks the new label: %+v", runner.Name, runner.Labels)
		}
	}

	t.Log("the manager killed while creating runners is restarted and nothing leaks")
	// A busy flush removes all three runners and creates three more; the
	// manager dies somewhere in the middle of that.
	flushed := make(chan harness.ActionResult, 1)
	go func() { flushed <- b.Unit.Action("flush-runners", map[string]any{"flush-busy": true}) }()
	time.Sleep(3 * time.Second)
	if pid := b.ManagerPID(); pid == 0 {
		t.Fatal("cannot find the manager process")
	} else if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r := <-flushed; r.Status != "failed" {
		t.Logf("the flush finished before the kill: %+v", r)
	}
	// Pebble starts a new process before it listens: wait until the new one
	// answers, not just until it runs.
	stack.WaitFor(t, time.Minute, "Pebble restarts the manager, and it answers", func() bool {
		return b.ManagerPID() != 0 && b.Unit.Action("check-runners", nil).Status == "completed"
	})
	b.Converge(3)

	t.Log("a revoked token blocks the unit, names the token and deletes nothing")
	before = b.RunnerNames()
	b.GitHub.RemoveToken(token)
	b.Unit.Action("reconcile-runners", nil)
	b.Unit.Hook("update-status")
	if s := b.Unit.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "token") {
		t.Errorf("status with a revoked token = %+v", s)
	}
	if _, instances, _ := b.State(); !slices.Equal(instances, before) {
		t.Errorf("instances changed while GitHub refused the token: %v, were %v", instances, before)
	}
	b.GitHub.AddToken(fakegithub.Token{Value: token, Scope: stack.Repo})

	t.Log("remove leaves no instance and no GitHub runner of the unit")
	if r := b.Unit.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	if r := b.Unit.Hook("remove"); r.Code != 0 {
		t.Fatalf("remove: %s", r.Stderr)
	}
	if _, instances, runners := b.State(); len(instances) != 0 || len(runners) != 0 {
		t.Errorf("left after remove: instances %v, runners %v", instances, runners)
	}
	for _, s := range b.Unit.StatusHistory() {
		if strings.Contains(s.Message, token) {
			t.Errorf("the token leaked into status %q", s.Message)
		}
	}
}
