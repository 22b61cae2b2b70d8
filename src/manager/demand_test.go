package manager_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
)

// Demand scaling, attacked through the engine: the cap holds at every
// moment, a runner the feed says took a job is never picked, the
// cool-down holds back a scale-down, and the feed never waits for a cycle.

func demandSettings(target, max int) manager.Settings {
	s := settings(target)
	s.Max, s.CoolDown, s.Parallelism = max, 30*time.Second, 16
	return s
}

// newDemandBed is a bed whose engine uses c (built over the bed's cloud).
func newDemandBed(t *testing.T, s manager.Settings, wrap func(*managertest.Cloud) cloud.Cloud) *bed {
	b := newBed(t, s.Target)
	var c cloud.Cloud = b.cloud
	if wrap != nil {
		c = wrap(b.cloud)
	}
	b.engine = manager.New(c, b.platform, s, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	return b
}

func TestDesired(t *testing.T) {
	tests := []struct {
		name                  string
		target, max, assigned int
		want                  int
	}{
		{"warm pool only", 1, 4, 0, 1},
		{"the warm pool stays warm while jobs run", 1, 4, 2, 3},
		{"the cap binds", 1, 4, 10, 4},
		{"max 0 is no cap", 0, 0, 7, 7},
		{"max 0, no demand", 2, 0, 0, 2},
		{"from zero to the cap", 0, 20, 20, 20},
		{"a negative count is none", 2, 0, -3, 2},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			b := newDemandBed(t, demandSettings(test.target, test.max), nil)
			if got, changed := b.engine.SetDemand(test.assigned); got != test.want || changed != (test.want != test.target) {
				t.Errorf("SetDemand(%d) = %d, %v; want %d", test.assigned, got, changed, test.want)
			}
			if got := b.engine.Desired(); got != test.want {
				t.Errorf("Desired() = %d, want %d", got, test.want)
			}
		})
	}
	// changed says whether the desired count moved; settings move it too.
	b := newDemandBed(t, demandSettings(1, 4), nil)
	for _, step := range []struct {
		assigned, desired int
		changed           bool
	}{{2, 3, true}, {2, 3, false}, {10, 4, true}, {11, 4, false}, {0, 1, true}} {
		if got, changed := b.engine.SetDemand(step.assigned); got != step.desired || changed != step.changed {
			t.Errorf("SetDemand(%d) = %d, %v; want %d, %v", step.assigned, got, changed, step.desired, step.changed)
		}
	}
	b.engine.SetDemand(3)
	b.engine.SetSettings(demandSettings(2, 0))
	if got := b.engine.Desired(); got != 5 {
		t.Errorf("after a settings change, Desired() = %d, want base 2 + 3 assigned", got)
	}
}

// peakCloud counts the unit's running instances at every moment (one
// counts from the start of its Create until it stops or its Delete
// returns: a stopped instance runs nothing) and keeps the peak.
// A delete lingers until a create starts after it did (or a moment
// passes): a create the engine wrongly runs beside it is caught holding a
// place.
type peakCloud struct {
	*managertest.Cloud
	mu        sync.Mutex
	now, peak int
	created   chan struct{} // closed, and replaced, when a create starts
}

func newPeakCloud(c *managertest.Cloud) *peakCloud {
	return &peakCloud{Cloud: c, now: len(c.Names()), peak: len(c.Names()), created: make(chan struct{})}
}

// add counts n more instances; it returns the channel of the next create.
func (c *peakCloud) add(n int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += n
	c.peak = max(c.peak, c.now)
	if n > 0 {
		close(c.created)
		c.created = make(chan struct{})
	}
	return c.created
}

func (c *peakCloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	c.add(1)
	err := c.Cloud.Create(ctx, req)
	if err != nil {
		c.add(-1)
	}
	return err
}

func (c *peakCloud) Delete(ctx context.Context, name string) error {
	select {
	case <-c.add(0):
	case <-time.After(50 * time.Millisecond):
	case <-ctx.Done():
	}
	inst, ok := c.Cloud.Get(name)
	err := c.Cloud.Delete(ctx, name)
	if err == nil && ok && inst.Status != cloud.Stopped {
		c.add(-1)
	}
	return err
}

