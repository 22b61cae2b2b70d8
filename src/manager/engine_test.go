package manager_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
)

var (
	id     = managertest.Identity
	prefix = id.Prefix()
	scope  = managertest.Scope
)

func settings(target int) manager.Settings {
	return manager.Settings{Identity: id, Scope: scope, Target: target, Timeouts: manager.Timeouts{Creation: 10 * time.Minute, Offline: 20 * time.Minute}}
}

type bed struct {
	cloud    *managertest.Cloud
	platform *managertest.Platform
	engine   *manager.Engine
	mu       sync.Mutex
	now      time.Time
}

func newBed(t *testing.T, target int) *bed {
	b := &bed{cloud: managertest.NewCloud(), platform: managertest.NewPlatform(), now: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	b.cloud.Now = b.clock
	b.engine = manager.New(b.cloud, b.platform, settings(target), slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	return b
}

func (b *bed) clock() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.now }

func (b *bed) advance(d time.Duration) { b.mu.Lock(); b.now = b.now.Add(d); b.mu.Unlock() }

func (b *bed) run(t *testing.T, mode manager.Mode) manager.Outcome {
	t.Helper()
	out, err := b.engine.Run(context.Background(), mode)
	if err != nil {
		t.Fatalf("cycle failed: %v", err)
	}
	return out
}

// onlineAll brings every registered runner online, as booted runners do.
func (b *bed) onlineAll() {
	for _, name := range b.platform.Names() {
		b.platform.Set(name, true, false)
	}
}

// assertConsistent checks that instances and runners pair up exactly:
// nothing leaked on either side.
func (b *bed) assertConsistent(t *testing.T, want int) {
	t.Helper()
	instances, runners := b.cloud.Names(), b.platform.Names()
	sort.Strings(instances)
	sort.Strings(runners)
	if strings.Join(instances, ",") != strings.Join(runners, ",") || len(instances) != want {
		t.Errorf("instances %v, runners %v, want %d matching", instances, runners, want)
	}
	for _, name := range instances {
		if id.Generation(name) != runner.Current {
			t.Errorf("instance %s does not carry the prefix", name)
		}
	}
}

func TestConvergesAndStaysSteady(t *testing.T) {
	b := newBed(t, 3)
	if out := b.run(t, manager.Reconcile); out.Created != 3 {
		t.Fatalf("created %d", out.Created)
	}
	b.assertConsistent(t, 3)
	b.onlineAll()
	out := b.run(t, manager.Reconcile)
	if out.Created != 0 || out.RemovedTotal() != 0 {
		t.Errorf("steady state churned: %+v", out)
	}
	// A fresh engine (a restarted manager) rebuilds the same view.
	fresh := manager.New(b.cloud, b.platform, settings(3), slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	if out, err := fresh.Run(context.Background(), manager.Reconcile); err != nil || out.Created != 0 || out.RemovedTotal() != 0 {
		t.Errorf("restarted engine churned: %+v %v", out, err)
	}
}

func TestFailedCreateLeavesNothing(t *testing.T) {
	b := newBed(t, 3)
	failed := 0
	b.cloud.FailCreate = func(string) bool { failed++; return failed == 2 }
	out := b.run(t, manager.Reconcile)
	if out.Created != 2 || out.Failures["create"] != 1 || len(out.Errors) != 1 {
		t.Fatalf("outcome %+v", out)
	}
	b.assertConsistent(t, 2) // the failed one's registration was undone
	b.cloud.FailCreate = nil
	b.run(t, manager.Reconcile)
	b.assertConsistent(t, 3)
}

func TestRegisterFailureCreatesNothing(t *testing.T) {
	b := newBed(t, 2)
	b.platform.FailRegister = errors.New("the GitHub token is invalid or expired")
	out := b.run(t, manager.Reconcile)
	if out.Created != 0 || out.Failures["register"] != 2 || b.cloud.Creates != 0 {
		t.Errorf("outcome %+v, creates %d", out, b.cloud.Creates)
	}
	if !strings.Contains(out.Errors[0].Error(), "token is invalid") {
		t.Errorf("error %v does not carry the cause", out.Errors[0])
	}
}

func TestListFailureChangesNothing(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.platform.FailList = errors.New("rate limited")
	deletes := b.cloud.Deletes
	if _, err := b.engine.Run(context.Background(), manager.Reconcile); err == nil || !strings.Contains(err.Error(), "cannot list GitHub runners: rate limited") {
		t.Errorf("err = %v", err)
	}
	if b.cloud.Deletes != deletes || b.cloud.Creates != 2 {
		t.Errorf("a cycle without GitHub's view acted: deletes %d creates %d", b.cloud.Deletes, b.cloud.Creates)
	}
}

func TestFinishedRunnerIsReplaced(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	finished := b.cloud.Names()[0]
	// The job ran: GitHub removes the ephemeral runner, the instance powers off.
	b.platform.Delete(finished)
	i, _ := b.cloud.Get(finished)
	i.Status = cloud.Stopped
	b.cloud.Put(i)
	out := b.run(t, manager.Reconcile)
	if out.Removed[string(runner.Stopped)] != 1 || out.Created != 1 {
		t.Errorf("outcome %+v", out)
	}
	if _, ok := b.cloud.Get(finished); ok {
		t.Error("the finished instance is still there")
	}
	b.assertConsistent(t, 2)
}

func TestScaleDownKeepsARunnerThatJustTookAJob(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	// Between the snapshot and the removal, GitHub hands the runner a job:
	// the delete answers 422, and the instance must stay.
	b.platform.OnRemove = func(id int64) {
		for _, name := range b.platform.Names() {
			b.platform.Set(name, true, true)
		}
	}
	b.engine.SetSettings(settings(0))
	out := b.run(t, manager.Reconcile)
	if out.RemovedTotal() != 0 || len(b.cloud.Names()) != 2 {
		t.Errorf("busy runners were removed: %+v, instances %v", out, b.cloud.Names())
	}
	b.platform.OnRemove = nil
	for _, name := range b.platform.Names() {
		b.platform.Set(name, true, false)
	}
	out = b.run(t, manager.Reconcile)
	if out.Removed["scale-down"] != 2 {
		t.Errorf("outcome %+v", out)
	}
	b.assertConsistent(t, 0)
}

func TestCleanupRules(t *testing.T) {
	b := newBed(t, 1)
	// What a manager killed mid-cycle may leave behind, and what clouds break:
	orphanRunner := id.NewName() // registered, instance never made
	b.platform.Add(orphanRunner, false, false)
	silent := id.NewName() // instance whose runner never registered
	b.cloud.Put(cloud.Instance{Name: silent, RunnerID: 77, CreatedAt: b.clock().Add(-11 * time.Minute), Status: cloud.Running})
	broken := id.NewName() // finished instance, its record left behind
	brokenID := b.platform.Add(broken, false, false)
	b.cloud.Put(cloud.Instance{Name: broken, RunnerID: brokenID, CreatedAt: b.clock(), Status: cloud.Stopped})
	stuck := id.NewName() // registered, never came online
	stuckID := b.platform.Add(stuck, false, false)
	b.cloud.Put(cloud.Instance{Name: stuck, RunnerID: stuckID, CreatedAt: b.clock().Add(-11 * time.Minute), Status: cloud.Running})
	ghostBusy := id.NewName() // GitHub says busy, instance gone
	b.platform.Add(ghostBusy, true, true)
	otherUnit := runner.Identity{Model: id.Model, App: id.App, Unit: 1}.NewName() // not ours: untouched
	b.platform.Add(otherUnit, true, false)

	out := b.run(t, manager.Reconcile)
	// The stuck runner was first seen by this process now: it gets the
	// whole offline timeout from now (see TestRestartedManagerWaitsAsLong).
	want := map[string]int{string(runner.NoInstance): 1, string(runner.NoRunner): 1, string(runner.Stopped): 1, string(runner.Offline): 0}
	for reason, n := range want {
		if out.Removed[reason] != n {
			t.Errorf("removed for %s: %d, want %d (outcome %+v)", reason, out.Removed[reason], n, out)
		}
	}
	names := strings.Join(b.platform.Names(), ",")
	if !strings.Contains(names, ghostBusy) || !strings.Contains(names, otherUnit) {
		t.Errorf("runners left %v: want the busy ghost (GitHub refuses) and the other unit's", names)
	}
	// Once GitHub lets go of the ghost (its job failed), it goes too.
	b.platform.Set(ghostBusy, false, false)
	b.run(t, manager.Reconcile)
	if strings.Contains(strings.Join(b.platform.Names(), ","), ghostBusy) {
		t.Error("the ghost runner is still registered")
	}
	b.advance(21 * time.Minute)
	if out := b.run(t, manager.Reconcile); out.Removed[string(runner.Offline)] != 1 {
		t.Errorf("the stuck runner outlived the offline timeout: %+v", out)
	}
	if _, ok := b.cloud.Get(stuck); ok {
		t.Error("the stuck runner's instance is still there")
	}
}

func TestOfflineAfterOnline(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	b.run(t, manager.Reconcile) // sees it online
	name := b.cloud.Names()[0]
	b.platform.Set(name, false, false)
	b.advance(19 * time.Minute)
	if out := b.run(t, manager.Reconcile); out.RemovedTotal() != 0 {
		t.Errorf("removed within the offline timeout: %+v", out)
	}
	b.advance(2 * time.Minute)
	if out := b.run(t, manager.Reconcile); out.Removed[string(runner.Offline)] != 1 || out.Created != 1 {
		t.Errorf("outcome %+v", out)
	}
	b.assertConsistent(t, 1)
}

func TestFlush(t *testing.T) {
	b := newBed(t, 3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	names := b.cloud.Names()
	b.platform.Set(names[0], true, true)

	out := b.run(t, manager.FlushIdle)
	if out.Removed["flush"] != 2 || out.Created != 2 {
		t.Errorf("flush idle: %+v", out)
	}
	if _, ok := b.cloud.Get(names[0]); !ok {
		t.Error("flush idle removed the busy runner")
	}
	b.assertConsistent(t, 3)

	b.onlineAll()
	b.platform.Set(names[0], true, true)
	out = b.run(t, manager.FlushAll)
	if out.Removed["flush"] != 3 || out.Created != 3 {
		t.Errorf("flush all: %+v", out)
	}
	if _, ok := b.cloud.Get(names[0]); ok {
		t.Error("flush all kept the busy runner's instance")
	}
	// GitHub still holds the busy runner's record until its job fails.
	b.platform.Set(names[0], false, false)
	b.run(t, manager.Reconcile)
	b.assertConsistent(t, 3)
}

func TestDrain(t *testing.T) {
	b := newBed(t, 3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	busy := b.cloud.Names()[0]
	b.platform.Set(busy, true, true)
	out := b.run(t, manager.DrainIdle)
	if out.Removed["flush"] != 2 || out.Created != 0 || len(b.cloud.Names()) != 1 {
		t.Errorf("drain idle: %+v, instances %v", out, b.cloud.Names())
	}
	out = b.run(t, manager.DrainAll)
	if out.Removed["flush"] != 1 || out.Created != 0 || len(b.cloud.Names()) != 0 {
		t.Errorf("drain all: %+v, instances %v", out, b.cloud.Names())
	}
	// GitHub lets go of the busy runner's record once its job fails; the
	// teardown's last cycle removes it.
	b.platform.Set(busy, false, false)
	b.run(t, manager.DrainAll)
	b.assertConsistent(t, 0)
}
