package manager_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
)

// The engine's two promises, attacked one interleaving at a time: it never
// deletes a runner it cannot prove idle, and never touches another
// deployment's runners.

// busyUnlisted makes one runner busy and leaves it out of GitHub's lists,
// as offset paging over a changing list or an eventually consistent one
// does. It returns the runner's name.
func (b *bed) busyUnlisted(t *testing.T) string {
	t.Helper()
	name := b.cloud.Names()[0]
	b.platform.Set(name, true, true)
	b.platform.Hide = func(r manager.Runner) bool { return r.Name == name }
	return name
}

func (b *bed) assertKept(t *testing.T, name string) {
	t.Helper()
	if _, ok := b.cloud.Get(name); !ok {
		t.Fatalf("the instance of busy runner %s was deleted", name)
	}
	if b.platform.RemovedBusy != 0 {
		t.Fatalf("a busy runner was removed at GitHub")
	}
}

// §1: an old instance missing from the list is asked about by id, and
// GitHub's 422 keeps it.
func TestUnlistedBusyRunnerIsKept(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	name := b.busyUnlisted(t)
	b.advance(30 * time.Minute) // past the creation timeout
	removes := b.platform.Removes
	out := b.run(t, manager.Reconcile)
	b.assertKept(t, name)
	if b.platform.Removes != removes+1 || out.RemovedTotal() != 0 || out.Created != 0 {
		t.Errorf("want one question to GitHub and nothing else: removes %d, outcome %+v", b.platform.Removes-removes, out)
	}
	// A flush asks too.
	b.run(t, manager.FlushIdle)
	b.assertKept(t, name)
	// The job ends: GitHub forgets the runner, its instance powers off.
	b.platform.Hide = nil
	b.platform.Delete(name)
	b.cloud.SetStatus(name, cloud.Stopped)
	b.run(t, manager.Reconcile)
	b.assertConsistent(t, 2)
}

// §1: a young instance missing from the list is flushed only once GitHub
// says its runner is not busy.
func TestFlushAsksGitHubAboutUnlistedRunners(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	name := b.busyUnlisted(t) // took a job before it was ever listed online
	out := b.run(t, manager.FlushIdle)
	b.assertKept(t, name)
	if out.Removed["flush"] != 1 {
		t.Errorf("outcome %+v, want the other runner flushed", out)
	}
}

// §1: when GitHub cannot say, the instance stays for the next cycle.
func TestGitHubErrorKeepsTheInstance(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	name := b.cloud.Names()[0]
	b.platform.Hide = func(manager.Runner) bool { return true }
	b.platform.FailRemove = func(runner.Scope, int64) error { return errors.New("502 Bad Gateway") }
	b.advance(30 * time.Minute)
	out := b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(name); !ok || out.Failures["remove"] != 1 {
		t.Errorf("instance deleted without GitHub's word, or no failure counted: %+v", out)
	}
	b.platform.FailRemove = nil
	b.run(t, manager.Reconcile) // GitHub: 204; now it goes
	if _, ok := b.cloud.Get(name); ok {
		t.Error("the instance outlived GitHub's answer")
	}
}

// §1: only an instance that never registered goes on the clock alone.
func TestNeverRegisteredInstanceGoesOnTheCreationTimeout(t *testing.T) {
	b := newBed(t, 0)
	name := id.NewName()
	b.cloud.Put(cloud.Instance{Name: name, CreatedAt: b.clock(), Status: cloud.Running, Scope: scope})
	b.run(t, manager.Reconcile)
	b.advance(11 * time.Minute)
	removes := b.platform.Removes
	if out := b.run(t, manager.Reconcile); out.Removed[string(runner.NoRunner)] != 1 || b.platform.Removes != removes {
		t.Errorf("outcome %+v, GitHub asked %d times", out, b.platform.Removes-removes)
	}
}

