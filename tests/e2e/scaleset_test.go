package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/stack"
)

const (
	scaleSetToken = "ghp_E2E_SCALESET_TOKEN_0123456789abcdef"
	scaleSetLabel = "ssl"
	// scaleSetName is runner-scale-set; each unit's set is named after it.
	scaleSetName = "e2e-set"
	// scaleSetMax is max-total-virtual-machines.
	scaleSetMax = 4
)

// A unit with a runner scale set scales between base and max on GitHub's
// demand, through the charm, on real LXD: base=1, max=4; three jobs give
// three busy runners and one idle; their end takes it back to one; six
// jobs never make more than four instances; the manager killed with
// SIGKILL mid-burst still runs every job and leaks nothing; flush-runners
// spares a busy runner; a second unit with the same labels takes a share
// of the jobs with a scale set of its own, and no job gets a runner from
// both; the drain at removal leaves no instance and no GitHub runner.
// reconcile-interval is an hour: the demand feed and LXD's events do the
// work, not the interval's cycles.
func TestScaleSetScalesOnDemand(t *testing.T) {
	// A killed manager's message session stays GitHub's until it expires;
	// the fake's expiry is shortened from a minute to keep the test short.
	b := stack.New(t, stack.Options{Name: "ss", Token: scaleSetToken, Label: scaleSetLabel,
		Base: 1, Max: scaleSetMax, ScaleSet: scaleSetName,
		Config: map[string]any{"reconcile-interval": 60},
		GitHub: fakegithub.Options{ScaleSetSessionExpiry: 15 * time.Second}})
	peak := b.PeakInstances(t)
	b.Unit.Deploy()
	waitRunners(t, b, 1, 0, 3*time.Minute)
	sets := b.GitHub.ScaleSets(stack.Repo)
	if len(sets) != 1 || !strings.HasPrefix(sets[0].Name, scaleSetName+"-0-") || !slices.Contains(sets[0].Labels, scaleSetLabel) {
		t.Fatalf("scale sets = %+v, want one of the unit, named after %q, with label %q", sets, scaleSetName, scaleSetLabel)
	}

	t.Log("three jobs: three busy runners and one idle")
	jobs := queueJobs(t, b, 3, 30*time.Second)
	waitRunners(t, b, 1, 3, 2*time.Minute)
	waitJobs(t, b, jobs, 3*time.Minute)

	t.Log("the jobs ended: back to the base, one idle runner")
	waitRunners(t, b, 1, 0, 2*time.Minute)

	t.Log("six jobs: never more than four instances, four running at once")
	jobs = queueJobs(t, b, 6, 15*time.Second)
	waitRunners(t, b, 0, scaleSetMax, 2*time.Minute)
	waitJobs(t, b, jobs, 4*time.Minute)
	waitRunners(t, b, 1, 0, 2*time.Minute)

	t.Log("the manager killed mid-burst: every job runs, nothing leaks")
	jobs = queueJobs(t, b, 6, 5*time.Second)
	time.Sleep(2 * time.Second) // the listener has the demand; creates are under way
	started := 0
	for _, id := range jobs {
		if job, _ := b.GitHub.Job(id); !job.StartedAt.IsZero() {
			started++
		}
	}
	t.Logf("SIGKILL with %d of %d jobs started and %d instances", started, len(jobs), len(b.Instances()))
	killManager(t, b)
	waitJobs(t, b, jobs, 5*time.Minute)
	waitRunners(t, b, 1, 0, 3*time.Minute)

	t.Log("flush-runners spares the busy runner")
	busy := queueJobs(t, b, 1, 10*time.Minute)[0]
	runner := waitStarted(t, b, busy, 2*time.Minute).RunnerName
	if r := b.Unit.Action("flush-runners", nil); r.Status != "completed" {
		t.Fatalf("flush-runners: %+v", r)
	}
	if !slices.Contains(b.Instances(), runner) || !slices.Contains(b.RunnerNames(), runner) {
		t.Fatalf("flush-runners removed the busy runner %s: instances %v", runner, b.Instances())
	}
	if job, _ := b.GitHub.Job(busy); job.State != fakegithub.JobInProgress {
		t.Fatalf("the busy runner's job is %s after flush-runners, want it still running", job.State)
	}
	waitRunners(t, b, 1, 1, 2*time.Minute)

	t.Log("a second unit with the same labels shares the jobs, each with a runner of one unit")
	second := stack.New(t, stack.Options{App: strings.Split(b.Unit.Name, "/")[0], Number: 1, Server: b.GitHub,
		Token: scaleSetToken, Label: scaleSetLabel, Base: 1, Max: scaleSetMax, ScaleSet: scaleSetName,
		Config: map[string]any{"reconcile-interval": 60}})
	peakSecond := second.PeakInstances(t)
	second.Unit.Deploy()
	waitRunners(t, second, 1, 0, 3*time.Minute)
	if sets := b.GitHub.ScaleSets(stack.Repo); len(sets) != 2 || sets[0].Name == sets[1].Name {
		t.Fatalf("scale sets with two units = %+v, want one each", sets)
	}
	liveFirst, liveSecond := b.PeakInstances(t), second.PeakInstances(t)
	jobs = queueJobs(t, b, 4, 10*time.Second)
	done := waitJobs(t, b, jobs, 4*time.Minute)
	byUnit := map[string]int{}
	for _, j := range done {
		switch {
		case strings.HasPrefix(j.RunnerName, b.Prefix+"-"):
			byUnit["first"]++
		case strings.HasPrefix(j.RunnerName, second.Prefix+"-"):
			byUnit["second"]++
		default:
			t.Errorf("job %d ran on %q, a runner of neither unit", j.ID, j.RunnerName)
		}
	}
	if byUnit["second"] == 0 {
		t.Errorf("the second unit ran none of %d jobs: %v", len(jobs), byUnit)
	}
	// Each unit wants its base and a runner per job of its set: the busy
	// runner and the bases are 3, and the 4 jobs 4 more between the two
	// units, whichever set each went to. A finished runner, stopped, is
	// not counted.
	if got := liveFirst() + liveSecond(); got > 3+len(jobs) {
		t.Errorf("the two units ran up to %d instances (%d and %d at most) for %d jobs, a busy runner and two bases: a job provisioned twice", got, liveFirst(), liveSecond(), len(jobs))
	}
	waitRunners(t, second, 1, 0, 2*time.Minute)

	if got := peak(); got > scaleSetMax {
		t.Errorf("the unit ran %d instances at once, more than max-total-virtual-machines=%d", got, scaleSetMax)
	}
	if got := peakSecond(); got > scaleSetMax {
		t.Errorf("the second unit ran %d instances at once, more than %d", got, scaleSetMax)
	}

	t.Log("the drain at removal leaves no instance and no GitHub runner")
	// The long job ends first: GitHub keeps a busy runner's record, which
	// no drain may delete.
	if err := b.GitHub.CompleteJob(busy, 0); err != nil {
		t.Fatal(err)
	}
	for _, bed := range []*stack.Bed{second, b} {
		for _, hook := range []string{"stop", "remove"} {
			if r := bed.Unit.Hook(hook); r.Code != 0 {
				t.Fatalf("%s: %s", hook, r.Stderr)
			}
		}
		if _, instances, runners := bed.State(); len(instances) != 0 || len(runners) != 0 {
			t.Errorf("left after remove: instances %v, runners %v", instances, runners)
		}
	}
}

