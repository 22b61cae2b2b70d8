// Package chaos is the chaos test: two deployments of the packed charm, of
// one application name in two models, against one organisation of the fake
// GitHub and one real LXD daemon, driven for a bounded time by a random,
// seeded schedule of jobs, flushes, config changes, manager kills, LXD
// freezes of busy runners, GitHub lists that leave busy runners out and 5xx
// bursts. Its invariants are checked every few seconds and at the end:
//
//  1. no job ends killed unless a flush-busy=true of its deployment ran
//     while it did (every other job runs to its end, path changes and
//     freezes included);
//  2. no GitHub record or LXD instance of either deployment leaks: none
//     stays unmatched for long, at the end they pair up one to one, and
//     once both units are removed nothing of either is left;
//  3. neither deployment touches the other's runners: every DELETE the fake
//     GitHub answers for a runner comes with its own deployment's token,
//     every removal a manager logs is of its own prefix, and every instance
//     carries its own model in its metadata;
//  4. at the end, each deployment has exactly virtual-machines runners,
//     online;
//  5. no DELETE of a busy runner ever succeeded.
//
// CHAOS_DURATION (or -chaos.duration) sets how long the schedule runs, 10
// minutes by default; about 2 more go to deploying and to the end's checks.
// CHAOS_SEED (or -chaos.seed) replays a schedule; a failure prints the
// seed and every step so far with its time.
package chaos

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

var (
	durationFlag = flag.Duration("chaos.duration", 0, "how long the random schedule runs (default $CHAOS_DURATION, else 10m)")
	seedFlag     = flag.Uint64("chaos.seed", 0, "the schedule's seed (default $CHAOS_SEED, else the time)")
)

const (
	defaultDuration = 10 * time.Minute
	// afterSchedule bounds what follows the schedule: the last jobs end
	// (2 minutes at most, plus a freeze), lost jobs are failed, two cycles
	// and convergence. The schedule is shortened to fit the test's deadline.
	afterSchedule = 12 * time.Minute

	org       = "canonical"
	otherRepo = org + "/runners-b" // path moves between stack.Repo and this
	label     = "chaos"
	// lostTimeout is when the fake GitHub fails a job whose runner stopped
	// renewing it: a killed job shows as Lost. Freezes are far shorter.
	lostTimeout = 2 * time.Minute
	// leakGrace is how long a record or instance may stay unmatched while
	// the schedule runs: a flushed busy runner's record waits for its job
	// to be lost, then a cycle; failed cycles add to it.
	leakGrace = 7 * time.Minute

	modelA = harness.DefaultModel
	modelB = "9b0c6d2e-4f1a-4c3b-8d7e-2a5f6e1c0b93"
)

// TestChaos runs the schedule, checking the invariants all along, then
// lets the last jobs end, runs two reconcile cycles, checks them again and
// removes both units. About 12 minutes with the default duration.
func TestChaos(t *testing.T) {
	seed := chaosSeed(t)
	duration := chaosDuration(t)
	t.Logf("chaos: seed %d (CHAOS_SEED=%d replays the schedule), schedule of %v", seed, seed, duration)
	steps := plan(seed, duration)
	if len(steps) == 0 {
		t.Fatalf("a schedule of %v has no steps: give it at least 10s", duration)
	}
	t.Logf("chaos: %d steps planned: %s", len(steps), summarise(steps))
	c := setUp(t, seed)
	c.run(steps)
	c.finish()
	c.removeUnits()
	c.report()
}

// chaosSeed is -chaos.seed, CHAOS_SEED or the time.
func chaosSeed(t *testing.T) uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if env := os.Getenv("CHAOS_SEED"); env != "" {
		s, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("cannot read CHAOS_SEED=%q: %v", env, err)
		}
		return s
	}
	return uint64(time.Now().UnixNano())
}

