// Package manager is the reconcile engine: it reads this unit's instances
// and GitHub runners once per cycle, decides with a pure function of that
// snapshot (Decide), then acts with bounded parallelism. It keeps no
// database: a manager restarted at any point converges from the cloud's
// metadata and GitHub's list.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

// ErrBusy is what Platform.Remove returns when GitHub refuses to remove a
// runner because it is running a job.
var ErrBusy = errors.New("the runner is running a job")

// Registration is a runner registered at GitHub, not yet started.
type Registration struct {
	RunnerID  int64
	JITConfig string // secret
}

// Platform is what the engine needs of GitHub.
type Platform interface {
	// Runners lists this unit's runners (those whose names carry the prefix).
	Runners(ctx context.Context) ([]Runner, error)
	// Register creates a runner record and its just-in-time configuration.
	Register(ctx context.Context, name string) (Registration, error)
	// Remove deletes runner id, registered in scope: nil when GitHub says
	// it is gone (also if it already was), ErrBusy when it runs a job. Any
	// other error means GitHub could not say, and the runner is kept. Its
	// nil also forgets the runner's tombstone, if it has one.
	Remove(ctx context.Context, scope runner.Scope, id int64) error
	// Tombstones lists the tombstones kept and not yet forgotten; they
	// survive a restart.
	Tombstones(ctx context.Context) ([]Tombstone, error)
	// Bury keeps a tombstone, durably, before the engine deletes the
	// instance of a runner whose record GitHub has not said is gone.
	Bury(ctx context.Context, t Tombstone) error
	// Forget drops a tombstone without GitHub's word (past TombstoneLimit).
	Forget(ctx context.Context, scope runner.Scope, id int64) error
	// InUse tells, after each snapshot, every scope the unit's instances
	// and tombstones are in: what the platform keeps for any other scope
	// (its credentials) may go.
	InUse(ctx context.Context, scopes []runner.Scope) error
}

// Settings are the engine's knobs.
type Settings struct {
	Identity runner.Identity // whose runners these are
	Scope    runner.Scope    // where new runners register (what Runners lists)
	// Target is the runners to keep: the warm pool a unit keeps idle on
	// top of its demand (SetDemand), or a classic unit's fixed pool.
	Target int
	// Max caps the unit's instances, busy ones included, at every moment;
	// 0: no cap.
	Max int
	// CoolDown: idle runners above the desired count go only once the
	// excess has lasted this long (default 30 s), so a burst does not
	// thrash, once the unit scales on demand: from its first SetDemand,
	// or from the start with OnDemand. A fixed pool's excess is the
	// operator's doing and goes at once.
	CoolDown time.Duration
	// OnDemand: a demand feed (a scale set's listener) will call
	// SetDemand. The cool-down holds from the first cycle, so a restarted
	// manager does not remove the idle runners of a burst before the
	// feed's first word.
	OnDemand bool
	Timeouts Timeouts
	// Parallelism bounds concurrent creates and removes.
	Parallelism int
	// CallTimeout bounds every single cloud or GitHub call.
	CallTimeout time.Duration
	// Environments are the choices of a new runner's own job variables
	// (cloud.CreateRequest.Environment): each new runner gets one, chosen
	// at random, here for every cloud. They are the debug-ssh relation's
	// tmate servers, whose sessions this spreads; none: nothing extra.
	Environments []map[string]string
}

// Outcome is what one cycle did.
type Outcome struct {
	Views    []View // the state the cycle started from
	Desired  int    // the runners it scaled to
	Created  int
	Removed  map[string]int // by reason
	Failures map[string]int // by operation: list, register, create, remove
	// Errors are the failures, for the operator; per-runner failures never
	// stop the rest of the cycle.
	Errors []error
}

// RemovedTotal sums Removed.
func (o Outcome) RemovedTotal() int {
	n := 0
	for _, c := range o.Removed {
		n += c
	}
	return n
}

