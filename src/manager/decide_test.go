package manager

import (
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

var (
	t0        = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	testID    = runner.Identity{Model: "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10", App: "github-runner", Unit: 0}
	testScope = runner.NewScope("https://api.github.com", "canonical/runners")
)

func inst(name string, age time.Duration, status cloud.Status) cloud.Instance {
	return cloud.Instance{Name: name, RunnerID: 1, CreatedAt: t0.Add(-age), Status: status, Owner: testID.Owner(), Scope: testScope}
}

// Every state a runner can be in: how Join enters it and whether it expires.
func TestJoinStates(t *testing.T) {
	timeouts := Timeouts{Creation: 10 * time.Minute, Offline: 20 * time.Minute, Unresponsive: 24 * time.Hour}
	name := testID.NewName()
	at := func(ago time.Duration) time.Time { return t0.Add(-ago) }
	oldScope := runner.NewScope("https://api.github.com", "canonical/old-runners")
	legacy := func(i cloud.Instance) cloud.Instance {
		i.Name, i.Owner = "github-runner-0-0123456789ab", runner.Owner{Unit: "github-runner/0"}
		return i
	}
	scoped := func(i cloud.Instance, s runner.Scope) cloud.Instance { i.Scope = s; return i }
	tests := []struct {
		name     string
		instance *cloud.Instance
		runner   *Runner
		seen     Sighting // what this process saw before; First defaults to now
		state    runner.State
		expired  bool
		forced   bool
	}{
		{"booting, not yet registered", ptr(inst(name, time.Minute, cloud.Building)), nil, Sighting{}, runner.Creating, false, false},
		{"running, registered offline, young", ptr(inst(name, time.Minute, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{}, runner.Creating, false, false},
		{"online, no job", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name, Online: true}, Sighting{}, runner.Idle, false, false},
		{"running a job", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name, Online: true, Busy: true}, Sighting{}, runner.Busy, false, false},
		{"busy while offline", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name, Busy: true}, Sighting{}, runner.Busy, false, false},
		{"watched since young, never came online", ptr(inst(name, 11*time.Minute, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{First: at(10 * time.Minute)}, runner.Offline, true, false},
		{"offline briefly", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{First: at(time.Hour), LastOnline: at(5 * time.Minute)}, runner.Offline, false, false},
		{"offline too long", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{First: at(time.Hour), LastOnline: at(21 * time.Minute)}, runner.Offline, true, false},
		// §4: a restarted manager first sees an old offline runner: the
		// full offline timeout runs from now.
		{"first seen offline, old", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{}, runner.Offline, false, false},
		{"first seen offline 19 minutes ago", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{First: at(19 * time.Minute)}, runner.Offline, false, false},
		{"first seen offline 21 minutes ago", ptr(inst(name, time.Hour, cloud.Running)), &Runner{ID: 1, Name: name}, Sighting{First: at(21 * time.Minute)}, runner.Offline, true, false},
		{"finished: powered off", ptr(inst(name, time.Hour, cloud.Stopped)), &Runner{ID: 1, Name: name, Online: true}, Sighting{}, runner.Stopped, true, false},
		// §1: not listed is not proof of gone; expiry sends the removal to
		// GitHub first (see the engine's tests).
		{"instance whose runner is not listed", ptr(inst(name, 11*time.Minute, cloud.Running)), nil, Sighting{}, runner.NoRunner, true, false},
		{"stuck building", ptr(inst(name, 11*time.Minute, cloud.Building)), nil, Sighting{}, runner.NoRunner, true, false},
		{"runner without instance", nil, &Runner{ID: 1, Name: name, Online: true}, Sighting{}, runner.NoInstance, true, false},
		// §2: busy beats a frozen, paused or unknown instance.
		{"frozen, busy", ptr(inst(name, time.Hour, cloud.Unresponsive)), &Runner{ID: 1, Name: name, Online: true, Busy: true}, Sighting{Troubled: at(2 * time.Hour)}, runner.Unresponsive, false, false},
		{"frozen, busy, past the long limit", ptr(inst(name, 30*time.Hour, cloud.Unresponsive)), &Runner{ID: 1, Name: name, Busy: true}, Sighting{Troubled: at(25 * time.Hour)}, runner.Unresponsive, true, true},
		{"frozen, idle, briefly", ptr(inst(name, time.Hour, cloud.Unresponsive)), &Runner{ID: 1, Name: name, Online: true}, Sighting{Troubled: at(5 * time.Minute)}, runner.Unresponsive, false, false},
		{"frozen, idle, long", ptr(inst(name, time.Hour, cloud.Unresponsive)), &Runner{ID: 1, Name: name, Online: true}, Sighting{Troubled: at(21 * time.Minute)}, runner.Unresponsive, true, false},
		{"frozen, not listed, long", ptr(inst(name, time.Hour, cloud.Unresponsive)), nil, Sighting{Troubled: at(21 * time.Minute)}, runner.Unresponsive, true, false},
		// §1: registered in the old path: asked about there, never counted.
		{"registered in another scope", ptr(scoped(inst(name, time.Minute, cloud.Running), oldScope)), nil, Sighting{}, runner.Retiring, true, false},
		{"another scope, past the long limit", ptr(scoped(inst(name, 30*time.Hour, cloud.Running), oldScope)), nil, Sighting{Troubled: at(25 * time.Hour)}, runner.Retiring, true, true},
		{"another scope, stopped", ptr(scoped(inst(name, time.Hour, cloud.Stopped), oldScope)), nil, Sighting{}, runner.Stopped, true, false},
		{"made before scopes were recorded", ptr(scoped(inst(name, time.Hour, cloud.Running), runner.Scope{})), &Runner{ID: 1, Name: name, Online: true}, Sighting{}, runner.Idle, false, false},
		// §3: named before model tags: replaced, once idle.
		{"legacy, idle", ptr(legacy(inst(name, time.Hour, cloud.Running))), &Runner{ID: 1, Name: "github-runner-0-0123456789ab", Online: true}, Sighting{}, runner.Retiring, true, false},
		{"legacy, busy", ptr(legacy(inst(name, time.Hour, cloud.Running))), &Runner{ID: 1, Name: "github-runner-0-0123456789ab", Online: true, Busy: true}, Sighting{}, runner.Retiring, false, false},
		// A legacy instance this scope does not list under its runner id may
		// be another model's: left alone, however long, frozen or not.
		{"legacy, not listed", ptr(legacy(inst(name, 30*time.Hour, cloud.Running))), nil, Sighting{Troubled: at(25 * time.Hour)}, runner.Retiring, false, false},
		{"legacy, listed under another id", ptr(legacy(inst(name, time.Hour, cloud.Running))), &Runner{ID: 2, Name: "github-runner-0-0123456789ab", Online: true}, Sighting{}, runner.Retiring, false, false},
		{"legacy, frozen, not listed", ptr(legacy(inst(name, 30*time.Hour, cloud.Unresponsive))), nil, Sighting{Troubled: at(25 * time.Hour)}, runner.Retiring, false, false},
		{"legacy, stopped, not listed", ptr(legacy(inst(name, time.Hour, cloud.Stopped))), nil, Sighting{}, runner.Stopped, true, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			snap := Snapshot{Now: t0, Scope: testScope, Seen: map[string]Sighting{}}
			key := name
			if test.instance != nil {
				snap.Instances = []cloud.Instance{*test.instance}
				key = test.instance.Name
			}
			if test.runner != nil {
				snap.Runners = []Runner{*test.runner}
			}
			if test.seen.First.IsZero() {
				test.seen.First = t0
			}
			snap.Seen[key] = test.seen
			views := Join(snap, testID, timeouts)
			if len(views) != 1 {
				t.Fatalf("views = %+v", views)
			}
			v := views[0]
			if v.State != test.state || v.Expired != test.expired || v.Forced != test.forced {
				t.Errorf("state %s expired %v forced %v, want %s %v %v", v.State, v.Expired, v.Forced, test.state, test.expired, test.forced)
			}
		})
	}
}

// A runner named before model tags may be another model's: it is joined to
// an instance of ours, never removed on its name alone.
func TestJoinLeavesLegacyRunnersWithoutInstanceAlone(t *testing.T) {
	snap := Snapshot{Now: t0, Scope: testScope, Seen: map[string]Sighting{},
		Runners: []Runner{{ID: 1, Name: "github-runner-0-0123456789ab", Online: true}}}
	if views := Join(snap, testID, DefaultTimeouts); len(views) != 0 {
		t.Errorf("views %+v", views)
	}
}

func ptr[T any](v T) *T { return &v }

func view(name string, state runner.State, age time.Duration) View {
	i := inst(name, age, cloud.Running)
	return View{Name: name, State: state, Instance: &i, Runner: &Runner{ID: 1, Name: name, Busy: state == runner.Busy}}
}

func expired(v View) View { v.Expired = true; return v }

func TestDecide(t *testing.T) {
	idleOld, idleNew := view("idle-old", runner.Idle, time.Hour), view("idle-new", runner.Idle, time.Minute)
	busy, creating := view("busy", runner.Busy, time.Hour), view("creating", runner.Creating, time.Minute)
	offline := view("offline", runner.Offline, time.Hour)
	stopped := expired(view("stopped", runner.Stopped, time.Hour))
	orphan := View{Name: "orphan", State: runner.NoInstance, Runner: &Runner{ID: 9, Name: "orphan"}, Expired: true}
	tomb := View{Name: "tomb", State: runner.Retiring, Tombstone: &Tombstone{RunnerID: 8, Name: "tomb"}} // asked about recently
	tests := []struct {
		name   string
		views  []View
		target int
		mode   Mode
		create int
		remove []string
	}{
		{"empty to three", nil, 3, Reconcile, 3, nil},
		{"steady", []View{idleOld, busy, creating}, 3, Reconcile, 0, nil},
		{"creating and offline count", []View{creating, offline}, 2, Reconcile, 0, nil},
		{"replace finished and orphaned", []View{idleOld, stopped, orphan}, 2, Reconcile, 1, []string{"stopped", "orphan"}},
		{"scale down removes newest idle only", []View{idleOld, idleNew, busy, creating}, 2, Reconcile, 0, []string{"idle-new", "idle-old"}},
		{"scale down never removes busy", []View{busy, idleOld}, 0, Reconcile, 0, []string{"idle-old"}},
		{"scale down cannot go below busy", []View{busy, creating}, 0, Reconcile, 0, nil},
		{"flush idle", []View{idleOld, busy, creating, offline, stopped}, 3, FlushIdle, 0, []string{"idle-old", "creating", "offline", "stopped"}},
		{"flush all", []View{idleOld, busy}, 2, FlushAll, 0, []string{"idle-old", "busy"}},
		{"cleanup creates nothing", []View{idleOld, stopped, orphan}, 3, Cleanup, 0, []string{"stopped", "orphan"}},
		{"cleanup still scales down", []View{idleOld, idleNew}, 1, Cleanup, 0, []string{"idle-new"}},
		{"a tombstone neither counts nor is asked before it is due", []View{idleOld, tomb}, 2, Reconcile, 1, nil},
		{"a tombstone due is asked about", []View{idleOld, expired(tomb)}, 1, Reconcile, 0, []string{"tomb"}},
		{"a drain asks about every tombstone", []View{tomb}, 0, DrainAll, 0, []string{"tomb"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			plan := Decide(test.views, Scale{Desired: test.target}, test.mode)
			if plan.Create != test.create {
				t.Errorf("create %d, want %d", plan.Create, test.create)
			}
			var names []string
			for _, r := range plan.Remove {
				names = append(names, r.Name)
			}
			if len(names) != len(test.remove) {
				t.Fatalf("remove %v, want %v", names, test.remove)
			}
			for i := range names {
				if names[i] != test.remove[i] {
					t.Errorf("remove %v, want %v", names, test.remove)
				}
			}
		})
	}
}

// A tombstone stands alone only while neither its instance nor GitHub's
// list does; it is asked about every cycle while young, then less often,
// and past TombstoneLimit once more before it is forgotten (Forced).
func TestJoinTombstones(t *testing.T) {
	name := testID.NewName()
	oldScope := runner.NewScope("https://ghe.example.com/api/v3", "canonical/old-runners")
	at := func(ago time.Duration) time.Time { return t0.Add(-ago) }
	tests := []struct {
		name      string
		tombstone Tombstone
		instance  bool
		listed    bool
		asked     time.Time
		views     int
		expired   bool
		forced    bool
	}{
		{"never asked", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(time.Minute)}, false, false, time.Time{}, 1, true, false},
		{"young, asked a cycle ago", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(4 * time.Minute)}, false, false, at(time.Minute), 1, true, false},
		{"old, asked a minute ago", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(4 * time.Hour)}, false, false, at(time.Minute), 1, false, false},
		{"old, asked 15 minutes ago", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(4 * time.Hour)}, false, false, at(15 * time.Minute), 1, true, false},
		{"past the limit", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(TombstoneLimit)}, false, false, at(time.Minute), 1, true, true},
		{"its instance is still there", Tombstone{Scope: oldScope, RunnerID: 1, Name: name, Since: at(time.Minute)}, true, false, time.Time{}, 1, true, false},
		{"listed in today's scope", Tombstone{Scope: testScope, RunnerID: 1, Name: name, Since: at(time.Minute)}, false, true, time.Time{}, 1, true, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			snap := Snapshot{Now: t0, Scope: testScope, Seen: map[string]Sighting{name: {First: t0, Asked: test.asked}},
				Tombstones: []Tombstone{test.tombstone}}
			if test.instance {
				snap.Instances = []cloud.Instance{inst(name, time.Hour, cloud.Stopped)}
			}
			if test.listed {
				snap.Runners = []Runner{{ID: 1, Name: name}}
			}
			views := Join(snap, testID, DefaultTimeouts)
			if len(views) != test.views {
				t.Fatalf("views %+v", views)
			}
			v := views[0]
			if (v.Tombstone != nil) == (test.instance || test.listed) {
				t.Errorf("view %+v: want the tombstone's own view only when nothing else stands for it", v)
			}
			if v.Expired != test.expired || v.Forced != test.forced {
				t.Errorf("expired %v forced %v, want %v %v", v.Expired, v.Forced, test.expired, test.forced)
			}
			if v.Tombstone != nil && (v.State != runner.Retiring || v.healthy() || v.runnerID() != 1 || v.Scope != test.tombstone.Scope) {
				t.Errorf("tombstone view %+v: want retiring, not counted, asked about runner 1 in its own scope", v)
			}
		})
	}
}