// §1: after path (or API URL) changes, the old scope's runners are asked
// about where they were registered: idle ones go, busy ones finish.
func TestScopeChangeLetsOldBusyRunnersFinish(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	names := b.cloud.Names()
	busy, idle := names[0], names[1]
	b.platform.Set(busy, true, true)

	newScope := runner.NewScope("https://api.github.com", "canonical/other-runners")
	b.platform.SetScope(newScope)
	s := settings(2)
	s.Scope = newScope
	b.engine.SetSettings(s)
	out := b.run(t, manager.Reconcile)
	if out.Removed[string(runner.Retiring)] != 1 || out.Created != 2 {
		t.Errorf("outcome %+v: want the old idle runner removed and two new ones", out)
	}
	if _, ok := b.platform.Get(idle); ok {
		t.Error("the old idle runner's record leaked")
	}
	for range 3 {
		b.advance(25 * time.Minute) // past every short timeout
		b.onlineAll()
		b.platform.Set(busy, true, true)
		b.run(t, manager.Reconcile)
		b.assertKept(t, busy)
	}
	b.platform.Delete(busy) // its job ends
	b.cloud.SetStatus(busy, cloud.Stopped)
	b.run(t, manager.Reconcile)
	b.assertConsistent(t, 2)
}

// §2: busy beats a frozen, paused or unknown instance; the long limit ends it.
func TestFrozenBusyRunnerIsKeptUntilTheLongLimit(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	names := b.cloud.Names()
	busy, idle := names[0], names[1]
	b.platform.Set(busy, true, true)
	b.cloud.SetStatus(busy, cloud.Unresponsive)
	b.cloud.SetStatus(idle, cloud.Unresponsive)
	out := b.run(t, manager.Reconcile)
	if out.RemovedTotal() != 0 || out.Created != 0 {
		t.Errorf("a freeze churned runners: %+v", out)
	}
	for _, v := range out.Views {
		if v.State != runner.Unresponsive {
			t.Errorf("%s shows %s, want unresponsive", v.Name, v.State)
		}
	}
	b.advance(21 * time.Minute)
	b.run(t, manager.Reconcile) // the idle one goes, GitHub first
	b.assertKept(t, busy)
	if _, ok := b.cloud.Get(idle); ok {
		t.Error("an idle runner frozen past the offline timeout is still there")
	}
	b.advance(23 * time.Hour)
	b.run(t, manager.Reconcile)
	b.assertKept(t, busy)
	b.advance(time.Hour)
	if out := b.run(t, manager.Reconcile); out.Removed[string(runner.Unresponsive)] != 1 {
		t.Errorf("outcome %+v: want the busy runner ended at the long limit", out)
	}
	if _, ok := b.cloud.Get(busy); ok {
		t.Error("the frozen busy runner outlived the long limit")
	}
}

// §2: a thawed runner carries on.
func TestThawedRunnerCarriesOn(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	name := b.cloud.Names()[0]
	b.cloud.SetStatus(name, cloud.Unresponsive)
	b.run(t, manager.Reconcile)
	b.advance(15 * time.Minute)
	b.cloud.SetStatus(name, cloud.Running)
	b.run(t, manager.Reconcile)
	b.cloud.SetStatus(name, cloud.Unresponsive) // frozen again: a new clock
	b.advance(15 * time.Minute)
	if out := b.run(t, manager.Reconcile); out.RemovedTotal() != 0 {
		t.Errorf("outcome %+v", out)
	}
}