// Engine runs cycles, one at a time.
type Engine struct {
	cloud    cloud.Cloud
	platform Platform
	log      *slog.Logger
	now      func() time.Time

	// turn is held by the cycle in progress: one at a time. A channel, so
	// that waiting for it honours a context.
	turn     chan struct{}
	settings Settings
	seen     map[string]Sighting // by runner name, while it exists

	lastMu sync.Mutex
	last   []View    // after the last completed cycle: see Last
	lastAt time.Time // when its snapshot was read

	// creating ends with StopCreating.
	creating     context.Context
	stopCreating context.CancelFunc

	demand *demand // the demand feed's input: its own lock
	// excessSince is since when idle runners have been above the desired
	// count (zero: they are not), across cycles; the turn's.
	excessSince time.Time
}

// New returns an engine.
func New(c cloud.Cloud, p Platform, s Settings, log *slog.Logger) *Engine {
	creating, stopCreating := context.WithCancel(context.Background())
	return &Engine{cloud: c, platform: p, settings: withDefaults(s), log: log, now: time.Now, seen: map[string]Sighting{}, turn: make(chan struct{}, 1),
		creating: creating, stopCreating: stopCreating, demand: newDemand(s)}
}

// StopCreating stops creation for good, at once: the cycle in progress
// starts no more creates, and cuts the ones under way short (each undoes
// its registration; an instance a cloud could not undo is listed, and so
// removed, by the next cycle). A drain before the unit stops or changes
// its settings must neither wait for runners it is about to remove nor
// leave them behind.
func (e *Engine) StopCreating() { e.stopCreating() }

// errCreationStopped: a create not made, or cut short, by StopCreating.
var errCreationStopped = errors.New("creation stopped")

// lock waits for the engine's turn, or for ctx to end.
func (e *Engine) lock(ctx context.Context) error {
	select {
	case e.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot read the runners now: a reconcile cycle is in progress (%w)", ctx.Err())
	}
}

func (e *Engine) unlock() { <-e.turn }

// Last is the state after the last completed cycle: the views it started
// from, less the runners it removed, plus the ones it created (creating);
// at is when its snapshot was read, zero before the first. It never waits
// for a cycle, so status and check-runners answer at once.
func (e *Engine) Last() (views []View, at time.Time) {
	e.lastMu.Lock()
	defer e.lastMu.Unlock()
	return e.last, e.lastAt
}

func (e *Engine) setLast(views []View, at time.Time) {
	e.lastMu.Lock()
	defer e.lastMu.Unlock()
	e.last, e.lastAt = views, at
}

func withDefaults(s Settings) Settings {
	if s.Timeouts.Creation == 0 {
		s.Timeouts.Creation = DefaultTimeouts.Creation
	}
	if s.Timeouts.Offline == 0 {
		s.Timeouts.Offline = DefaultTimeouts.Offline
	}
	if s.Timeouts.Unresponsive == 0 {
		s.Timeouts.Unresponsive = DefaultTimeouts.Unresponsive
	}
	if s.Parallelism < 1 {
		s.Parallelism = 4
	}
	if s.CallTimeout == 0 {
		s.CallTimeout = 5 * time.Minute
	}
	if s.CoolDown == 0 {
		s.CoolDown = 30 * time.Second
	}
	return s
}

// WithClock makes the engine read time from now; for tests.
func (e *Engine) WithClock(now func() time.Time) *Engine {
	e.now = now
	return e
}

// Run runs one cycle in mode. A FlushIdle or FlushAll cycle is followed by
// a reconcile from a fresh snapshot, which replaces what the flush removed;
// DrainIdle and DrainAll are not.
// The error is set only when the cycle could not read its snapshot: then it
// changed nothing, since a partial view could delete healthy runners.
func (e *Engine) Run(ctx context.Context, mode Mode) (Outcome, error) {
	if err := e.lock(ctx); err != nil {
		return Outcome{}, err
	}
	defer e.unlock()
	out, err := e.runLocked(ctx, mode)
	if err != nil || !mode.replaces() {
		return out, err
	}
	next, err := e.runLocked(ctx, Reconcile)
	next.Removed = mergeCounts(out.Removed, next.Removed)
	next.Failures = mergeCounts(out.Failures, next.Failures)
	next.Errors = append(out.Errors, next.Errors...)
	next.Views = out.Views
	return next, err
}