// chaosDuration is -chaos.duration, CHAOS_DURATION or 10 minutes, shortened
// to leave afterSchedule (and the set-up) before the test's deadline.
func chaosDuration(t *testing.T) time.Duration {
	d := defaultDuration
	if *durationFlag != 0 {
		d = *durationFlag
	} else if env := os.Getenv("CHAOS_DURATION"); env != "" {
		v, err := time.ParseDuration(env)
		if err != nil || v <= 0 {
			t.Fatalf("cannot read CHAOS_DURATION=%q: want a duration like 30m", env)
		}
		d = v
	}
	if deadline, ok := t.Deadline(); ok {
		const setUpTime = 4 * time.Minute
		if left := time.Until(deadline) - setUpTime - afterSchedule; left < d {
			if left < time.Minute {
				t.Fatalf("cannot run a schedule of %v: the test's -timeout leaves %v; give it at least %v more", d, time.Until(deadline).Round(time.Second), d+setUpTime+afterSchedule)
			}
			t.Logf("chaos: the test's -timeout shortens the schedule from %v to %v", d, left.Round(time.Second))
			d = left.Round(time.Second)
		}
	}
	return d
}

// deployment is one unit of the charm, in its own model.
type deployment struct {
	name  string // "A" or "B", in the journal
	model string
	bed   *stack.Bed

	// Guarded by chaos.mu: the settings config-changed last applied, and
	// the unit's busy flushes.
	target      int
	path        string
	labels      string
	busyFlushes []window

	ops     chan func() // the unit's hooks and actions, one at a time as Juju runs them
	stopped chan struct{}
}

// window is when an action ran; end is zero while it runs.
type window struct{ start, end time.Time }

// trackedJob is a job the schedule gave a runner.
type trackedJob struct {
	job      fakegithub.Job
	dep      *deployment
	assigned time.Time
	// judged: it ran to its end, or was seen killed (then killedAt, why).
	judged   bool
	ran      bool
	killedAt time.Time
	why      string
	excused  bool
}

// chaos is one run: the two deployments, what the schedule did, and what
// the checks found.
type chaos struct {
	t     *testing.T
	seed  uint64
	lxd   lxdclient.InstanceServer
	gh    *fakegithub.Server
	deps  [2]*deployment
	start time.Time

	mu         sync.Mutex
	journal    []string
	jobs       map[int64]*trackedJob
	frozen     map[string]time.Time // instance → when to thaw it
	violations []string
	failed     chan struct{} // closed at the first violation
	stopping   bool          // the schedule is over: queued operations are dropped
	// Monitor state.
	deletionsSeen int
	unmatched     map[string]time.Time // record or instance name → unmatched since
	reported      map[string]bool      // violations seen again on every pass, reported once
	logLines      map[string]bool      // manager log lines already read, per unit and text
	counts        map[string]int       // for the report
	// journalPrinted: the journal is in the test's log already.
	journalPrinted bool
}

// setUp deploys A, then B in another model with the same application name,
// sharing A's fake GitHub with a token of its own, and waits for both.
func setUp(t *testing.T, seed uint64) *chaos {
	t.Helper()
	c := &chaos{t: t, seed: seed, lxd: lxdtest.Connect(t), jobs: map[int64]*trackedJob{}, frozen: map[string]time.Time{},
		failed: make(chan struct{}), unmatched: map[string]time.Time{}, reported: map[string]bool{},
		logLines: map[string]bool{}, counts: map[string]int{}}
	t.Cleanup(func() {
		if t.Failed() && !c.printed() {
			c.printJournal()
		}
	})
	app := "chaos" + strconv.FormatUint(rand.Uint64()&0xffffff, 16)
	config := map[string]any{"reconcile-interval": 1}
	for i, spec := range []struct{ name, model string }{{"A", modelA}, {"B", modelB}} {
		opts := stack.Options{App: app, Model: spec.model, Token: fmt.Sprintf("ghp_CHAOS_%s_TOKEN_0123456789", spec.name),
			TokenScope: org, Label: label, Runners: 2, Config: config,
			GitHub: fakegithub.Options{JobLostTimeout: lostTimeout}}
		if i > 0 {
			opts.Server = c.gh
		}
		b := stack.New(t, opts)
		c.gh = b.GitHub
		d := &deployment{name: spec.name, model: spec.model, bed: b, target: 2, path: stack.Repo, labels: label,
			ops: make(chan func(), 100), stopped: make(chan struct{})}
		c.deps[i] = d
		// Thaw whatever is still frozen before the unit's own cleanup
		// removes its runners.
		t.Cleanup(c.thawAll)
		b.Unit.Deploy()
		b.Converge(2)
		t.Logf("chaos: deployment %s (model %s) is up: prefix %s", d.name, d.model, b.Prefix)
	}
	return c
}