// queueJobs queues n jobs for the bed's label, each sleeping for d.
func queueJobs(t *testing.T, b *stack.Bed, n int, d time.Duration) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = b.QueueJob(fakegithub.JobSpec{Command: "true", Sleep: d}).ID
	}
	return ids
}

// waitJobs waits for every job to have run and succeeded, and returns
// them.
func waitJobs(t *testing.T, b *stack.Bed, ids []int64, limit time.Duration) []fakegithub.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out := make([]fakegithub.Job, len(ids))
	for i, id := range ids {
		job, err := b.GitHub.WaitJob(ctx, id)
		if err != nil {
			got, _ := b.GitHub.Job(id)
			t.Fatalf("job %d did not run to its end: %v (%+v)", id, err, got)
		}
		if job.ExitCode != 0 || job.Lost || job.Result != fakegithub.ResultSucceeded {
			t.Fatalf("job %d: %+v, want it succeeded", id, job)
		}
		out[i] = job
	}
	return out
}

// waitStarted waits until a runner took the job.
func waitStarted(t *testing.T, b *stack.Bed, id int64, limit time.Duration) fakegithub.Job {
	t.Helper()
	var job fakegithub.Job
	stack.WaitFor(t, limit, fmt.Sprintf("job %d started", id), func() bool {
		job, _ = b.GitHub.Job(id)
		return job.State == fakegithub.JobInProgress
	})
	return job
}

// waitRunners waits until the unit has exactly idle idle and busy busy
// runners online, as many instances, and GitHub's runners are its
// instances one to one.
func waitRunners(t *testing.T, b *stack.Bed, idle, busy int, limit time.Duration) {
	t.Helper()
	var last string
	if !stack.Poll(limit, func() bool {
		gotIdle, gotBusy := 0, 0
		for _, r := range b.GitHub.Runners("") {
			if !strings.HasPrefix(r.Name, b.Prefix+"-") || r.Status != "online" {
				continue
			}
			if r.Busy {
				gotBusy++
			} else {
				gotIdle++
			}
		}
		_, instances, runners := b.State()
		last = fmt.Sprintf("%d idle, %d busy; instances %v; GitHub runners %v", gotIdle, gotBusy, instances, runners)
		return gotIdle == idle && gotBusy == busy && len(instances) == idle+busy && slices.Equal(instances, runners)
	}) {
		t.Fatalf("no %d idle and %d busy runners after %v: %s\n%s", idle, busy, limit, last, b.Unit.ServiceLogs())
	}
}

// killManager kills the unit's manager with SIGKILL and waits for Pebble
// to start another.
func killManager(t *testing.T, b *stack.Bed) {
	t.Helper()
	pid := b.ManagerPID()
	if pid == 0 {
		t.Fatal("cannot find the manager process")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, time.Minute, "Pebble restarts the manager", func() bool {
		p := b.ManagerPID()
		return p != 0 && p != pid
	})
}