func mergeCounts(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range a {
		out[k] += v
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}

// Views reads the current state without acting on it, once no cycle is in
// progress (or ctx ends).
func (e *Engine) Views(ctx context.Context) ([]View, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.unlock()
	snap, _, err := e.snapshot(ctx, false)
	if err != nil {
		return nil, err
	}
	views := Join(snap, e.settings.Identity, e.settings.Timeouts)
	e.setLast(views, snap.Now)
	return views, nil
}

// SetSettings changes the settings from the next cycle on.
func (e *Engine) SetSettings(s Settings) {
	e.lock(context.Background())
	defer e.unlock()
	e.settings = withDefaults(s)
	e.demand.set(s)
}

func (e *Engine) runLocked(ctx context.Context, mode Mode) (Outcome, error) {
	out := Outcome{Removed: map[string]int{}, Failures: map[string]int{}}
	// A drain of every runner deletes every instance whatever GitHub says,
	// so it needs no runners list: a unit going away while GitHub refuses
	// its credentials or is down still leaves no instance behind.
	snap, githubErr, err := e.snapshot(ctx, mode == DrainAll)
	if err != nil {
		out.Failures["list"]++
		return out, err
	}
	if githubErr != nil {
		e.log.Warn("removing every instance without GitHub's runners list", "error", githubErr)
		out.Failures["list"]++
		out.Errors = append(out.Errors, githubErr)
	}
	if err := e.call(ctx, func(ctx context.Context) error { return e.platform.InUse(ctx, scopesInUse(snap)) }); err != nil {
		out.Failures["remember"]++
		out.Errors = append(out.Errors, err)
	}
	out.Views = Join(snap, e.settings.Identity, e.settings.Timeouts)
	e.claim(ctx, out.Views, snap.Now, &out)
	plan := e.decide(out.Views, snap, mode)
	out.Desired = snap.Demand.Desired
	e.log.Info("reconcile plan", "mode", mode, "runners", len(out.Views), "desired", out.Desired, "create", plan.Create, "remove", len(plan.Remove))

	var mu sync.Mutex
	record := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	var removed []string
	var created []View
	noRoom := 0
	// Removals go first into the work: every one has started before any
	// create may wait for the room it frees under the cap.
	room := newRoom(plan.Room, plan.Create, len(plan.Remove))
	work := make([]func(), 0, len(plan.Remove)+plan.Create)
	for _, r := range plan.Remove {
		work = append(work, func() {
			deleted, op, err := e.removeUnlessTaken(ctx, r)
			room.removed(deleted && r.State != runner.Stopped) // a stopped one held no place (Decide)
			record(func() {
				if err != nil {
					out.Failures[op]++
					out.Errors = append(out.Errors, err)
				} else if op == "" {
					out.Removed[r.Reason]++
					removed = append(removed, r.Name)
				}
			})
		})
	}
	for range plan.Create {
		work = append(work, func() {
			if !room.take(ctx, e.creating.Done()) {
				record(func() { noRoom++ }) // the next cycle tries again
				return
			}
			name, op, err := e.create(ctx)
			record(func() {
				if errors.Is(err, errCreationStopped) {
					return // neither made nor failed
				} else if err != nil {
					out.Failures[op]++
					out.Errors = append(out.Errors, err)
				} else {
					out.Created++
					created = append(created, View{Name: name, State: runner.Creating, Scope: e.settings.Scope})
				}
			})
		})
	}
	parallel(work, e.settings.Parallelism)
	if noRoom > 0 && e.creating.Err() == nil && ctx.Err() == nil {
		e.log.Info("the cap leaves no room for more runners until instances are removed", "max", e.settings.Max, "not-created", noRoom)
	}
	for _, r := range plan.Remove {
		if r.Tombstone != nil {
			seen := e.seen[r.Name]
			seen.Asked = snap.Now
			e.seen[r.Name] = seen
		}
	}
	e.setLast(after(out.Views, removed, created), snap.Now)
	return out, nil
}

// claim keeps a tombstone of each Python charm instance's record GitHub
// lists in the unit's scope for the first time (View.Claim), before anything
// is done to it: from then on the instance is known to be the unit's
// without GitHub listing it (after its job, its ephemeral runner's record
// goes; after a restart, the process has seen nothing). The removal that
// confirms the record gone forgets the tombstone (Platform.Remove); one
// that cannot be kept is tried again next cycle, and meanwhile the runner
// is removed only as GitHub lists it, GitHub first.
func (e *Engine) claim(ctx context.Context, views []View, now time.Time, out *Outcome) {
	for _, v := range views {
		if !v.Claim {
			continue
		}
		ts := Tombstone{Scope: v.Scope, RunnerID: v.Instance.RunnerID, Name: v.Name, Since: now}
		if err := e.call(ctx, func(ctx context.Context) error { return e.platform.Bury(ctx, ts) }); err != nil {
			out.Failures["remember"]++
			out.Errors = append(out.Errors, fmt.Errorf("cannot remember the Python charm's runner %s as this unit's: %w", v.Name, err))
			continue
		}
		e.log.Info("taking over a runner of the Python charm: GitHub lists it in this unit's scope", "runner", v.Name, "runner-id", ts.RunnerID, "busy", v.listedBusy())
	}
}

// decide reads the cycle's scale from the snapshot and the cool-down
// clock, decides, and moves the clock: it runs while idle runners have
// been above the desired count in every reconcile since it started.
func (e *Engine) decide(views []View, snap Snapshot, mode Mode) Plan {
	s := Scale{Desired: snap.Demand.Desired, Max: e.settings.Max, Now: snap.Now, ExcessSince: e.excessSince}
	if snap.Demand.Fed || e.settings.OnDemand {
		s.CoolDown = e.settings.CoolDown
	}
	plan := Decide(views, s, mode)
	if mode == Reconcile || mode == Cleanup {
		switch {
		case plan.Excess == 0:
			e.excessSince = time.Time{}
		case e.excessSince.IsZero():
			e.excessSince = snap.Now
		}
	}
	return plan
}

// removeUnlessTaken removes r, unless it goes only for being idle and the
// demand feed has said since the snapshot that it took a job.
func (e *Engine) removeUnlessTaken(ctx context.Context, r Removal) (deleted bool, failedOp string, err error) {
	if !r.BusyToo && (r.Reason == "scale-down" || r.Reason == "flush") && e.tookAJob(r.Name) {
		e.log.Info("runner took a job; keeping it", "runner", r.Name, "reason", r.Reason)
		return false, "kept", nil
	}
	return e.remove(ctx, r)
}

// after is what a cycle that started from views leaves: less what it
// removed, plus what it created, sorted by name.
func after(views []View, removed []string, created []View) []View {
	if len(removed) == 0 && len(created) == 0 {
		return views
	}
	gone := make(map[string]bool, len(removed))
	for _, name := range removed {
		gone[name] = true
	}
	out := make([]View, 0, len(views)+len(created))
	for _, v := range views {
		if !gone[v.Name] {
			out = append(out, v)
		}
	}
	out = append(out, created...)
	slices.SortFunc(out, func(a, b View) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// snapshot reads instances first, then runners: a runner registered after
// the instance list was read can only be ours from a create this process
// is not running, since cycles do not overlap. Its Seen is the engine's
// own map, valid until the cycle ends (cycles hold the lock).
// withoutGitHub: a failed runners list is returned as githubErr, the
// snapshot holding no runners, rather than failing it.
func (e *Engine) snapshot(ctx context.Context, withoutGitHub bool) (s Snapshot, githubErr, err error) {
	callCtx, cancel := context.WithTimeout(ctx, e.settings.CallTimeout)
	instances, err := e.cloud.Instances(callCtx)
	cancel()
	if err != nil {
		return Snapshot{}, nil, fmt.Errorf("cannot list instances: %w", err)
	}
	callCtx, cancel = context.WithTimeout(ctx, e.settings.CallTimeout)
	runners, err := e.platform.Runners(callCtx)
	cancel()
	if err != nil {
		err = fmt.Errorf("cannot list GitHub runners: %w", err)
		if !withoutGitHub {
			return Snapshot{}, nil, err
		}
		githubErr, runners = err, nil
	}
	var tombstones []Tombstone
	if err := e.call(ctx, func(ctx context.Context) (err error) { tombstones, err = e.platform.Tombstones(ctx); return err }); err != nil {
		return Snapshot{}, nil, fmt.Errorf("cannot read the runners left to remove from GitHub: %w", err)
	}
	// The clouds and GitHub filter too; checking names and owners here as
	// well means no bug there can make this unit remove another unit's,
	// or another model's, runners.
	id := e.settings.Identity
	instances = slices.DeleteFunc(instances, func(i cloud.Instance) bool {
		return !id.OwnsInstance(i.Name, i.Owner) && !id.FromPythonCharm(i.Name, i.Owner) // the latter: see joinPythonCharm
	})
	runners = slices.DeleteFunc(runners, func(r Runner) bool { return id.Generation(r.Name) == runner.NotOurs })
	s = Snapshot{Instances: instances, Runners: runners, Now: e.now(), Scope: e.settings.Scope, Seen: e.seen, Tombstones: tombstones,
		Demand: e.demand.read()}
	e.sight(s)
	e.demand.forget(s)
	return s, githubErr, nil
}

// sight records what this snapshot shows of each runner, and forgets the
// runners it no longer shows.
func (e *Engine) sight(s Snapshot) {
	// Sized for one name per runner: an instance and its runner share it.
	present := make(map[string]struct{}, max(len(s.Instances), len(s.Runners)))
	for i := range s.Instances {
		inst := &s.Instances[i]
		present[inst.Name] = struct{}{}
		seen := e.seen[inst.Name]
		if seen.First.IsZero() {
			seen.First = s.Now
		}
		switch troubled := inst.Status == cloud.Unresponsive || elsewhere(inst, s); {
		case !troubled:
			seen.Troubled = time.Time{}
		case seen.Troubled.IsZero():
			seen.Troubled = s.Now
		}
		e.seen[inst.Name] = seen
	}
	for i := range s.Tombstones {
		present[s.Tombstones[i].Name] = struct{}{} // its Asked
	}
	for i := range s.Runners {
		r := &s.Runners[i]
		present[r.Name] = struct{}{}
		seen := e.seen[r.Name]
		if seen.First.IsZero() {
			seen.First = s.Now
		}
		if r.Online {
			seen.LastOnline = s.Now
		}
		e.seen[r.Name] = seen
	}
	if len(present) < len(e.seen) {
		for name := range e.seen {
			if _, ok := present[name]; !ok {
				delete(e.seen, name)
			}
		}
	}
}

// scopesInUse is every scope a snapshot's instances and tombstones are
// in, today's first.
func scopesInUse(s Snapshot) []runner.Scope {
	scopes := []runner.Scope{s.Scope}
	add := func(scope runner.Scope) {
		if !scope.IsZero() && !slices.Contains(scopes, scope) {
			scopes = append(scopes, scope)
		}
	}
	for i := range s.Instances {
		add(s.Instances[i].Scope)
	}
	for i := range s.Tombstones {
		add(s.Tombstones[i].Scope)
	}
	return scopes
}

func (e *Engine) call(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.settings.CallTimeout)
	defer cancel()
	return f(ctx)
}

// create registers a runner, then starts its instance; if the instance
// fails, the registration is undone, so nothing leaks (LXD's revert pattern).
func (e *Engine) create(cycle context.Context) (name, failedOp string, err error) {
	name = e.settings.Identity.NewName()
	if e.creating.Err() != nil {
		return name, "", errCreationStopped
	}
	ctx, cancel := context.WithCancel(cycle)
	defer cancel()
	defer context.AfterFunc(e.creating, cancel)()
	var reg Registration
	err = e.call(ctx, func(ctx context.Context) (err error) {
		reg, err = e.platform.Register(ctx, name)
		return err
	})
	if err != nil && e.creating.Err() != nil {
		// A registration the answer to which was cut off is a runner
		// without an instance: the next cycle removes it.
		return name, "", errCreationStopped
	}
	if err != nil {
		e.log.Warn("cannot register runner", "runner", name, "error", err)
		return name, "register", fmt.Errorf("cannot register runner %s: %w", name, err)
	}
	err = e.call(ctx, func(ctx context.Context) error {
		return e.cloud.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: reg.RunnerID, Scope: e.settings.Scope, JITConfig: reg.JITConfig,
			Environment: e.environment()})
	})
	if err == nil {
		e.log.Info("runner created", "runner", name, "runner-id", reg.RunnerID)
		return name, "", nil
	}
	stopped := e.creating.Err() != nil
	if stopped {
		e.log.Info("creation stopped; removing the runner registration", "runner", name)
	} else {
		e.log.Warn("cannot create instance; removing its runner registration", "runner", name, "error", err)
	}
	// The undo has the cycle's context: StopCreating cut the create, not it.
	if rerr := e.call(cycle, func(ctx context.Context) error { return e.platform.Remove(ctx, e.settings.Scope, reg.RunnerID) }); rerr != nil {
		// Left for the next cycle's cleanup of runners without instances.
		e.log.Warn("cannot remove runner registration", "runner", name, "error", rerr)
	}
	if stopped {
		return name, "", errCreationStopped
	}
	return name, "create", fmt.Errorf("cannot create instance %s: %w", name, err)
}