// Bursts against max 6: each round the runners that ran a job stop while
// the demand asks for the cap; removals and creates run in parallel, yet never more than 6 instances run, and each round still
// reaches the cap in one cycle.
func TestCapHoldsUnderABurst(t *testing.T) {
	var pc *peakCloud
	b := newDemandBed(t, demandSettings(0, 6), func(c *managertest.Cloud) cloud.Cloud { pc = newPeakCloud(c); return pc })
	b.engine.SetDemand(4)
	b.run(t, manager.Reconcile)
	for round := range 4 {
		b.onlineAll()
		names := b.cloud.Names()
		if len(names) == 0 {
			t.Fatalf("round %d: no runners to burst from", round)
		}
		slices.Sort(names)
		// One keeps its job; the others' jobs ended: GitHub dropped their
		// ephemeral records, their instances powered off.
		b.platform.Set(names[0], true, true)
		for _, name := range names[1:] {
			b.platform.Delete(name)
			b.cloud.SetStatus(name, cloud.Stopped)
		}
		pc.add(-(len(names) - 1)) // stopped: they run nothing
		b.engine.SetDemand(6 + round)
		out := b.run(t, manager.Reconcile)
		if pc.peak > 6 {
			t.Fatalf("round %d: %d instances at once, over the cap of 6 (outcome %+v)", round, pc.peak, out)
		}
		if n := len(b.cloud.Names()); n != 6 || out.Created != 6-1 {
			t.Errorf("round %d: %d instances, %d created; want the cap reached in one cycle", round, n, out.Created)
		}
	}
	// Without a cap, the same burst creates beside its removals.
	b.engine.SetSettings(demandSettings(0, 0))
	b.onlineAll()
	for _, name := range b.cloud.Names() {
		b.platform.Delete(name)
		b.cloud.SetStatus(name, cloud.Stopped)
	}
	b.engine.SetDemand(8)
	if out := b.run(t, manager.Reconcile); out.Created != 8 || len(b.cloud.Names()) != 8 {
		t.Errorf("no cap: %d created, %d instances; want 8", out.Created, len(b.cloud.Names()))
	}
}

