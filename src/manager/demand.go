package manager

import (
	"context"
	"maps"
	"sync"
	"time"
)

// Demand is what the demand feed (the scale-set listener) has said, as a
// cycle reads it, once, into its snapshot.
type Demand struct {
	// Desired is the runners to keep: Target plus the jobs GitHub has
	// assigned, up to Max (Target alone until SetDemand is called).
	Desired int
	// Fed: SetDemand was called, so the unit scales on demand and idle
	// runners above Desired wait out the cool-down (see Settings.CoolDown).
	Fed bool
	// Started and Completed are the runners the feed said took a job, and
	// whose job ended, by name: when it said so.
	Started, Completed map[string]time.Time
}

// markedSince tells whether marks hold name, marked less than limit ago.
func markedSince(marks map[string]time.Time, name string, now time.Time, limit time.Duration) bool {
	at, ok := marks[name]
	return ok && now.Sub(at) < limit
}

// demand is the feed's input. It has a lock of its own, never the
// engine's turn: a cycle takes seconds, and the feed must not wait for one.
type demand struct {
	mu            sync.Mutex
	target, limit int // Settings.Target and Settings.Max
	assigned      int
	fed           bool
	desired       int
	started       map[string]time.Time
	completed     map[string]time.Time
}

func newDemand(s Settings) *demand {
	d := &demand{started: map[string]time.Time{}, completed: map[string]time.Time{}}
	d.set(s)
	return d
}

// desiredOf is ARC's rule: the warm pool stays warm while jobs run, and
// the cap (0: none) bounds the lot.
func desiredOf(target, limit, assigned int) int {
	d := target + max(assigned, 0)
	if limit > 0 {
		d = min(d, limit)
	}
	return d
}

// set takes new settings' target and cap.
func (d *demand) set(s Settings) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.target, d.limit = s.Target, s.Max
	d.desired = desiredOf(d.target, d.limit, d.assigned)
}

// read copies what the feed said, for one snapshot.
func (d *demand) read() Demand {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Demand{Desired: d.desired, Fed: d.fed, Started: maps.Clone(d.started), Completed: maps.Clone(d.completed)}
}

// forget drops the marks, as s read them, of runners s shows neither an
// instance nor a record of: they are gone. A mark made since s was read
// may be of a runner created since, and is kept.
func (d *demand) forget(s Snapshot) {
	if len(s.Demand.Started)+len(s.Demand.Completed) == 0 {
		return
	}
	present := make(map[string]bool, len(s.Instances)+len(s.Runners))
	for i := range s.Instances {
		present[s.Instances[i].Name] = true
	}
	for i := range s.Runners {
		present[s.Runners[i].Name] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, marks := range []struct{ read, live map[string]time.Time }{{s.Demand.Started, d.started}, {s.Demand.Completed, d.completed}} {
		for name, at := range marks.read {
			if !present[name] && marks.live[name].Equal(at) {
				delete(marks.live, name)
			}
		}
	}
}

// SetDemand sets the jobs GitHub has assigned to the unit's runners (the
// scale set's statistics, totalAssignedJobs): from the next cycle on, the
// unit keeps Target runners more than that, up to Max (0: no cap). It
// returns the runners now desired and whether that changed. It never waits
// for a cycle. A classic unit never calls it: its pool stays Target.
func (e *Engine) SetDemand(assigned int) (desired int, changed bool) {
	d := e.demand
	d.mu.Lock()
	defer d.mu.Unlock()
	d.assigned, d.fed = max(assigned, 0), true
	desired = desiredOf(d.target, d.limit, d.assigned)
	changed, d.desired = desired != d.desired, desired
	return desired, changed
}

// Desired is the runners the unit keeps now (see SetDemand).
func (e *Engine) Desired() int {
	e.demand.mu.Lock()
	defer e.demand.mu.Unlock()
	return e.demand.desired
}

// JobStarted says runner name took a job. From now on it counts as busy
// whatever GitHub's list says (the list shows a runner idle for a while
// after GitHub handed it a job): no scale-down or removal of idle runners
// picks it, the one under way included, and the removal rules keep it as
// they keep a busy runner. The mark goes with the runner, or after
// Timeouts.Unresponsive, the longest a runner is kept busy unverified. It
// never waits for a cycle.
func (e *Engine) JobStarted(name string) {
	e.mark(func(d *demand) map[string]time.Time { return d.started }, name)
}

// JobCompleted says runner name's job is over: the ephemeral runner exits
// on its own. It no longer counts towards the desired runners, so its
// replacement is made at once, and it is no idle excess to remove; if it
// has not gone within Timeouts.Offline, it counts as any other again. It
// never waits for a cycle.
func (e *Engine) JobCompleted(name string) {
	e.mark(func(d *demand) map[string]time.Time { return d.completed }, name)
}

func (e *Engine) mark(marks func(*demand) map[string]time.Time, name string) {
	now := e.now()
	e.demand.mu.Lock()
	defer e.demand.mu.Unlock()
	marks(e.demand)[name] = now
}

// tookAJob tells whether the feed has said runner name took a job, as
// JobStarted holds it now (the snapshot's copy may be older).
func (e *Engine) tookAJob(name string) bool {
	now := e.now()
	e.demand.mu.Lock()
	defer e.demand.mu.Unlock()
	return markedSince(e.demand.started, name, now, e.settings.Timeouts.Unresponsive)
}

// room is the cap's free places during one cycle's work: a create takes
// one, each instance a removal deletes gives one back. While removals are
// under way, a create waits for one; once none is left that could free
// one, it gives up (the next cycle tries again).
type room struct {
	free    chan struct{}
	done    chan struct{} // closed once every removal has ended
	mu      sync.Mutex
	pending int
}

func newRoom(free, creates, removals int) *room {
	r := &room{free: make(chan struct{}, creates+removals), done: make(chan struct{}), pending: removals}
	for range min(free, creates) {
		r.free <- struct{}{}
	}
	if removals == 0 {
		close(r.done)
	}
	return r
}

// take waits for a place; false: none came, or stop or ctx ended first.
func (r *room) take(ctx context.Context, stop <-chan struct{}) bool {
	select {
	case <-r.free:
		return true
	case <-r.done:
		select {
		case <-r.free:
			return true
		default:
			return false
		}
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// removed ends one removal; deleted: it deleted an instance.
func (r *room) removed(deleted bool) {
	if deleted {
		select {
		case r.free <- struct{}{}:
		default:
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending--; r.pending == 0 {
		close(r.done)
	}
}