// environment is a new runner's own variables: one of the choices, at
// random (none: nil).
func (e *Engine) environment() map[string]string {
	choices := e.settings.Environments
	if len(choices) == 0 {
		return nil
	}
	return maps.Clone(choices[rand.IntN(len(choices))])
}

// remove removes one runner. GitHub goes first: the instance is deleted
// only once GitHub, asked about the runner's id in the scope it was
// registered in, says it is gone or has let it go, so a runner missing from
// a list, or one that has just taken a job (ErrBusy), keeps its instance;
// when GitHub cannot say, it is kept for the next cycle. Only an instance
// that never registered has no one to ask. Stopped instances, busy runners
// being flushed and ones past the long limit go the other way: the job is
// over or meant to end. An instance that goes before GitHub said its record
// is gone leaves a tombstone, kept just before it is deleted, so the record
// is asked about every cycle, whatever scope the unit moves to, until
// GitHub says it is gone (see removeTombstone).
// op is "" when the runner was removed or deliberately kept.
func (e *Engine) remove(ctx context.Context, r Removal) (deleted bool, failedOp string, err error) {
	if r.Tombstone != nil {
		failedOp, err = e.removeTombstone(ctx, r)
		return false, failedOp, err
	}
	instanceFirst := r.State == runner.Stopped || r.Forced || (r.BusyToo && (r.State == runner.Busy || r.listedBusy()))
	id := r.runnerID()
	var githubErr error
	if instanceFirst && r.Instance != nil {
		if op, err := e.deleteInstance(ctx, r, id); err != nil {
			return false, op, err
		}
		deleted = true
	}
	confirmed := id == 0
	if id != 0 {
		err := e.call(ctx, func(ctx context.Context) error { return e.platform.Remove(ctx, r.Scope, id) })
		switch {
		case err == nil:
			confirmed = true
		case errors.Is(err, ErrBusy) && !instanceFirst && !r.BusyToo:
			e.log.Info("runner is running a job; keeping it", "runner", r.Name, "reason", r.Reason)
			return false, "kept", nil
		case errors.Is(err, ErrBusy):
			// Its instance is gone or going; GitHub lets go once the job
			// fails, and a later cycle removes the record (its tombstone).
			e.log.Info("runner record still busy at GitHub; removing it later", "runner", r.Name)
		case err != nil && !instanceFirst && r.Instance != nil && !r.BusyToo:
			return false, "remove", fmt.Errorf("cannot remove runner %s from GitHub, so its instance is kept: %w", r.Name, err)
		case err != nil:
			// Asked to remove busy runners too (flush-busy, the unit going
			// away), the instance goes whatever GitHub said; its tombstone
			// has a later cycle remove the record.
			githubErr = fmt.Errorf("cannot remove runner %s from GitHub: %w", r.Name, err)
		}
	}
	if !instanceFirst && r.Instance != nil {
		unconfirmed := id
		if confirmed {
			unconfirmed = 0
		}
		if op, err := e.deleteInstance(ctx, r, unconfirmed); err != nil {
			return deleted, op, err
		}
		deleted = true
	}
	if githubErr != nil {
		return deleted, "remove", githubErr
	}
	e.log.Info("runner removed", "runner", r.Name, "reason", r.Reason)
	return deleted, "", nil
}

