package manager

import (
	"slices"
	"sort"
	"strings"
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
	// Scope is where this unit registers runners now; GitHub's list is of
	// this scope only.
	Scope runner.Scope
	// Seen is what this process has seen of each runner, by name. A
	// restarted manager starts empty, and every clock then starts at its
	// first sighting: it waits at least as long as one that never stopped.
	Seen map[string]Sighting
	// Tombstones are GitHub records whose instances went before GitHub
	// said the records were gone (Platform.Tombstones): no list shows one
	// registered in a scope the unit has left.
	Tombstones []Tombstone
	// Demand is what the demand feed had said when the snapshot was read.
	Demand Demand
}

// Tombstone is a GitHub record to remove whose instance is gone, or going:
// kept durably by the platform from just before its instance is deleted
// until GitHub says the record is gone, or TombstoneLimit passes.
type Tombstone struct {
	Scope    runner.Scope
	RunnerID int64
	Name     string
	Since    time.Time // when it was kept
}

// TombstoneLimit is how long a tombstone is asked about before it is
// forgotten: twice the day after which GitHub itself drops an ephemeral
// runner that has not connected, so only a record GitHub never answers
// about (credentials revoked, the API gone) is left to GitHub.
const TombstoneLimit = 48 * time.Hour

// tombstoneBackoff is how long after asking about a tombstone it is asked
// again: every cycle while young (a killed job's record is busy only until
// GitHub fails the job), then less often, at most every 15 minutes, so a
// flush of many busy runners in another scope does not spend the rate
// limit on them.
func tombstoneBackoff(age time.Duration) time.Duration {
	return min(max(age/8, 0), 15*time.Minute)
}

// Sighting is what this process has seen of one runner.
type Sighting struct {
	First      time.Time // first seen, in any state
	LastOnline time.Time // zero: never seen online
	// Troubled: since when its instance has been unresponsive, or its
	// runner registered where it cannot be listed; zero while neither.
	Troubled time.Time
	// Asked: when this process last asked GitHub about its tombstone.
	Asked time.Time
}

// View is one runner: its instance and its GitHub record joined by name.
type View struct {
	Name     string
	State    runner.State
	Instance *cloud.Instance // nil for NoInstance
	Runner   *Runner         // nil while GitHub does not list it
	// Tombstone is set for a record known only from its tombstone: no
	// instance, not listed (Retiring).
	Tombstone *Tombstone
	// Scope is where its runner is registered: where to ask about it.
	Scope runner.Scope
	// Expired: the runner stayed in its state past its timeout and goes.
	Expired bool
	// Forced: it goes instance first even if it may be running a job: it
	// stayed unresponsive or unverifiable past Timeouts.Unresponsive.
	Forced bool
	// JobStarted: the demand feed says it took a job (Engine.JobStarted):
	// it is busy, whatever GitHub's list says.
	JobStarted bool
	// JobEnded: the feed says its job is over (Engine.JobCompleted): it is
	// on its way out, neither counted nor idle excess.
	JobEnded bool
	// PythonCharm: an instance Canonical's Python charm made for this unit
	// before the switch to this charm (see joinPythonCharm); Claim: GitHub
	// lists its runner in the unit's scope for the first time, and the
	// engine keeps a tombstone of that record before acting on it.
	PythonCharm, Claim bool
}

// runnerID is the GitHub id to ask about: the listed record's, else the
// one its instance was created for; 0 when it never registered.
func (v View) runnerID() int64 {
	if v.Runner != nil {
		return v.Runner.ID
	}
	if v.Instance != nil {
		return v.Instance.RunnerID
	}
	if v.Tombstone != nil {
		return v.Tombstone.RunnerID
	}
	return 0
}

// listedBusy tells whether GitHub lists the runner running a job.
func (v View) listedBusy() bool { return v.Runner != nil && v.Runner.Busy }

// mayBeBusy tells whether the runner may be running a job: a removal of
// runners without one passes it by.
func (v View) mayBeBusy() bool { return v.State == runner.Busy || v.listedBusy() || v.JobStarted }

// healthy views count towards the target: they are, or may soon be, or
// may be busy, runners. An unlisted instance with a runner id counts until
// GitHub says its runner is gone: a list that skipped a busy runner must
// not make the engine start another.
func (v View) healthy() bool {
	if v.JobEnded {
		return false // it exits on its own: its replacement is due now
	}
	switch v.State {
	case runner.Idle, runner.Busy, runner.Creating, runner.Offline, runner.Unresponsive:
		return !v.Expired
	case runner.NoRunner:
		return v.runnerID() != 0
	}
	return false
}