// run plays the schedule, with the monitor checking all along, until its
// end or the first violation.
func (c *chaos) run(steps []step) {
	c.start = time.Now()
	for _, d := range c.deps {
		go c.work(d)
	}
	stopMonitor := c.startMonitor()
	defer stopMonitor()
	for i, s := range steps {
		if !c.waitUntil(c.start.Add(s.at)) {
			c.note("the schedule stops at step %d of %d: an invariant was broken", i+1, len(steps))
			return
		}
		c.execute(i+1, s)
	}
	c.waitUntil(c.start.Add(steps[len(steps)-1].at + time.Second))
	c.note("the schedule is over (%d steps)", len(steps))
}

// waitUntil sleeps until when, thawing what is due meanwhile; false if a
// violation came first.
func (c *chaos) waitUntil(when time.Time) bool {
	for {
		c.thawDue(time.Now())
		wait := time.Until(when)
		if wait <= 0 {
			return !c.broken()
		}
		select {
		case <-c.failed:
			return false
		case <-time.After(min(wait, time.Second)):
		}
	}
}

func (c *chaos) broken() bool {
	select {
	case <-c.failed:
		return true
	default:
		return false
	}
}

// work runs a unit's operations one at a time. Each runs in a goroutine of
// its own, so that a harness failure (t.Fatal ends only the calling
// goroutine) does not stop the queue.
func (c *chaos) work(d *deployment) {
	defer close(d.stopped)
	for op := range d.ops {
		done := make(chan struct{})
		go func() {
			defer close(done)
			op()
		}()
		<-done
	}
}

// enqueue queues an operation of the unit, dropped if the schedule is over
// by the time it would run.
func (c *chaos) enqueue(d *deployment, what string, op func()) {
	select {
	case d.ops <- func() {
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			c.note("%s %s: dropped, the schedule is over", d.name, what)
			return
		}
		op()
	}:
	default:
		c.note("%s %s: dropped, the unit's queue is full", d.name, what)
	}
}

// finish ends the schedule: faults cleared, freezes thawed, the last jobs
// ended, then two reconcile cycles per deployment and convergence.
func (c *chaos) finish() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.gh.ClearFaults()
	c.thawAll()
	for _, d := range c.deps {
		close(d.ops)
	}
	for _, d := range c.deps {
		select {
		case <-d.stopped:
		case <-time.After(5 * time.Minute):
			c.violate("%s: its last hook or action did not end within 5 minutes", d.name)
		}
	}
	stopMonitor := c.startMonitor()

	// Every job ends within its length (2 minutes at most) plus any
	// freeze; a killed one is failed as lost within lostTimeout.
	if !c.poll(3*time.Minute+lostTimeout, c.jobsSettled) {
		c.mu.Lock()
		for _, j := range c.jobs {
			if !j.judged {
				c.violateLocked("job %d on %s (%s, %v) has not ended", j.job.ID, j.job.RunnerName, j.dep.name, j.job.Spec.Sleep)
			}
		}
		c.mu.Unlock()
	}
	c.note("every job has ended")

	for _, d := range c.deps {
		if !c.poll(time.Minute, func() bool { return d.bed.ManagerPID() != 0 }) {
			c.violate("%s: no manager running a minute after the schedule", d.name)
		}
	}
	for range 2 {
		for _, d := range c.deps {
			r := d.bed.Unit.Action("reconcile-runners", nil)
			c.note("%s reconcile-runners: %s %v %s", d.name, r.Status, r.Results["delta"], r.Message)
		}
	}
	c.mu.Lock()
	targets := []int{c.deps[0].target, c.deps[1].target}
	c.mu.Unlock()
	var states [2]string
	converged := c.poll(3*time.Minute, func() bool {
		ok := true
		for i, d := range c.deps {
			online, instances, runners, err := d.bed.TryState()
			states[i] = fmt.Sprintf("%s: %d online of %d wanted; instances %v; GitHub runners %v; %v", d.name, online, targets[i], instances, runners, err)
			ok = ok && err == nil && online == targets[i] && len(runners) == targets[i] && slices.Equal(instances, runners)
		}
		return ok
	})
	if !converged {
		c.violate("no convergence two cycles after the schedule:\n  %s\n  %s", states[0], states[1])
	}
	stopMonitor()
	c.check()
	c.readManagerLogs()
}