// removeTombstone asks GitHub once more about a record whose instance is
// gone: nil (gone, or removed now) forgets the tombstone, busy keeps it,
// and past TombstoneLimit (Forced) it is forgotten whatever GitHub said.
func (e *Engine) removeTombstone(ctx context.Context, r Removal) (failedOp string, err error) {
	ts := r.Tombstone
	err = e.call(ctx, func(ctx context.Context) error { return e.platform.Remove(ctx, ts.Scope, ts.RunnerID) })
	switch {
	case err == nil:
		e.log.Info("runner removed", "runner", r.Name, "reason", r.Reason, "scope", ts.Scope.String())
		return "", nil
	case r.Forced:
		e.log.Warn("forgetting the GitHub record of a runner whose instance is gone: GitHub did not say it is gone within the limit",
			"runner", r.Name, "runner-id", ts.RunnerID, "scope", ts.Scope.String(), "limit", TombstoneLimit, "error", err)
		if err := e.call(ctx, func(ctx context.Context) error { return e.platform.Forget(ctx, ts.Scope, ts.RunnerID) }); err != nil {
			return "remember", fmt.Errorf("cannot forget runner %s's tombstone: %w", r.Name, err)
		}
		return "forgotten", nil
	case errors.Is(err, ErrBusy):
		e.log.Info("runner record still busy at GitHub; removing it later", "runner", r.Name, "scope", ts.Scope.String())
		return "kept", nil
	default:
		return "remove", fmt.Errorf("cannot remove runner %s from GitHub (its instance is gone; asked again later): %w", r.Name, err)
	}
}