// Timeouts are the cleanup rules' clocks.
type Timeouts struct {
	// Creation: how long an instance may run before its runner comes online.
	Creation time.Duration
	// Offline: how long a runner may show offline (or its instance be
	// unresponsive while GitHub says it has no job) before it goes.
	Offline time.Duration
	// Unresponsive: how long a runner that may be running a job is kept
	// while its instance is unresponsive (frozen, paused, unknown) or its
	// registration cannot be checked. Past it, it is deleted.
	Unresponsive time.Duration
}

// DefaultTimeouts suit LXD and OpenStack: a runner boots and registers in
// a few minutes; the Python charm gives offline runners about 23 minutes;
// a day outlasts any freeze for a snapshot or restart of a compute service.
var DefaultTimeouts = Timeouts{Creation: 20 * time.Minute, Offline: 23 * time.Minute, Unresponsive: 24 * time.Hour}

// Join turns a snapshot into one view per runner, sorted by name. Runners
// named before model tags are joined to their instances but never stand
// alone: such a name could be another model's. A tombstone stands alone
// (Retiring) once neither an instance nor the list shows its runner, and
// expires when it is due to be asked about again; past TombstoneLimit it
// is Forced: asked once more, then forgotten.
func Join(s Snapshot, id runner.Identity, t Timeouts) []View {
	runners := make(map[string]*Runner, len(s.Runners))
	for i := range s.Runners {
		runners[s.Runners[i].Name] = &s.Runners[i]
	}
	views := make([]View, 0, len(s.Instances))
	var claimed map[string]*Tombstone // by name, once an instance of the Python charm is seen
	for i := range s.Instances {
		inst := &s.Instances[i]
		r := runners[inst.Name]
		delete(runners, inst.Name)
		if id.FromPythonCharm(inst.Name, inst.Owner) {
			if claimed == nil {
				claimed = make(map[string]*Tombstone, len(s.Tombstones))
				for j := range s.Tombstones {
					claimed[s.Tombstones[j].Name] = &s.Tombstones[j]
				}
			}
			if v, ok := joinPythonCharm(inst, r, claimed[inst.Name], s); ok {
				views = append(views, v)
			}
			continue
		}
		views = append(views, joinInstance(inst, r, s, t))
	}
	// Room for the runners left, only now known: the views outlive the
	// cycle (Outcome.Views, Last).
	views = slices.Grow(views, len(runners))
	for _, r := range runners {
		if id.Generation(r.Name) == runner.Current {
			views = append(views, View{Name: r.Name, State: runner.NoInstance, Runner: r, Scope: s.Scope, Expired: true})
		}
	}
	if len(s.Tombstones) > 0 {
		instances := make(map[string]bool, len(s.Instances))
		for i := range s.Instances {
			instances[s.Instances[i].Name] = true
		}
		for i := range s.Tombstones {
			ts := &s.Tombstones[i]
			_, listed := runners[ts.Name]
			// Its instance's view, or its listed runner's, removes it.
			if !instances[ts.Name] && !(listed && ts.Scope == s.Scope) {
				views = append(views, joinTombstone(ts, s))
			}
		}
	}
	slices.SortFunc(views, func(a, b View) int { return strings.Compare(a.Name, b.Name) })
	return views
}

// joinTombstone is the view of a tombstone that stands alone.
func joinTombstone(ts *Tombstone, s Snapshot) View {
	age := s.Now.Sub(ts.Since)
	asked := s.Seen[ts.Name].Asked
	v := View{Name: ts.Name, State: runner.Retiring, Scope: ts.Scope, Tombstone: ts}
	v.Forced = age >= TombstoneLimit
	v.Expired = v.Forced || asked.IsZero() || s.Now.Sub(asked) >= tombstoneBackoff(age)
	return v
}