// §3: two models deploy github-runner/0 against one organisation and one
// cloud; neither ever touches the other's runners.
func TestTwoModelsShareAnOrganisationAndACloud(t *testing.T) {
	a := newBed(t, 2)
	otherID := runner.Identity{Model: "f1e2d3c4-0000-4000-8000-000000000001", App: id.App, Unit: id.Unit}
	otherCloud := a.cloud.As(otherID)
	s := settings(3)
	s.Identity = otherID
	other := manager.New(otherCloud, a.platform, s, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(a.clock)
	runOther := func(mode manager.Mode) manager.Outcome {
		out, err := other.Run(context.Background(), mode)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a.run(t, manager.Reconcile)
	runOther(manager.Reconcile)
	for range 3 {
		a.onlineAll()
		a.advance(25 * time.Minute)
		if out := a.run(t, manager.Reconcile); out.RemovedTotal() != 0 || len(out.Views) != 2 {
			t.Errorf("model A: %+v", out)
		}
		if out := runOther(manager.Reconcile); out.RemovedTotal() != 0 || len(out.Views) != 3 {
			t.Errorf("model B: %+v", out)
		}
	}
	if out := runOther(manager.DrainAll); out.Removed["flush"] != 3 {
		t.Errorf("model B's drain: %+v", out)
	}
	if n := len(a.cloud.Names()); n != 2 {
		t.Errorf("model B's drain left %d instances, want model A's 2", n)
	}
	a.assertConsistent(t, 2)
}

// §3: an instance whose name is ours but whose metadata names another
// model (a tag collision) is not ours.
func TestInstanceOfAnotherOwnerIsNotOurs(t *testing.T) {
	b := newBed(t, 0)
	name := id.NewName()
	b.cloud.Put(cloud.Instance{Name: name, CreatedAt: b.clock(), Status: cloud.Stopped,
		Owner: runner.Owner{Model: "another-model", Unit: id.UnitName()}})
	b.advance(time.Hour)
	b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(name); !ok {
		t.Error("another owner's instance was deleted")
	}
}

// §3: after `juju refresh`, runners named before model tags are neither
// leaked nor killed: idle ones are replaced, busy ones finish, and a
// legacy record with no instance of ours (it may be another model's) is
// left alone.
func TestLegacyRunnersAreRetired(t *testing.T) {
	b := newBed(t, 2)
	legacyOwner := runner.Owner{Unit: id.UnitName()}
	put := func(suffix string, busy bool) string {
		name := id.LegacyPrefix() + "-" + suffix
		rid := b.platform.Add(name, true, busy)
		b.cloud.Put(cloud.Instance{Name: name, RunnerID: rid, CreatedAt: b.clock().Add(-time.Hour), Status: cloud.Running, Owner: legacyOwner})
		return name
	}
	idle, busy := put("0123456789ab", false), put("ba9876543210", true)
	foreign := id.LegacyPrefix() + "-aaaaaaaaaaaa"
	b.platform.Add(foreign, true, false)
	// Another model's runner of the old naming, on the same cloud, in an
	// organisation this unit's GitHub does not list (here, a 404).
	theirs := id.LegacyPrefix() + "-bbbbbbbbbbbb"
	b.cloud.Put(cloud.Instance{Name: theirs, RunnerID: 999, CreatedAt: b.clock().Add(-time.Hour), Status: cloud.Running, Owner: legacyOwner})
	out := b.run(t, manager.Reconcile)
	if out.Removed[string(runner.Retiring)] != 1 || out.Created != 2 {
		t.Errorf("outcome %+v", out)
	}
	if _, ok := b.cloud.Get(idle); ok {
		t.Error("the idle legacy runner is still there")
	}
	b.assertKept(t, busy)
	b.platform.Delete(busy)
	b.cloud.SetStatus(busy, cloud.Stopped)
	b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(busy); ok {
		t.Error("the finished legacy runner is still there")
	}
	if _, ok := b.platform.Get(foreign); !ok {
		t.Error("a legacy record with no instance of ours was removed")
	}
	b.advance(30 * time.Hour)
	b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(theirs); !ok {
		t.Error("another model's instance of the old naming was deleted on a 404 from this unit's scope")
	}
}

// §4: a restarted manager waits as long as one that never stopped.
func TestRestartedManagerWaitsAsLong(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	b.run(t, manager.Reconcile)
	name := b.cloud.Names()[0]
	b.platform.Set(name, false, false) // offline, 10 minutes before the restart
	b.advance(10 * time.Minute)
	restarted := manager.New(b.cloud, b.platform, settings(1), slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	b.advance(time.Hour) // instance well past the creation timeout
	for range 2 {
		out, err := restarted.Run(context.Background(), manager.Reconcile)
		if err != nil || out.RemovedTotal() != 0 {
			t.Fatalf("a restarted manager expired an offline runner at once: %+v %v", out, err)
		}
		b.advance(9 * time.Minute)
	}
	b.advance(3 * time.Minute)
	out, _ := restarted.Run(context.Background(), manager.Reconcile)
	if out.Removed[string(runner.Offline)] != 1 {
		t.Errorf("outcome %+v: want the runner gone after the full offline timeout", out)
	}
}

var _ = managertest.Model

// When the unit goes away (or flush-busy is asked), a runner GitHub cannot
// be asked about still loses its instance: nothing outlives the unit.
func TestDrainAllRemovesWhatGitHubCannotConfirm(t *testing.T) {
	b := newBed(t, 2)
	b.run(t, manager.Reconcile)
	b.platform.Hide = func(manager.Runner) bool { return true }
	b.platform.FailRemove = func(runner.Scope, int64) error { return errors.New("503 Service Unavailable") }
	out, err := b.engine.Run(context.Background(), manager.DrainAll)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.cloud.Names()); n != 0 || out.Failures["remove"] != 2 {
		t.Errorf("%d instances left, outcome %+v", n, out)
	}
}

// §4 (issue 11): a busy runner in a path the unit has left, killed by a
// flush-busy, loses its instance at once; its record, busy until GitHub
// fails the job, is removed once GitHub lets it go, by a restarted manager
// too: the tombstone kept before the instance went is the platform's.
func TestFlushBusyInAnOldPathRemovesItsRecordLater(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	busy := b.cloud.Names()[0]
	b.platform.Set(busy, true, true)
	newScope := runner.NewScope(scope.APIURL, "canonical/other-runners")
	b.platform.SetScope(newScope)
	s := settings(1)
	s.Scope = newScope
	b.engine.SetSettings(s)
	b.run(t, manager.Reconcile) // the old busy runner finishes its job, a new one starts
	b.assertKept(t, busy)
	if out := b.run(t, manager.FlushAll); out.RemovedTotal() != 2 {
		t.Fatalf("outcome %+v: want both runners flushed", out)
	}
	if _, ok := b.cloud.Get(busy); ok {
		t.Fatal("flush-busy kept the busy runner's instance")
	}
	if _, ok := b.platform.Get(busy); !ok {
		t.Fatal("GitHub removed a busy runner's record")
	}
	restarted := manager.New(b.cloud, b.platform, s, slog.New(slog.NewTextHandler(io.Discard, nil))).WithClock(b.clock)
	run := func() manager.Outcome {
		t.Helper()
		out, err := restarted.Run(context.Background(), manager.Reconcile)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	b.advance(time.Minute)
	run() // still busy at GitHub: kept
	if _, ok := b.platform.Get(busy); !ok || b.platform.RemovedBusy != 0 {
		t.Fatal("a busy record was removed")
	}
	b.platform.Set(busy, false, false) // GitHub fails the lost job
	b.advance(time.Minute)
	b.onlineAll()
	if out := run(); out.Removed[string(runner.Retiring)] != 1 {
		t.Errorf("outcome %+v: want the old record removed", out)
	}
	if _, ok := b.platform.Get(busy); ok {
		t.Error("the flushed runner's record in the old path leaked")
	}
	b.assertConsistent(t, 1)
	if ts, _ := b.platform.Tombstones(context.Background()); len(ts) != 0 {
		t.Errorf("tombstones left: %+v", ts)
	}
	run() // the next snapshot has nothing left in the old path
	if !slices.Equal(b.platform.InUseScopes, []runner.Scope{newScope}) {
		t.Errorf("scopes in use %v, want only today's", b.platform.InUseScopes)
	}
}

// §4: an instance whose record GitHub has not let go is deleted only once
// its tombstone is kept; a stopped instance is its own record until then.
func TestInstanceIsKeptWhileItsTombstoneCannotBe(t *testing.T) {
	b := newBed(t, 1)
	b.run(t, manager.Reconcile)
	name := b.cloud.Names()[0]
	b.platform.Set(name, true, true)
	b.cloud.SetStatus(name, cloud.Stopped) // killed mid-job: its record stays busy
	b.platform.FailBury = errors.New("no space left on device")
	out := b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(name); !ok || out.Failures["remember"] != 1 {
		t.Fatalf("instance deleted without its tombstone, or no failure counted: %+v", out)
	}
	b.platform.FailBury = nil
	b.run(t, manager.Reconcile)
	if _, ok := b.cloud.Get(name); ok {
		t.Error("the stopped instance outlived its tombstone's keeping")
	}
	if ts, _ := b.platform.Tombstones(context.Background()); len(ts) != 1 || ts[0].Name != name {
		t.Errorf("tombstones %+v, want %s's", ts, name)
	}
}

// bootingCloud's instances exist as soon as Create is called and boot
// until release is closed or the create is cut short; then, the worst
// case, the instance is left behind (a revert that failed).
type bootingCloud struct {
	*managertest.Cloud
	booting chan string
	release chan struct{}
}

func (c *bootingCloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	if err := c.Cloud.Create(ctx, req); err != nil {
		return err
	}
	c.booting <- req.Name
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// §4: a drain stops creation first. StopCreating ends the creates under
// way at once (the cycle does not wait for runners about to be removed),
// starts no more, and the drain after it leaves nothing: no instance, no
// registration.
func TestStopCreatingCutsTheCycleShort(t *testing.T) {
	c := &bootingCloud{Cloud: managertest.NewCloud(), booting: make(chan string, 10), release: make(chan struct{})}
	platform := managertest.NewPlatform()
	engine := manager.New(c, platform, settings(3), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	done := make(chan manager.Outcome, 1)
	go func() {
		out, err := engine.Run(ctx, manager.Reconcile)
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	<-c.booting
	engine.StopCreating()
	select {
	case out := <-done:
		if out.Created != 0 || len(out.Errors) != 0 || len(out.Failures) != 0 {
			t.Errorf("the cut cycle: %d created, errors %v, failures %v; want none of either", out.Created, out.Errors, out.Failures)
		}
	case <-time.After(10 * time.Second):
		close(c.release)
		t.Fatal("the cycle waited for its creates after StopCreating")
	}
	if out, err := engine.Run(ctx, manager.Reconcile); err != nil || out.Created != 0 {
		t.Errorf("a reconcile after StopCreating: %+v, %v", out, err)
	}
	if _, err := engine.Run(ctx, manager.DrainAll); err != nil {
		t.Fatal(err)
	}
	if left, registered := c.Names(), platform.Names(); len(left) != 0 || len(registered) != 0 {
		t.Errorf("after the drain: instances %v, registrations %v", left, registered)
	}
}

// §4: a unit going away leaves no instance even while GitHub refuses its
// credentials or is down: a drain of every runner deletes every instance
// whatever GitHub says, so it needs no runners list (any other cycle that
// cannot list still changes nothing).
func TestDrainAllWithoutGitHubsList(t *testing.T) {
	b := newBed(t, 3)
	b.run(t, manager.Reconcile)
	b.onlineAll()
	b.platform.Set(b.cloud.Names()[0], true, true) // one is running a job
	b.platform.FailList = errors.New("GitHub rejected the credentials")
	b.platform.FailRemove = func(runner.Scope, int64) error { return errors.New("GitHub rejected the credentials") }
	if _, err := b.engine.Run(context.Background(), manager.Reconcile); err == nil || len(b.cloud.Names()) != 3 {
		t.Fatalf("a reconcile without the list: %v, instances %v; want an error and nothing changed", err, b.cloud.Names())
	}
	out, err := b.engine.Run(context.Background(), manager.DrainAll)
	if err != nil {
		t.Fatalf("drain-all without the list: %v", err)
	}
	if left := b.cloud.Names(); len(left) != 0 {
		t.Errorf("instances left after drain-all: %v", left)
	}
	if out.Failures["list"] != 1 || len(out.Errors) == 0 {
		t.Errorf("the drain does not report what it could not do: failures %v, errors %v", out.Failures, out.Errors)
	}
}
