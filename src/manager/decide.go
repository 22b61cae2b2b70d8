package manager

import (
	"sort"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Runner is one of this unit's runners as GitHub lists it.
type Runner struct {
	ID     int64
	Name   string
	Online bool
	Busy   bool
}

// Snapshot is everything one cycle reads, once, before deciding.
type Snapshot struct {
	Instances []cloud.Instance
	Runners   []Runner
	Now       time.Time
	// LastOnline is when this process last saw each runner online. A
	// restarted manager starts empty and falls back to the creation
	// timeout, which errs on the side of waiting.
	LastOnline map[string]time.Time
}

// View is one runner: its instance and its GitHub record joined by name.
type View struct {
	Name     string
	State    runner.State
	Instance *cloud.Instance // nil for NoInstance
	Runner   *Runner         // nil while GitHub does not list it
	// Expired: the runner stayed in its state past its timeout and goes.
	Expired bool
}

// runnerID is the GitHub id to delete, or 0 when GitHub has no record.
func (v View) runnerID() int64 {
	if v.Runner != nil {
		return v.Runner.ID
	}
	return 0
}

// healthy views count towards the target: they are, or may soon be, runners.
func (v View) healthy() bool {
	switch v.State {
	case runner.Idle, runner.Busy, runner.Creating:
		return true
	case runner.Offline:
		return !v.Expired
	}
	return false
}

// Timeouts are the cleanup rules' clocks.
type Timeouts struct {
	// Creation: how long an instance may run before its runner comes online.
	Creation time.Duration
	// Offline: how long a runner seen online may then show offline.
	Offline time.Duration
}

// DefaultTimeouts suit LXD and OpenStack: a runner boots and registers in
// a few minutes; the Python charm gives offline runners about 23 minutes.
var DefaultTimeouts = Timeouts{Creation: 20 * time.Minute, Offline: 23 * time.Minute}

// Join turns a snapshot into one view per runner, sorted by name.
func Join(s Snapshot, t Timeouts) []View {
	runners := make(map[string]*Runner, len(s.Runners))
	for i := range s.Runners {
		runners[s.Runners[i].Name] = &s.Runners[i]
	}
	views := make([]View, 0, len(s.Instances)+len(s.Runners))
	for i := range s.Instances {
		inst := &s.Instances[i]
		r := runners[inst.Name]
		delete(runners, inst.Name)
		views = append(views, joinInstance(inst, r, s, t))
	}
	for _, r := range runners {
		views = append(views, View{Name: r.Name, State: runner.NoInstance, Runner: r, Expired: true})
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
	return views
}

func joinInstance(inst *cloud.Instance, r *Runner, s Snapshot, t Timeouts) View {
	v := View{Name: inst.Name, Instance: inst, Runner: r}
	youngerThanCreation := s.Now.Sub(inst.CreatedAt) < t.Creation
	switch {
	case inst.Status == cloud.Stopped || inst.Status == cloud.Error:
		v.State, v.Expired = runner.Stopped, true
	case r != nil && r.Busy:
		v.State = runner.Busy
	case r != nil && r.Online:
		v.State = runner.Idle
	case r == nil:
		// Not (or no longer) registered: booting, or its runner is gone.
		v.State, v.Expired = runner.Creating, !youngerThanCreation
		if v.Expired {
			v.State = runner.NoRunner
		}
	default: // registered, offline
		last, seen := s.LastOnline[inst.Name]
		switch {
		case seen:
			v.State, v.Expired = runner.Offline, s.Now.Sub(last) >= t.Offline
		case youngerThanCreation:
			v.State = runner.Creating
		default:
			v.State, v.Expired = runner.Offline, true
		}
	}
	return v
}

// Mode says what a cycle is for.
type Mode int

const (
	Reconcile Mode = iota
	FlushIdle      // remove runners without a job, then reconcile
	FlushAll       // remove every runner, busy ones too, then reconcile
	DrainIdle      // remove runners without a job, create none (settings are about to change)
	DrainAll       // remove every runner and create none (the unit is going away)
	Cleanup        // reconcile without creating: the cloud cannot start runners now
)

// busyToo tells whether the mode removes busy runners.
func (m Mode) busyToo() bool { return m == FlushAll || m == DrainAll }

// replaces tells whether a reconcile follows the mode's removals.
func (m Mode) replaces() bool { return m == FlushIdle || m == FlushAll }

func (m Mode) String() string {
	return [...]string{"reconcile", "flush-idle", "flush-all", "drain-idle", "drain-all", "cleanup"}[m]
}

// Plan is what a cycle will do.
type Plan struct {
	Create int
	Remove []Removal
}

// Removal is one runner to remove and why.
type Removal struct {
	View
	Reason string // for logs and metrics: a runner.State or "scale-down"/"flush"
}

// Decide is the engine's whole policy, a pure function of the views: clean
// up what is broken or orphaned, then scale to target, never touching a
// busy runner unless mode is FlushAll.
func Decide(views []View, target int, mode Mode) Plan {
	var plan Plan
	healthy := 0
	var idle []View
	for _, v := range views {
		switch {
		case v.Expired:
			plan.Remove = append(plan.Remove, Removal{v, string(v.State)})
		case mode.busyToo() || (mode != Reconcile && mode != Cleanup && v.State != runner.Busy):
			plan.Remove = append(plan.Remove, Removal{v, "flush"})
		case v.healthy():
			healthy++
			if v.State == runner.Idle {
				idle = append(idle, v)
			}
		}
	}
	if mode != Reconcile && mode != Cleanup {
		// A flush replaces what it removed in a reconcile from a fresh
		// snapshot (see Engine.Run); a drain replaces nothing.
		return plan
	}
	if excess := healthy - target; excess > 0 {
		// Newest idle runners go first: older ones are likelier to be
		// handed the next job GitHub queues.
		sort.Slice(idle, func(i, j int) bool { return idle[i].Instance.CreatedAt.After(idle[j].Instance.CreatedAt) })
		for _, v := range idle[:min(excess, len(idle))] {
			plan.Remove = append(plan.Remove, Removal{v, "scale-down"})
		}
	} else if mode == Reconcile {
		plan.Create = -excess
	}
	return plan
}