// joinPythonCharm is the view of an instance Canonical's Python charm may
// have made for this unit (runner.FromPythonCharm): a name of its shape and
// none of this charm's metadata. Its name carries no model, and the Python
// charm wrote nothing else, so only GitHub can say it is the unit's: it is
// once its runner is listed, by name, in the unit's scope, where only this
// unit's runners of that name register (and, on OpenStack, under the
// runner id its server records, if it does). That first sighting is a
// Claim: the engine keeps a tombstone of the record (Platform.Bury), which
// outlives a restart and the record's going away after its job, so the
// instance is still known to be the unit's then (ts). Any other such
// instance is not the unit's as far as it can tell, and is not shown at
// all: it may be another model's, on the same LXD host or OpenStack
// project, registered elsewhere. A claimed one is retiring: it goes, GitHub
// first, once GitHub does not list it busy (a 422 keeps it: never killed
// mid-job); a stopped one goes at once, its record after it.
func joinPythonCharm(inst *cloud.Instance, r *Runner, ts *Tombstone, s Snapshot) (View, bool) {
	cp := *inst
	v := View{Name: inst.Name, Instance: &cp, Scope: s.Scope, PythonCharm: true}
	switch {
	case ts != nil:
		v.Scope, cp.RunnerID, cp.Scope = ts.Scope, ts.RunnerID, ts.Scope
		if r != nil && (ts.Scope != s.Scope || r.ID != ts.RunnerID) {
			r = nil
		}
	case r != nil && (inst.RunnerID == 0 || r.ID == inst.RunnerID):
		cp.RunnerID, cp.Scope, v.Claim = r.ID, s.Scope, true
	default:
		return View{}, false
	}
	v.Runner = r
	if inst.Status == cloud.Stopped {
		v.State, v.Expired = runner.Stopped, true
		return v, true
	}
	v.State, v.Expired = runner.Retiring, !v.listedBusy()
	return v, true
}

// Registered elsewhere: in a scope this cycle did not list.
func elsewhere(inst *cloud.Instance, s Snapshot) bool {
	return !inst.Scope.IsZero() && inst.Scope != s.Scope
}

func joinInstance(inst *cloud.Instance, r *Runner, s Snapshot, t Timeouts) View {
	v := View{Name: inst.Name, Instance: inst, Runner: r, Scope: s.Scope}
	if elsewhere(inst, s) {
		v.Scope, r, v.Runner = inst.Scope, nil, nil
	}
	seen := s.Seen[inst.Name]
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return 0
		}
		return s.Now.Sub(t)
	}
	youngerThanCreation := s.Now.Sub(inst.CreatedAt) < t.Creation
	v.JobStarted = markedSince(s.Demand.Started, inst.Name, s.Now, t.Unresponsive)
	v.JobEnded = markedSince(s.Demand.Completed, inst.Name, s.Now, t.Offline)
	switch {
	case inst.Status == cloud.Stopped:
		// The one final state: the runner exited, or someone stopped it.
		v.State, v.Expired = runner.Stopped, true
	case inst.Owner.Model == "" && (r == nil || r.ID != inst.RunnerID):
		// Named before model tags and not listed here under the runner id
		// it was made for: it may be another model's, of the same
		// application name on the same cloud, registered elsewhere, where
		// a 404 from this scope proves nothing. Its own manager removes it.
		v.State = runner.Retiring
	case inst.Status == cloud.Unresponsive:
		// It may thaw with its job where it was. GitHub-first removal
		// keeps it while GitHub says it is busy, until the long limit.
		v.State = runner.Unresponsive
		v.Forced = since(seen.Troubled) >= t.Unresponsive
		v.Expired = v.Forced || (!v.listedBusy() && !v.JobStarted && since(seen.Troubled) >= t.Offline)
	case elsewhere(inst, s) || inst.Owner.Model == "":
		// Registered in another scope or named before model tags: not
		// ours to count, ours to remove once GitHub says it is idle or
		// gone (asked in its own scope, so a busy one is kept).
		v.State = runner.Retiring
		v.Forced = elsewhere(inst, s) && since(seen.Troubled) >= t.Unresponsive
		v.Expired = !v.listedBusy() && !v.JobStarted
	case r != nil && r.Busy:
		v.State = runner.Busy
	case r != nil && r.Online:
		v.State = runner.Idle
	case r == nil:
		// Not listed: booting, or gone, or missed by the list. An instance
		// that never registered goes on the creation timeout; any other
		// only once GitHub, asked about its id, says it is gone.
		v.State, v.Expired = runner.Creating, !youngerThanCreation
		if v.Expired {
			v.State = runner.NoRunner
		}
	default: // registered, offline
		v.State, v.Expired = offline(inst, seen, s.Now, t)
	}
	if v.JobStarted && (v.State == runner.Idle || v.State == runner.Creating) {
		// GitHub's list lags behind the job messages: the feed's word
		// closes the moment a scale-down could take it for idle. Only
		// GitHub, asked before any removal, settles the rest.
		v.State = runner.Busy
	}
	return v
}