// deleteInstance deletes a runner's instance. When unconfirmed is the id
// of a GitHub record not known to be gone, a tombstone is kept first: if
// it cannot be, the instance is kept (a later cycle tries again), unless
// busy runners go too (nothing outlives the unit).
func (e *Engine) deleteInstance(ctx context.Context, r Removal, unconfirmed int64) (failedOp string, err error) {
	if unconfirmed != 0 {
		ts := Tombstone{Scope: r.Scope, RunnerID: unconfirmed, Name: r.Name, Since: e.now()}
		err := e.call(ctx, func(ctx context.Context) error { return e.platform.Bury(ctx, ts) })
		switch {
		case err != nil && !r.BusyToo:
			return "remember", fmt.Errorf("cannot keep the tombstone of runner %s, so its instance is kept: %w", r.Name, err)
		case err != nil:
			e.log.Warn("cannot keep the tombstone of a runner whose instance goes now", "runner", r.Name, "error", err)
		}
	}
	if err := e.call(ctx, func(ctx context.Context) error { return e.cloud.Delete(ctx, r.Name) }); err != nil {
		return "remove", fmt.Errorf("cannot delete instance %s: %w", r.Name, err)
	}
	return "", nil
}

// parallel runs work with at most n at a time.
func parallel(work []func(), n int) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, w := range work {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w()
		}()
	}
	wg.Wait()
}