// removeUnits removes both units as Juju does (stop, remove): nothing of
// either may be left, in LXD or at GitHub (invariant 2 once more). Runner
// images are listed but not counted: the charm keeps no promise about them.
func (c *chaos) removeUnits() {
	for _, d := range c.deps {
		for _, hook := range []string{"stop", "remove"} {
			if r := d.bed.Unit.Hook(hook); r.Code != 0 {
				c.violate("%s: the %s hook failed with exit %d: %s", d.name, hook, r.Code, r.Stderr)
			}
		}
		instances, images, err := lxdtest.Remaining(c.lxd, d.bed.Prefix+"-")
		var records []string
		for _, r := range c.gh.Runners("") {
			if strings.HasPrefix(r.Name, d.bed.Prefix+"-") {
				records = append(records, r.Name)
			}
		}
		switch {
		case err != nil:
			c.violate("%s: cannot list what is left after its removal: %v", d.name, err)
		case len(instances)+len(records) > 0:
			c.violate("%s: left after its removal: instances %v, GitHub runners %v", d.name, instances, records)
		default:
			c.note("%s removed: no instance or GitHub runner left; runner images left: %v", d.name, images)
		}
	}
}

// poll calls ok every 3 seconds for up to limit.
func (c *chaos) poll(limit time.Duration, ok func() bool) bool {
	return stack.Poll(limit, func() bool {
		if ok() {
			return true
		}
		time.Sleep(2500 * time.Millisecond)
		return false
	})
}

// jobsSettled: every job judged, and no killed one still unfinished at
// GitHub (its record would still be busy).
func (c *chaos) jobsSettled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, j := range c.jobs {
		if !j.judged {
			return false
		}
		if job, ok := c.gh.Job(id); ok && job.State != fakegithub.JobCompleted {
			return false
		}
	}
	return true
}

// report fails the test with every violation, the seed and the journal,
// or logs what the run did.
func (c *chaos) report() {
	c.mu.Lock()
	violations := slices.Clone(c.violations)
	ran, flushed := 0, 0
	for _, j := range c.jobs {
		switch {
		case j.ran:
			ran++
		case j.excused:
			flushed++
		}
	}
	counts := fmt.Sprintf("jobs %d: %d ran to their end, %d killed by a busy flush, %d killed otherwise; ",
		len(c.jobs), ran, flushed, len(c.jobs)-ran-flushed)
	for _, k := range sortedKeys(c.counts) {
		counts += fmt.Sprintf("%s %d; ", k, c.counts[k])
	}
	c.mu.Unlock()
	c.printJournal()
	c.t.Logf("chaos: %s", strings.TrimSuffix(counts, "; "))
	for _, v := range violations {
		c.t.Errorf("invariant broken: %s", v)
	}
	if len(violations) > 0 {
		c.t.Errorf("chaos seed %d: replay with CHAOS_SEED=%d (the schedule so far is above)", c.seed, c.seed)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// note adds a line to the journal, stamped with the time since the
// schedule started.
func (c *chaos) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteLocked(format, args...)
}

func (c *chaos) noteLocked(format string, args ...any) {
	offset := time.Duration(0)
	if !c.start.IsZero() {
		offset = time.Since(c.start)
	}
	c.journal = append(c.journal, fmt.Sprintf("%s %s", stamp(offset), fmt.Sprintf(format, args...)))
}

func stamp(d time.Duration) string {
	return fmt.Sprintf("+%02d:%04.1f", int(d.Minutes()), d.Seconds()-60*float64(int(d.Minutes())))
}

// violate records a broken invariant and stops the schedule.
func (c *chaos) violate(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violateLocked(format, args...)
}

func (c *chaos) violateLocked(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.violations = append(c.violations, msg)
	c.noteLocked("VIOLATION: %s", msg)
	if len(c.violations) == 1 {
		close(c.failed)
	}
}

func (c *chaos) printed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.journalPrinted
}

func (c *chaos) printJournal() {
	c.mu.Lock()
	c.journalPrinted = true
	lines := slices.Clone(c.journal)
	c.mu.Unlock()
	c.t.Logf("chaos seed %d: the schedule as it ran (offsets from its start):\n%s", c.seed, strings.Join(lines, "\n"))
}