// offline is the state of a registered runner GitHub shows offline. Its
// offline clock runs from when this process last saw it online, or, if it
// never did, from when it first saw it: a restarted manager gives it the
// full timeout. One this process watched from within its creation window
// that never came online is broken.
func offline(inst *cloud.Instance, seen Sighting, now time.Time, t Timeouts) (runner.State, bool) {
	switch {
	case !seen.LastOnline.IsZero():
		return runner.Offline, now.Sub(seen.LastOnline) >= t.Offline
	case now.Sub(inst.CreatedAt) < t.Creation:
		return runner.Creating, false
	case !seen.First.IsZero() && seen.First.Sub(inst.CreatedAt) < t.Creation:
		return runner.Offline, true // never came online
	default:
		first := seen.First
		if first.IsZero() {
			first = now
		}
		return runner.Offline, now.Sub(first) >= t.Offline
	}
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

// Scale is what a cycle scales to, read once per cycle.
type Scale struct {
	Desired int // runners to keep (Demand.Desired)
	// Max caps the unit's instances, every one the snapshot holds (busy,
	// stopped, retiring: until removed); 0: no cap.
	Max int
	// CoolDown: idle runners above Desired go only once the excess has
	// lasted this long (0: at once), so a burst does not thrash.
	// ExcessSince is when it began (zero: it begins now; the engine keeps
	// it across cycles from Plan.Excess).
	CoolDown    time.Duration
	ExcessSince time.Time
	Now         time.Time
}

// coolDownOver tells whether an idle excess may go now.
func (s Scale) coolDownOver() bool {
	return s.CoolDown <= 0 || (!s.ExcessSince.IsZero() && s.Now.Sub(s.ExcessSince) >= s.CoolDown)
}

// Plan is what a cycle will do.
type Plan struct {
	// Create is the runners to create; Room, how many of them fit under
	// the cap before any of Remove has deleted an instance (each one
	// deleted makes room for one more). Room is less than Create only
	// when the cap binds.
	Create, Room int
	Remove       []Removal
	// Excess is the idle runners above Desired, in Remove once the excess
	// has lasted the cool-down.
	Excess int
}

// Removal is one runner to remove and why.
type Removal struct {
	View
	Reason string // for logs and metrics: a runner.State or "scale-down"/"flush"
	// BusyToo: the operator asked for busy runners to go as well
	// (flush-busy, or the unit is going away).
	BusyToo bool
}

// Decide is the engine's whole policy, a pure function of the views: clean
// up what is broken or orphaned, then scale to the desired count under the
// cap, never touching a runner that may be busy unless mode is FlushAll or
// DrainAll. What it plans to remove may still be kept: Engine.remove asks
// GitHub first (see there).
func Decide(views []View, s Scale, mode Mode) Plan {
	var plan Plan
	healthy, instances, freeing := 0, 0, 0
	idle := make([]*View, 0, len(views)) // pointers: copies of every idle view would cost more than the rest
	for i := range views {
		v := &views[i]
		// Every instance holds a place under the cap, in any state but
		// stopped: a stopped one runs nothing, and goes this cycle, so its
		// replacement need not wait for its deletion (a second of disk).
		holdsPlace := v.Instance != nil && v.State != runner.Stopped
		if holdsPlace {
			instances++
		}
		switch {
		case v.Expired:
			plan.Remove = append(plan.Remove, Removal{*v, string(v.State), mode.busyToo()})
			if v.healthy() {
				healthy++ // may be busy: counted until GitHub says it is gone
			}
			if holdsPlace {
				freeing++
			}
		case mode.busyToo() || (mode != Reconcile && mode != Cleanup && !v.mayBeBusy()):
			// A runner GitHub does not list busy is removed GitHub-first,
			// so one that is busy after all is kept.
			plan.Remove = append(plan.Remove, Removal{*v, "flush", mode.busyToo()})
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
	if excess := healthy - s.Desired; excess > 0 {
		plan.Excess = min(excess, len(idle))
		if plan.Excess == 0 || !s.coolDownOver() {
			return plan
		}
		// Newest idle runners go first: older ones are likelier to be
		// handed the next job GitHub queues.
		sort.Slice(idle, func(i, j int) bool { return idle[i].Instance.CreatedAt.After(idle[j].Instance.CreatedAt) })
		for _, v := range idle[:plan.Excess] {
			plan.Remove = append(plan.Remove, Removal{View: *v, Reason: "scale-down"})
		}
	} else if mode == Reconcile {
		plan.Create, plan.Room = -excess, -excess
		if s.Max > 0 {
			plan.Room = min(plan.Create, max(s.Max-instances, 0))
			plan.Create = min(plan.Create, max(s.Max-instances+freeing, 0))
		}
	}
	return plan
}