// A runner the feed says took a job, though GitHub's list still shows it
// idle, is neither scaled down nor flushed; the one beside it is.
func TestJobStartedRunnerIsNeverPicked(t *testing.T) {
	b := newDemandBed(t, demandSettings(0, 0), nil)
	b.engine.SetDemand(3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	names := b.cloud.Names()
	slices.Sort(names)
	taken := names[0]
	b.engine.JobStarted(taken)
	b.engine.SetDemand(0) // the statistics lag behind the job messages
	b.run(t, manager.Reconcile)
	b.advance(time.Minute)
	if out := b.run(t, manager.Reconcile); out.Removed["scale-down"] != 2 {
		t.Errorf("outcome %+v: want the two others scaled down", out)
	}
	if _, ok := b.cloud.Get(taken); !ok {
		t.Fatal("scale-down removed the runner that took a job")
	}
	for _, mode := range []manager.Mode{manager.FlushIdle, manager.DrainIdle} {
		b.run(t, mode)
		if _, ok := b.cloud.Get(taken); !ok {
			t.Fatalf("%s removed the runner that took a job", mode)
		}
	}
}

// A JobStarted that arrives after the cycle's snapshot, while its
// removals run, still spares the runners not yet removed.
func TestJobStartedDuringTheCycleSavesTheRunner(t *testing.T) {
	s := demandSettings(0, 0)
	s.Parallelism = 1 // one removal after the other
	b := newDemandBed(t, s, nil)
	b.engine.SetDemand(2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	b.engine.SetDemand(0)
	b.run(t, manager.Reconcile) // the excess begins
	b.advance(time.Minute)
	names := b.cloud.Names()
	var once sync.Once
	b.platform.OnRemove = func(int64) { once.Do(func() { b.engine.JobStarted(names[0]); b.engine.JobStarted(names[1]) }) }
	out := b.run(t, manager.Reconcile)
	// The first removal was under way when the feed spoke (GitHub first,
	// its record idle: it goes); the second, not yet started, is spared.
	if out.Removed["scale-down"] != 1 || len(b.cloud.Names()) != 1 {
		t.Errorf("outcome %+v, instances %v: want one runner spared by the feed", out, b.cloud.Names())
	}
}

// Idle runners above the desired count go only once the excess lasted the
// cool-down; an excess that disappears starts the clock again.
func TestCoolDown(t *testing.T) {
	b := newDemandBed(t, demandSettings(0, 0), nil)
	b.engine.SetDemand(3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	b.engine.SetDemand(0)
	steps := []struct {
		advance  time.Duration
		assigned int
		removed  int
	}{
		{0, 0, 0},                // the excess begins
		{20 * time.Second, 0, 0}, // within the cool-down
		{5 * time.Second, 3, 0},  // the burst is back: no excess, the clock stops
		{5 * time.Second, 0, 0},  // a new excess, 30 s after the first began
		{25 * time.Second, 0, 0}, // 25 s into it
		{5 * time.Second, 0, 3},  // lasted the cool-down
	}
	for i, step := range steps {
		b.advance(step.advance)
		b.engine.SetDemand(step.assigned)
		if out := b.run(t, manager.Reconcile); out.Removed["scale-down"] != step.removed || out.Created != 0 {
			t.Errorf("step %d: outcome %+v, want %d scaled down and none created", i, out, step.removed)
		}
	}
	b.assertConsistent(t, 0)
}

// The feed never waits for the engine's turn: a cycle stuck in a slow
// create does not hold SetDemand, JobStarted, JobCompleted or Desired;
// the next cycle acts on what they said.
func TestDemandNeverWaitsForACycle(t *testing.T) {
	c := &bootingCloud{Cloud: managertest.NewCloud(), booting: make(chan string, 10), release: make(chan struct{})}
	platform := managertest.NewPlatform()
	engine := manager.New(c, platform, demandSettings(1, 0), slog.New(slog.NewTextHandler(io.Discard, nil)))
	cycle := make(chan error, 1)
	go func() { _, err := engine.Run(context.Background(), manager.Reconcile); cycle <- err }()
	<-c.booting
	fed := make(chan int, 1)
	go func() {
		engine.SetDemand(3)
		engine.JobStarted("a")
		engine.JobCompleted("b")
		fed <- engine.Desired()
	}()
	select {
	case desired := <-fed:
		if desired != 4 {
			t.Errorf("Desired() = %d, want 4", desired)
		}
	case <-time.After(10 * time.Second):
		close(c.release)
		t.Fatal("the demand feed waited for the cycle in progress")
	}
	close(c.release)
	if err := <-cycle; err != nil {
		t.Fatal(err)
	}
	if out, err := engine.Run(context.Background(), manager.Reconcile); err != nil || out.Created != 3 {
		t.Errorf("the next cycle: %+v, %v; want 3 created", out, err)
	}
}

// A classic unit never calls SetDemand: a fixed pool of Target, capped by
// Max, scaled down at once when the operator lowers it (no burst to wait
// out), as before.
func TestFixedPoolUnchanged(t *testing.T) {
	b := newDemandBed(t, demandSettings(3, 0), nil)
	if out := b.run(t, manager.Reconcile); out.Created != 3 || b.engine.Desired() != 3 {
		t.Fatalf("outcome %+v, desired %d", out, b.engine.Desired())
	}
	b.onlineAll()
	b.engine.SetSettings(demandSettings(1, 0))
	if out := b.run(t, manager.Reconcile); out.Removed["scale-down"] != 2 {
		t.Errorf("outcome %+v: want 2 scaled down at once", out)
	}
	b.engine.SetSettings(demandSettings(5, 3))
	if out := b.run(t, manager.Reconcile); out.Created != 2 || b.engine.Desired() != 3 {
		t.Errorf("outcome %+v, desired %d: want the pool capped at 3", out, b.engine.Desired())
	}
	b.assertConsistent(t, 3)
}

// A restarted manager of a unit that scales on demand keeps a burst's idle
// runners until the cool-down has passed, by when the feed has spoken:
// desired is Target alone until then.
func TestOnDemandCoolsDownFromTheStart(t *testing.T) {
	b := newDemandBed(t, demandSettings(0, 0), nil)
	b.engine.SetDemand(3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	s := demandSettings(0, 0)
	s.OnDemand = true
	restarted := manager.New(b.cloud, b.platform, s, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	if out, err := restarted.Run(context.Background(), manager.Reconcile); err != nil || out.RemovedTotal() != 0 {
		t.Errorf("the restarted manager's first cycle: %+v, %v; want nothing removed", out, err)
	}
	restarted.SetDemand(3) // the session's statistics
	b.advance(time.Minute)
	if out, err := restarted.Run(context.Background(), manager.Reconcile); err != nil || out.RemovedTotal() != 0 || out.Created != 0 {
		t.Errorf("after the feed spoke: %+v, %v; want the burst's runners kept", out, err)
	}
}

// A runner whose job ended is replaced at once, though GitHub still lists
// it: the warm pool is not one short while it exits. It is not removed as
// idle excess meanwhile; its own exit ends it.
func TestJobCompletedRunnerIsReplacedAtOnce(t *testing.T) {
	b := newDemandBed(t, demandSettings(1, 2), nil)
	b.engine.SetDemand(0)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	done := b.cloud.Names()[0]
	b.engine.JobStarted(done)
	b.engine.JobCompleted(done)
	out := b.run(t, manager.Reconcile)
	if out.Created != 1 || out.RemovedTotal() != 0 {
		t.Errorf("outcome %+v: want a replacement and nothing removed", out)
	}
	b.onlineAll()
	b.advance(time.Minute)
	if out := b.run(t, manager.Reconcile); out.Created != 0 || out.RemovedTotal() != 0 {
		t.Errorf("outcome %+v: want nothing while the finished runner exits", out)
	}
	b.platform.Delete(done)
	b.cloud.SetStatus(done, cloud.Stopped)
	if out := b.run(t, manager.Reconcile); out.Created != 0 || out.Removed["stopped"] != 1 {
		t.Errorf("outcome %+v: want the finished runner removed, nothing created", out)
	}
	b.assertConsistent(t, 1)
}
