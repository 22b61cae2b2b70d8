package service_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/service"
)

// cycles counts the loop's cycles by the one GitHub list each makes, and
// can hold a cycle in that list (a slow GitHub).
type cycles struct {
	count atomic.Int32
	mu    sync.Mutex
	hold  chan struct{} // non-nil: the next list waits until it is closed
	held  chan struct{} // closed once a list waits on hold
}

func (c *cycles) onList() {
	c.count.Add(1)
	c.mu.Lock()
	hold, held := c.hold, c.held
	c.hold, c.held = nil, nil
	c.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
}

// holdNext makes the next cycle wait in its list until release is called;
// held ends once it does.
func (c *cycles) holdNext() (held <-chan struct{}, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold, c.held = make(chan struct{}), make(chan struct{})
	hold := c.hold
	return c.held, func() { close(hold) }
}

// waitFor waits until at least n cycles started, or fails the test.
func (c *cycles) waitFor(t *testing.T, n int32, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); c.count.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d cycles after %v, want %d", c.count.Load(), within, n)
		}
	}
}

// quiet lets the loop run for a while longer than wakes are spaced, so any
// cycle still due has started.
func quiet() { time.Sleep(1500 * time.Millisecond) }

// runLoop runs srv's loop until the test ends, over a cloud and a GitHub in
// memory, counting its cycles.
func runLoop(t *testing.T, c cloud.Cloud, platform *managertest.Platform, target int, interval time.Duration) (*service.Server, *cycles) {
	t.Helper()
	counted := &cycles{}
	platform.OnList = counted.onList
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(c, platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope, Target: target}, log),
		Expected: target, Interval: interval, Log: log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, counted
}

// Wakes during a cycle (a slow GitHub list) are served by exactly one more
// cycle, which starts once that one ends, not at the next interval.
func TestWakeDuringACycleRunsOneMore(t *testing.T) {
	platform := managertest.NewPlatform()
	counted := &cycles{}
	held, release := counted.holdNext()
	platform.OnList = counted.onList
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(managertest.NewCloud(), platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope}, log),
		Interval: time.Hour, Log: log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	<-held // the first cycle is in its list
	for range 5 {
		srv.Wake()
	}
	release()
	counted.waitFor(t, 2, 10*time.Second)
	quiet()
	if n := counted.count.Load(); n != 2 {
		t.Errorf("%d cycles after 5 wakes during the first, want 2", n)
	}
}

// A burst of wakes while the loop is idle (ten runners stopping at once)
// costs one or two cycles, not one each.
func TestBurstOfWakesCoalesces(t *testing.T) {
	srv, counted := runLoop(t, managertest.NewCloud(), managertest.NewPlatform(), 0, time.Hour)
	counted.waitFor(t, 1, 10*time.Second)
	quiet()        // the first cycle is over
	for range 10 { // over 200ms: without spacing, a cycle each
		srv.Wake()
		time.Sleep(20 * time.Millisecond)
	}
	counted.waitFor(t, 2, 10*time.Second)
	quiet()
	n := counted.count.Load() - 1
	if n > 2 {
		t.Errorf("ten wakes cost %d cycles, want one or two", n)
	}
	t.Logf("ten wakes: %d cycles", n)
}

// Without wakes the loop runs on its interval only.
func TestNoWakeOnlyIntervalCycles(t *testing.T) {
	interval := 300 * time.Millisecond
	start := time.Now()
	_, counted := runLoop(t, managertest.NewCloud(), managertest.NewPlatform(), 0, interval)
	time.Sleep(1600 * time.Millisecond)
	n, elapsed := counted.count.Load(), time.Since(start)
	if most := int32(elapsed/interval) + 1; n > most || n < 2 {
		t.Errorf("%d cycles in %v of a %v interval, want 2 to %d", n, elapsed.Round(time.Millisecond), interval, most)
	}
}

// Wake never blocks, even before Run (a watcher may call changed before the
// loop starts) or with no loop at all.
func TestWakeBeforeRun(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(managertest.NewCloud(), managertest.NewPlatform(), manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope}, log),
		Interval: time.Hour, Log: log,
	}
	woken := make(chan struct{})
	go func() {
		for range 100 {
			srv.Wake()
		}
		close(woken)
	}()
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("Wake blocked without a loop")
	}
}

// A stop (ctx ends) while wakes keep coming ends the loop at once, not
// after the wakes' cycles.
func TestStopWhileWoken(t *testing.T) {
	platform := managertest.NewPlatform()
	counted := &cycles{}
	platform.OnList = counted.onList
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &service.Server{
		Engine:   manager.New(managertest.NewCloud(), platform, manager.Settings{Identity: managertest.Identity, Scope: managertest.Scope}, log),
		Interval: time.Hour, Log: log,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	counted.waitFor(t, 1, 10*time.Second)
	stopWaking := make(chan struct{})
	defer close(stopWaking)
	go func() {
		for {
			select {
			case <-stopWaking:
				return
			default:
				srv.Wake()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not end on its stop while woken")
	}
}

// watchingCloud is a cloud in memory whose runners can finish (their
// instances stop, as an ephemeral runner's poweroff does) and which tells
// its watcher so, as LXD's event stream does.
type watchingCloud struct {
	*managertest.Cloud
	mu      sync.Mutex
	changed func()
}

var _ cloud.Watcher = (*watchingCloud)(nil)

func (c *watchingCloud) Watch(ctx context.Context, changed func()) error {
	c.mu.Lock()
	c.changed = changed
	c.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// finish ends a runner's job: GitHub forgets the ephemeral runner, its
// instance powers off, and the watcher hears of it.
func (c *watchingCloud) finish(platform *managertest.Platform, name string) {
	platform.Delete(name)
	c.SetStatus(name, cloud.Stopped)
	c.mu.Lock()
	changed := c.changed
	c.mu.Unlock()
	if changed != nil {
		changed()
	}
}

// A runner that finishes is replaced at once, through the cloud's watcher,
// not at the next reconcile interval (an hour here).
func TestFinishedRunnerReplacedBeforeTheInterval(t *testing.T) {
	c := &watchingCloud{Cloud: managertest.NewCloud()}
	platform := managertest.NewPlatform()
	srv, counted := runLoop(t, c, platform, 2, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Watch(ctx, srv.Wake) // as service.Run starts it
	counted.waitFor(t, 1, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); len(c.Names()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("instances %v, want 2", c.Names())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		watching := c.changed != nil
		c.mu.Unlock()
		if watching {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher never started")
		}
	}
	for _, name := range platform.Names() {
		platform.Set(name, true, false)
	}
	finished := c.Names()[0]
	c.finish(platform, finished)

	deadline := time.Now().Add(30 * time.Second)
	for {
		names := c.Names()
		_, stillThere := c.Get(finished)
		if len(names) == 2 && !stillThere {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after a runner finished, with an interval of an hour: instances %v (finished %s)", names, finished)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
