// Package faults is the fault suite: the packed charm, the real Pebble and
// github-runner-manager, real LXD and the fake GitHub, put through bad days
// (the manager killed at random points, GitHub storms, the LXD daemon
// restarted, runners that get stuck), with the same expectations each time:
// no crash, no busy runner deleted, the unit's status names the cause, and
// within two cycles of the fault ending exactly the expected runners, with
// no leaked instance and no leaked GitHub runner.
//
// The whole suite takes about 10 minutes on a 2-core machine (see each
// test for its share). FAULTS_SEED replays the kill points of a failed run;
// FAULTS_KILLS changes their number: 20 by default, 5 per operation.
package faults

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/stack"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

const (
	token = "ghp_FAULTS_RECOGNISABLE_TOKEN_0123456789"
	label = "faults"
)

// deploy deploys a unit keeping runners runners and waits for them. The
// reconcile interval is an hour so that every cycle in a test is one the
// test asked for (or the one a freshly started manager runs at once).
func deploy(t *testing.T, runners int, config map[string]any) *stack.Bed {
	t.Helper()
	c := map[string]any{"reconcile-interval": 60}
	for k, v := range config {
		c[k] = v
	}
	b := stack.New(t, stack.Options{Name: "flt", Token: token, Label: label, Runners: runners, Config: c})
	b.Unit.Deploy()
	b.Converge(runners)
	return b
}

// busyGuard is a runner given a long job before a fault: whatever the
// fault, it must still be running that job afterwards.
type busyGuard struct {
	b   *stack.Bed
	job fakegithub.Job
}

// holdBusy gives one idle runner a job that outlasts the test.
func holdBusy(b *stack.Bed) *busyGuard {
	b.T.Helper()
	job := b.Assign(fakegithub.JobSpec{Name: "long-job", Sleep: time.Hour})
	g := &busyGuard{b: b, job: job}
	stack.WaitFor(b.T, time.Minute, "the guard's runner is busy", func() bool {
		r, ok := b.GitHub.Runner(job.RunnerID)
		return ok && r.Busy
	})
	// Let GitHub's job fail when the test ends, so the stop hook can
	// remove the runner's record.
	b.T.Cleanup(func() { b.GitHub.CompleteJob(job.ID, 1) })
	return g
}

// check fails the test unless the guard's runner is still busy with its
// job at GitHub and its instance still runs.
func (g *busyGuard) check(when string) {
	t := g.b.T
	t.Helper()
	r, ok := g.b.GitHub.Runner(g.job.RunnerID)
	if !ok || !r.Busy {
		t.Errorf("%s: the busy runner %s is gone or idle at GitHub (%+v, listed %v)", when, g.job.RunnerName, r, ok)
	}
	if job, ok := g.b.GitHub.Job(g.job.ID); !ok || job.State == fakegithub.JobCompleted {
		t.Errorf("%s: the busy runner's job ended: %+v", when, job)
	}
	state, _, err := g.b.LXD.GetInstanceState(g.job.RunnerName)
	if err != nil || state.StatusCode != api.Running {
		t.Errorf("%s: the busy runner's instance %s is not running: %v %v", when, g.job.RunnerName, state, err)
	}
}

// recoversWithin2Cycles runs two reconcile cycles, then (without more
// cycles) gives the runners those cycles created a bounded time to come
// online: exactly n runners, each instance matched by a GitHub runner and
// each GitHub runner by an instance. A failed cycle (GitHub or LXD still
// unavailable) counts as one of the two.
func recoversWithin2Cycles(b *stack.Bed, n int) {
	b.T.Helper()
	for range 2 {
		b.Unit.Action("reconcile-runners", nil)
	}
	var online int
	var instances, runners []string
	ok := stack.Poll(90*time.Second, func() bool {
		online, instances, runners = b.State()
		return online == n && len(runners) == n && slices.Equal(instances, runners)
	})
	if !ok {
		b.T.Fatalf("two cycles after the fault: %d online, want %d; instances %v, GitHub runners %v", online, n, instances, runners)
	}
}

// reconcileIsQuiet runs one more cycle and checks that it had nothing left
// to repair (delta 0): the state after recovery is steady.
func reconcileIsQuiet(b *stack.Bed) {
	b.T.Helper()
	r := b.Unit.Action("reconcile-runners", nil)
	if r.Status != "completed" || r.Results["delta"] != "0" {
		b.T.Errorf("a cycle after recovery still changed something: %+v", r)
	}
}

// run runs a command with a bound, for the LXD daemon's scripts.
func run(t *testing.T, limit time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}