// Demand scaling: the shortfall is created up to the cap, which counts
// every instance but stopped ones, and idle runners above the desired count go only once
// the excess has lasted the cool-down.
func TestDecideScaling(t *testing.T) {
	idleOld, idleNew := view("idle-old", runner.Idle, time.Hour), view("idle-new", runner.Idle, time.Minute)
	busy, busy2 := view("busy", runner.Busy, time.Hour), view("busy2", runner.Busy, time.Hour)
	stopped, stopped2 := expired(view("stopped", runner.Stopped, time.Hour)), expired(view("stopped2", runner.Stopped, time.Hour))
	retiring := view("retiring", runner.Retiring, time.Hour) // a busy runner of an old path: not counted, holds a place
	gone := expired(view("gone", runner.Offline, time.Hour)) // offline too long: removed, running until then
	tomb := View{Name: "tomb", State: runner.Retiring, Tombstone: &Tombstone{RunnerID: 8, Name: "tomb"}}
	started := view("started", runner.Offline, time.Hour)
	started.JobStarted = true
	ended := view("ended", runner.Idle, time.Hour)
	ended.JobEnded = true
	scale := func(desired, max int) Scale { return Scale{Desired: desired, Max: max, Now: t0} }
	cooling := func(desired int, cool, since time.Duration) Scale {
		s := Scale{Desired: desired, CoolDown: cool, Now: t0}
		if since >= 0 {
			s.ExcessSince = t0.Add(-since)
		}
		return s
	}
	tests := []struct {
		name               string
		views              []View
		scale              Scale
		mode               Mode
		create, room, more int // more: idle excess seen
		remove             []string
	}{
		{"demand above the target creates the shortfall", []View{idleOld}, scale(3, 0), Reconcile, 2, 2, 0, nil},
		{"no cap: every create at once", []View{busy, busy2, stopped, stopped2}, scale(4, 0), Reconcile, 2, 2, 0, []string{"stopped", "stopped2"}},
		{"a stopped instance holds no place: it runs nothing", []View{busy, stopped}, scale(4, 3), Reconcile, 2, 2, 0, []string{"stopped"}},
		{"a bound cap waits for the removal of a running instance", []View{busy, busy2, gone}, scale(4, 3), Reconcile, 1, 0, 0, []string{"gone"}},
		{"stopped instances make room at once", []View{busy, busy2, stopped, stopped2}, scale(4, 4), Reconcile, 2, 2, 0, []string{"stopped", "stopped2"}},
		{"the cap counts retiring instances", []View{busy, retiring}, scale(3, 3), Reconcile, 1, 1, 0, nil},
		{"a tombstone holds no place", []View{busy, tomb}, scale(2, 2), Reconcile, 1, 1, 0, nil},
		{"over the cap, busy runners stay", []View{busy, busy2}, scale(1, 1), Reconcile, 0, 0, 0, nil},
		{"a runner whose job ended neither counts nor goes", []View{ended}, scale(1, 0), Reconcile, 1, 1, 0, nil},
		{"a runner whose job ended is no idle excess", []View{ended, idleOld}, scale(0, 0), Reconcile, 0, 0, 1, []string{"idle-old"}},
		{"flush-idle spares a runner the feed says took a job", []View{started, idleOld}, scale(2, 0), FlushIdle, 0, 0, 0, []string{"idle-old"}},
		{"drain-idle spares it too", []View{started}, scale(0, 0), DrainIdle, 0, 0, 0, nil},
		{"flush-busy does not", []View{started}, scale(1, 0), FlushAll, 0, 0, 0, []string{"started"}},
		{"excess begins: nothing goes yet", []View{idleOld, idleNew}, cooling(1, 30*time.Second, -1), Reconcile, 0, 0, 1, nil},
		{"excess within the cool-down", []View{idleOld, idleNew}, cooling(1, 30*time.Second, 29*time.Second), Reconcile, 0, 0, 1, nil},
		{"excess past the cool-down goes, newest first", []View{idleOld, idleNew}, cooling(1, 30*time.Second, 30*time.Second), Reconcile, 0, 0, 1, []string{"idle-new"}},
		{"cleanup waits out the cool-down too", []View{idleOld, idleNew}, cooling(0, 30*time.Second, time.Second), Cleanup, 0, 0, 2, nil},
		{"busy runners are no excess", []View{busy, busy2}, cooling(0, 30*time.Second, time.Hour), Reconcile, 0, 0, 0, nil},
		{"no cool-down: at once", []View{idleOld, idleNew}, cooling(0, 0, -1), Reconcile, 0, 0, 2, []string{"idle-new", "idle-old"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			plan := Decide(test.views, test.scale, test.mode)
			if plan.Create != test.create || plan.Room != test.room || plan.Excess != test.more {
				t.Errorf("create %d room %d excess %d, want %d %d %d", plan.Create, plan.Room, plan.Excess, test.create, test.room, test.more)
			}
			var names []string
			for _, r := range plan.Remove {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != strings.Join(test.remove, ",") {
				t.Errorf("remove %v, want %v", names, test.remove)
			}
		})
	}
}

// The demand feed's job events, as Join reads them from the snapshot: a
// runner that took a job is busy whatever GitHub's list says (for as long
// as any runner may be kept busy unverified); one whose job ended is on
// its way out (for an offline timeout at most).
func TestJoinJobMarks(t *testing.T) {
	name := testID.NewName()
	at := func(ago time.Duration) map[string]time.Time { return map[string]time.Time{name: t0.Add(-ago)} }
	online := &Runner{ID: 1, Name: name, Online: true}
	tests := []struct {
		name      string
		runner    *Runner
		instance  cloud.Instance
		demand    Demand
		state     runner.State
		expired   bool
		started   bool
		ended     bool
		unhealthy bool
	}{
		{"listed idle, took a job", online, inst(name, time.Hour, cloud.Running), Demand{Started: at(time.Second)}, runner.Busy, false, true, false, false},
		{"not yet listed, took a job", nil, inst(name, time.Minute, cloud.Running), Demand{Started: at(time.Second)}, runner.Busy, false, true, false, false},
		{"registered offline young, took a job", &Runner{ID: 1, Name: name}, inst(name, time.Minute, cloud.Running), Demand{Started: at(time.Second)}, runner.Busy, false, true, false, false},
		{"stopped after its job", online, inst(name, time.Hour, cloud.Stopped), Demand{Started: at(time.Minute)}, runner.Stopped, true, true, false, true},
		{"took a job a day ago, GitHub lists it idle", online, inst(name, 25*time.Hour, cloud.Running), Demand{Started: at(DefaultTimeouts.Unresponsive)}, runner.Idle, false, false, false, false},
		{"frozen, took a job", online, inst(name, time.Hour, cloud.Unresponsive), Demand{Started: at(time.Hour)}, runner.Unresponsive, false, true, false, false},
		{"job ended, still listed idle", online, inst(name, time.Hour, cloud.Running), Demand{Completed: at(time.Second)}, runner.Idle, false, false, true, true},
		{"job ended, still listed busy", &Runner{ID: 1, Name: name, Online: true, Busy: true}, inst(name, time.Hour, cloud.Running), Demand{Started: at(time.Minute), Completed: at(time.Second)}, runner.Busy, false, true, true, true},
		{"job ended long ago, never left", online, inst(name, 2*time.Hour, cloud.Running), Demand{Completed: at(DefaultTimeouts.Offline)}, runner.Idle, false, false, false, false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			// Troubled long ago: a frozen runner listed idle would expire.
			snap := Snapshot{Now: t0, Scope: testScope, Seen: map[string]Sighting{name: {First: t0.Add(-2 * time.Hour), Troubled: t0.Add(-time.Hour)}},
				Instances: []cloud.Instance{test.instance}, Demand: test.demand}
			if test.runner != nil {
				snap.Runners = []Runner{*test.runner}
			}
			views := Join(snap, testID, DefaultTimeouts)
			if len(views) != 1 {
				t.Fatalf("views %+v", views)
			}
			v := views[0]
			if v.State != test.state || v.Expired != test.expired || v.JobStarted != test.started || v.JobEnded != test.ended || v.healthy() == test.unhealthy {
				t.Errorf("state %s expired %v started %v ended %v healthy %v, want %s %v %v %v %v",
					v.State, v.Expired, v.JobStarted, v.JobEnded, v.healthy(), test.state, test.expired, test.started, test.ended, !test.unhealthy)
			}
		})
	}
}

// A job mark goes with its runner: forgotten once a snapshot shows neither
// its instance nor its record; a mark made since that snapshot was read
// (a runner created since) stays.
func TestDemandForgetsMarksOfGoneRunners(t *testing.T) {
	d := newDemand(Settings{Target: 1})
	d.started["gone"], d.started["here"], d.completed["listed"], d.completed["again"] = t0, t0, t0, t0
	snap := Snapshot{Instances: []cloud.Instance{{Name: "here"}}, Runners: []Runner{{Name: "listed"}}, Demand: d.read()}
	d.started["late"], d.completed["again"] = t0.Add(time.Second), t0.Add(time.Second)
	d.forget(snap)
	if _, ok := d.started["gone"]; ok || len(d.started) != 2 || len(d.completed) != 2 {
		t.Errorf("marks started %v completed %v: want gone's forgotten, the rest kept", d.started, d.completed)
	}
}
