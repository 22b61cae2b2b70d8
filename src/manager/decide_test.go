package manager

import (
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func inst(name string, age time.Duration, status cloud.Status) cloud.Instance {
	return cloud.Instance{Name: name, RunnerID: 1, CreatedAt: t0.Add(-age), Status: status}
}

// Every state a runner can be in: how Join enters it and whether it expires.
func TestJoinStates(t *testing.T) {
	timeouts := Timeouts{Creation: 10 * time.Minute, Offline: 20 * time.Minute}
	tests := []struct {
		name       string
		instance   *cloud.Instance
		runner     *Runner
		lastOnline time.Duration // ago; 0 = never seen online
		state      runner.State
		expired    bool
	}{
		{"booting, not yet registered", ptr(inst("r", time.Minute, cloud.Building)), nil, 0, runner.Creating, false},
		{"running, registered offline, young", ptr(inst("r", time.Minute, cloud.Running)), &Runner{ID: 1, Name: "r"}, 0, runner.Creating, false},
		{"online, no job", ptr(inst("r", time.Hour, cloud.Running)), &Runner{ID: 1, Name: "r", Online: true}, 0, runner.Idle, false},
		{"running a job", ptr(inst("r", time.Hour, cloud.Running)), &Runner{ID: 1, Name: "r", Online: true, Busy: true}, 0, runner.Busy, false},
		{"busy while offline", ptr(inst("r", time.Hour, cloud.Running)), &Runner{ID: 1, Name: "r", Busy: true}, 0, runner.Busy, false},
		{"never came online", ptr(inst("r", 11*time.Minute, cloud.Running)), &Runner{ID: 1, Name: "r"}, 0, runner.Offline, true},
		{"offline briefly", ptr(inst("r", time.Hour, cloud.Running)), &Runner{ID: 1, Name: "r"}, 5 * time.Minute, runner.Offline, false},
		{"offline too long", ptr(inst("r", time.Hour, cloud.Running)), &Runner{ID: 1, Name: "r"}, 21 * time.Minute, runner.Offline, true},
		{"finished: powered off", ptr(inst("r", time.Hour, cloud.Stopped)), &Runner{ID: 1, Name: "r", Online: true}, 0, runner.Stopped, true},
		{"errored instance", ptr(inst("r", time.Minute, cloud.Error)), nil, 0, runner.Stopped, true},
		{"instance whose runner never appeared", ptr(inst("r", 11*time.Minute, cloud.Running)), nil, 0, runner.NoRunner, true},
		{"stuck building", ptr(inst("r", 11*time.Minute, cloud.Building)), nil, 0, runner.NoRunner, true},
		{"runner without instance", nil, &Runner{ID: 1, Name: "r", Online: true}, 0, runner.NoInstance, true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			snap := Snapshot{Now: t0, LastOnline: map[string]time.Time{}}
			if test.instance != nil {
				snap.Instances = []cloud.Instance{*test.instance}
			}
			if test.runner != nil {
				snap.Runners = []Runner{*test.runner}
			}
			if test.lastOnline != 0 {
				snap.LastOnline["r"] = t0.Add(-test.lastOnline)
			}
			views := Join(snap, timeouts)
			if len(views) != 1 {
				t.Fatalf("views = %+v", views)
			}
			if views[0].State != test.state || views[0].Expired != test.expired {
				t.Errorf("state %s expired %v, want %s %v", views[0].State, views[0].Expired, test.state, test.expired)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func view(name string, state runner.State, age time.Duration) View {
	i := inst(name, age, cloud.Running)
	return View{Name: name, State: state, Instance: &i, Runner: &Runner{ID: 1, Name: name}}
}

func expired(v View) View { v.Expired = true; return v }

func TestDecide(t *testing.T) {
	idleOld, idleNew := view("idle-old", runner.Idle, time.Hour), view("idle-new", runner.Idle, time.Minute)
	busy, creating := view("busy", runner.Busy, time.Hour), view("creating", runner.Creating, time.Minute)
	offline := view("offline", runner.Offline, time.Hour)
	stopped := expired(view("stopped", runner.Stopped, time.Hour))
	orphan := View{Name: "orphan", State: runner.NoInstance, Runner: &Runner{ID: 9, Name: "orphan"}, Expired: true}
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
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			plan := Decide(test.views, test.target, test.mode)
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
