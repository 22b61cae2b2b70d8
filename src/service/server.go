package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// Server runs the engine every interval, when woken (a runner finished,
// demand changed) and on demand, and answers the charm on the unit's
// socket.
type Server struct {
	Engine   *manager.Engine
	Expected int
	Interval time.Duration
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	// Explain turns an error into the sentence the operator reads in
	// `juju status` (e.g. github.OperatorMessage); nil means err.Error().
	Explain func(error) string
	// RateLimit returns GitHub's latest budget, for the metrics.
	RateLimit func() (remaining, limit int, ok bool)
	// UpdateDependencies checks for a newer runner application.
	UpdateDependencies func(context.Context) (api.UpdateResult, error)
	// Prepare, if set, runs before every cycle that may create (the runner
	// image), within imageBuildTimeout of its own; its failure is
	// reported, and the cycle still cleans up. When it reports a change (a
	// new runner version), idle runners are replaced.
	Prepare func(context.Context) (changed bool, err error)
	// PrepareWoken, if set, is Prepare for the cycles a Wake asks for
	// (e.g. one that reuses a recent Prepare); every other cycle, on the
	// interval or for an action, runs Prepare.
	PrepareWoken func(context.Context) (changed bool, err error)
	// Teardown, if set, removes what the cloud holds for the deployment
	// besides its runners (image, profile, ACL, security group): the unit
	// is going away. POST /teardown runs it once no instance is left.
	Teardown func(context.Context) error
	// DemandProblem, on a scale set's unit, is what keeps its demand feed
	// from working, in words ("" when nothing does): reported beside the
	// cycles' problem. OnDemand and Max say the unit scales on demand, up
	// to Max runners (0: no cap).
	DemandProblem func() string
	// DemandBlocks tells whether DemandProblem's problem needs the
	// operator (a GitHub without scale sets); nil: never.
	DemandBlocks func() bool
	OnDemand     bool
	Max          int
	// MetricsProblem is why the metrics' TCP endpoint does not serve, in
	// words ("" when it does), reported beside the cycles' problem.
	MetricsProblem func() string
	// PrepareProgress, if set, is what the Prepare in progress is doing, in
	// words ("" when it cannot tell): the report shows it beside
	// PreparingSince (cloud.ProgressReporter).
	PrepareProgress func() string
	// Note, if set, is the cloud's note (cloud.Noter), in the report.
	Note func() string

	mu       sync.Mutex
	problem  problem
	stopping context.Context // Run's: ends when the service is asked to stop
	// preparingSince is when the Prepare in progress started; zero when
	// none is.
	preparingSince time.Time
	// drainSignal ends at the first drain: it cuts an image build short,
	// and no build starts after it.
	drainSignal context.Context
	signalDrain context.CancelFunc

	// building is held by the image build in progress (see build), so a
	// teardown waits for a build cut short to end before it removes the
	// image.
	building sync.Mutex

	// wake holds a pending Wake (see wakes).
	wakeOnce sync.Once
	wake     chan struct{}

	// loop orders the periodic cycles with drains: see cycle.
	loop sync.Mutex
	// drained: a drain was asked for. The charm drains just before it stops
	// this process (settings change, or the unit goes away), so from then
	// on the periodic cycles create nothing: a reconcile between the drain
	// and the stop would make runners, with the old settings, that the
	// stop then leaves behind.
	drained bool
	// tornDown: the cloud's teardown ran; no cycle but a drain runs after it.
	tornDown bool
}

// errTornDown answers a cycle asked for after the teardown.
var errTornDown = errors.New("cannot run a cycle: this unit's cloud resources were torn down (the unit is being removed)")

// problem is what stops the manager from doing its work, in words.
type problem struct {
	text string
	// blocks: the operator must act (credentials, permissions, path);
	// otherwise time or a retry should clear it.
	blocks bool
}

// Run runs a reconcile at once, then every Interval after the last cycle,
// and soon after each Wake, until ctx ends. A cycle in progress when ctx
// ends is finished first, within its own bounds, but for its image
// preparation, which is cut short: a build can be redone, and the stop that
// ended ctx must not wait minutes for one.
func (s *Server) Run(ctx context.Context) {
	s.mu.Lock()
	s.stopping = ctx
	s.mu.Unlock()
	wake := s.wakes()
	woken := false
	for {
		// A cycle serves every wake before it starts; a wake during it
		// asks for the next.
		select {
		case <-wake:
		default:
		}
		started := time.Now()
		if woken {
			s.wokenCycle()
		} else {
			s.periodic()
		}
		woken = false
		interval := time.NewTimer(s.Interval)
		select {
		case <-ctx.Done():
			interval.Stop()
			return
		case <-interval.C:
		case <-wake:
			interval.Stop()
			woken = true
			// Wakes that come together (ten runners ending their jobs
			// at once) share a cycle: see wakeSpacing.
			spacing := time.NewTimer(wakeSpacing - time.Since(started))
			select {
			case <-ctx.Done():
				spacing.Stop()
				return
			case <-spacing.C:
			}
		}
	}
}

// wakeSpacing is the least time from the start of one cycle to the start
// of one a Wake asks for. The first wake after a quiet spell is served at
// once (a lone finished runner's replacement waits for nothing: delaying
// every wake by a debounce would be the whole of the replacement latency's
// budget), and wakes arriving in a burst, or during a cycle, coalesce into
// one more cycle. So ten runners ending together cost at most two cycles,
// and a stream of wakes at most one cycle per spacing, each a GitHub list:
// a cycle that creates takes longer than this anyway.
const wakeSpacing = 500 * time.Millisecond

// Wake asks the loop for a reconcile as soon as the cycle in progress, if
// any, ends (see Run and wakeSpacing). It never blocks: wakes before the
// next cycle starts are all served by it.
func (s *Server) Wake() {
	select {
	case s.wakes() <- struct{}{}:
	default: // a wake is pending already
	}
}

// wakes is the pending-wake channel, of capacity one, made on first use
// (the Server is a struct literal).
func (s *Server) wakes() chan struct{} {
	s.wakeOnce.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

// periodic runs the loop's cycle: a reconcile, or a cleanup once drained
// (see cycle).
func (s *Server) periodic() { s.cycle(manager.Reconcile) }

// withoutCreates is the mode that does mode's removals but creates nothing.
func withoutCreates(mode manager.Mode) manager.Mode {
	switch mode {
	case manager.Reconcile:
		return manager.Cleanup
	case manager.FlushIdle:
		return manager.DrainIdle
	case manager.FlushAll:
		return manager.DrainAll
	}
	return mode
}

// cycleTimeout bounds a whole cycle, so a wedged call can never hold up
// the next one (the engine also bounds every single call). The image
// preparation before it has its own bound, imageBuildTimeout.
const cycleTimeout = 15 * time.Minute

// imageBuildTimeout bounds preparing the runner image: building a virtual
// machine image can take 30 minutes.
const imageBuildTimeout = 45 * time.Minute

// prepareNotice is how long a Prepare runs before the report shows it:
// one that finds nothing changed takes well under it.
const prepareNotice = 2 * time.Second

// errPrepareCutShort: a drain or the service's stop ended the Prepare.
var errPrepareCutShort = errors.New("the runner image preparation was cut short")

// cycle runs one cycle under its own context: a caller that stops waiting
// (an action timing out, SIGTERM) does not cut a create in half.
func (s *Server) cycle(mode manager.Mode) (manager.Outcome, error) {
	return s.cycleWith(mode, s.Prepare)
}

// wokenCycle is the reconcile a Wake asked for: it prepares with
// PrepareWoken, if set, since such cycles come seconds apart and a
// replacement or a cold job start should not wait for an image check that
// the cycle before made.
func (s *Server) wokenCycle() (manager.Outcome, error) {
	prepare := s.Prepare
	if s.PrepareWoken != nil && prepare != nil {
		prepare = s.PrepareWoken
	}
	return s.cycleWith(manager.Reconcile, prepare)
}

func (s *Server) cycleWith(mode manager.Mode, prepare func(context.Context) (bool, error)) (manager.Outcome, error) {
	start := time.Now()
	s.Log.Debug("reconcile cycle starting", "mode", mode)
	var prepareErr error
	if s.drainSignalled() {
		mode = withoutCreates(mode) // and so no image is prepared
	}
	// A drain creates nothing, so it needs no image: it never waits for a
	// build (which can take many minutes) before removing runners.
	if prepare != nil && withoutCreates(mode) != mode {
		var changed bool
		changed, prepareErr = s.prepare(prepare)
		switch {
		case prepareErr != nil:
			// Creates would fail one by one (and register GitHub runners
			// only to remove them); clean up, create nothing.
			mode = withoutCreates(mode)
		case changed && mode == manager.Reconcile:
			s.Log.Info("the runner image changed; replacing idle runners")
			mode = manager.FlushIdle
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cycleTimeout)
	defer cancel()
	// loop is held from the drained check to the cycle's end, so a drain
	// (which sets drained under loop) runs after any cycle that may still
	// create, and every cycle after it creates nothing.
	s.loop.Lock()
	if s.tornDown && mode != manager.DrainIdle && mode != manager.DrainAll {
		s.loop.Unlock()
		return manager.Outcome{}, errTornDown // a drain again (a retried stop) is harmless
	}
	if s.drained {
		mode = withoutCreates(mode)
	}
	out, err := s.Engine.Run(ctx, mode)
	s.loop.Unlock()
	if err != nil {
		// A cycle that could not read its snapshot saw nothing: the gauges
		// and the events log keep the last cycle's truth.
		s.observeFailure(out, prepareErr)
	} else {
		s.observe(start, out, prepareErr)
	}
	switch {
	case errors.Is(prepareErr, errPrepareCutShort):
		// The unit is draining or stopping: no image is wanted.
	case prepareErr != nil:
		s.setProblem(prepareErr)
		s.Log.Warn("cannot prepare the runner image", "error", s.explain(prepareErr))
	case err != nil:
		s.setProblem(err)
		s.Log.Warn("reconcile cycle could not read the runners' state", "error", s.explain(err))
	case len(out.Errors) > 0:
		s.setProblem(out.Errors[0])
	default:
		s.setProblem(nil)
	}
	s.Log.Info("reconcile cycle done", "mode", mode, "created", out.Created, "removed", out.RemovedTotal(),
		"failures", len(out.Errors), "duration", time.Since(start).Round(time.Millisecond))
	return out, err
}

// prepare runs a Prepare as an image build (see build).
func (s *Server) prepare(prepare func(context.Context) (bool, error)) (changed bool, err error) {
	err = s.build(func(ctx context.Context) error {
		changed, err = prepare(ctx)
		return err
	})
	return changed, err
}

// build runs an image preparation, the cycle's or update-dependencies',
// one at a time within imageBuildTimeout (apart from the cycle's bound and
// from whoever waits for it), cut short by a drain or the service's stop.
// The report shows it while it runs (see runners).
func (s *Server) build(prepare func(context.Context) error) error {
	s.building.Lock()
	defer s.building.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), imageBuildTimeout)
	defer cancel()
	s.mu.Lock()
	drain, stopping := s.drainSignalLocked(), s.stopping
	if stopping == nil {
		stopping = context.Background()
	}
	if drain.Err() != nil || stopping.Err() != nil {
		s.mu.Unlock()
		return errPrepareCutShort
	}
	defer context.AfterFunc(stopping, cancel)()
	defer context.AfterFunc(drain, cancel)()
	s.preparingSince = time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.preparingSince = time.Time{}
		s.mu.Unlock()
	}()
	err := prepare(ctx)
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return errPrepareCutShort
	}
	return err
}

// updateDependencies runs the update-dependencies action as an image build:
// the action may stop waiting (its own timeout), the build goes on.
func (s *Server) updateDependencies(w http.ResponseWriter, r *http.Request) {
	if s.UpdateDependencies == nil {
		writeError(w, errors.New("this cloud's runner image is not managed by the charm"), nil)
		return
	}
	var result api.UpdateResult
	done := make(chan error, 1)
	go func() {
		done <- s.build(func(ctx context.Context) (err error) {
			result, err = s.UpdateDependencies(ctx)
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			writeError(w, err, s.explain)
			return
		}
		writeJSON(w, http.StatusOK, result)
	case <-r.Context().Done():
	}
}

// drainSignalLocked is drainSignal, made on first use; s.mu is held.
func (s *Server) drainSignalLocked() context.Context {
	if s.drainSignal == nil {
		s.drainSignal, s.signalDrain = context.WithCancel(context.Background())
	}
	return s.drainSignal
}

func (s *Server) drainSignalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainSignalLocked().Err() != nil
}

// markDrained stops creation for good: an image build in progress is cut
// short at once, and so are the creates of the cycle in progress; every
// cycle from then on creates nothing.
func (s *Server) markDrained() {
	s.mu.Lock()
	s.drainSignalLocked()
	s.signalDrain()
	s.mu.Unlock()
	// The cycle in progress starts no more creates and cuts short the ones
	// under way, so the drain, which waits for it, does not wait for runners
	// it is about to remove.
	s.Engine.StopCreating()
	s.loop.Lock()
	s.drained = true
	s.loop.Unlock()
}

// imageFailed tells a Prepare's error that is a failure, not a drain or
// a stop cutting it short.
func imageFailed(prepareErr error) bool {
	return prepareErr != nil && !errors.Is(prepareErr, errPrepareCutShort)
}

func (s *Server) observe(start time.Time, out manager.Outcome, prepareErr error) {
	if s.Metrics == nil {
		return
	}
	samples := make([]metrics.Sample, 0, len(out.Views))
	for _, v := range out.Views {
		sample := metrics.Sample{Name: v.Name, State: v.State}
		if v.Instance != nil {
			sample.CreatedAt = v.Instance.CreatedAt
		}
		samples = append(samples, sample)
	}
	s.Metrics.ObserveCycle(time.Now(), metrics.Cycle{
		Duration: time.Since(start), Expected: s.Expected, Runners: samples,
		Created: out.Created, Removed: out.Removed, Failures: out.Failures, ImageFailed: imageFailed(prepareErr),
	})
	if s.RateLimit != nil {
		if remaining, limit, ok := s.RateLimit(); ok {
			s.Metrics.ObserveRateLimit(remaining, limit)
		}
	}
}

func (s *Server) observeFailure(out manager.Outcome, prepareErr error) {
	if s.Metrics != nil {
		s.Metrics.ObserveFailedCycle(out.Failures, imageFailed(prepareErr))
	}
}

func (s *Server) explain(err error) string {
	if s.Explain != nil {
		return s.Explain(err)
	}
	return err.Error()
}

func (s *Server) setProblem(err error) {
	p := problem{}
	if err != nil {
		p = problem{text: s.explain(err), blocks: blocksOperator(err)}
	}
	s.mu.Lock()
	s.problem = p
	s.mu.Unlock()
}

func (s *Server) currentProblem() problem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.problem
}

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+api.PathRunners, s.runners)
	mux.HandleFunc("POST "+api.PathReconcile, func(w http.ResponseWriter, r *http.Request) {
		out, err := s.cycle(manager.Reconcile)
		if err != nil {
			writeError(w, err, s.explain)
			return
		}
		writeJSON(w, http.StatusOK, api.ReconcileResult{Delta: out.Created - out.RemovedTotal()})
	})
	mux.HandleFunc("POST "+api.PathFlush, s.flush)
	mux.HandleFunc("POST "+api.PathTeardown, s.teardown)
	mux.HandleFunc("POST "+api.PathUpdateDependencies, s.updateDependencies)
	if s.Metrics != nil {
		mux.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// firstLook bounds the live look /runners takes before any cycle has
// completed; once one has, it answers from that cycle's view at once.
const firstLook = 3 * time.Second

// runners reports the state after the last completed cycle, never waiting
// for one in progress: status and check-runners are hooks and actions that
// must answer in milliseconds, and cost no GitHub request.
func (s *Server) runners(w http.ResponseWriter, r *http.Request) {
	views, at := s.Engine.Last()
	if at.IsZero() {
		ctx, cancel := context.WithTimeout(r.Context(), firstLook)
		defer cancel()
		var err error
		views, err = s.Engine.Views(ctx)
		switch {
		case err == nil:
			_, at = s.Engine.Last()
		case ctx.Err() == nil:
			writeJSON(w, http.StatusOK, api.RunnersReport{Expected: s.Expected, Problem: s.explain(err), Blocking: blocksOperator(err)})
			return
		}
		// Otherwise the first cycle is still running: no view yet (AsOf zero).
	}
	report := Report(views, s.Expected)
	report.AsOf = at
	p := s.currentProblem()
	report.Problem, report.Blocking = p.text, p.blocks
	s.reportDemand(&report)
	if s.MetricsProblem != nil {
		withProblem(&report, s.MetricsProblem())
	}
	if s.Note != nil {
		report.Note = s.Note()
	}
	s.mu.Lock()
	if since := s.preparingSince; !since.IsZero() && time.Since(since) >= prepareNotice {
		report.PreparingSince = since
		if s.PrepareProgress != nil {
			report.Preparing = s.PrepareProgress()
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, report)
}

// reportDemand adds a scale set's unit's demand, and its feed's problem,
// to the report.
func (s *Server) reportDemand(report *api.RunnersReport) {
	if s.OnDemand {
		report.OnDemand, report.Max, report.Desired = true, s.Max, s.Engine.Desired()
	}
	if s.DemandProblem == nil {
		return
	}
	// A create that failed for the same reason says it already.
	switch p := s.DemandProblem(); {
	case p == "" || strings.Contains(report.Problem, p):
	case report.Problem == "":
		report.Problem = p
	default:
		report.Problem += "; " + p
	}
	if s.DemandBlocks != nil && s.DemandBlocks() {
		report.Blocking = true
	}
}

func (s *Server) flush(w http.ResponseWriter, r *http.Request) {
	busy, err := boolQuery(r, "busy", false)
	if err == nil {
		var replace bool
		if replace, err = boolQuery(r, "replace", true); err == nil {
			mode := map[[2]bool]manager.Mode{
				{false, true}: manager.FlushIdle, {true, true}: manager.FlushAll,
				{false, false}: manager.DrainIdle, {true, false}: manager.DrainAll,
			}[[2]bool{busy, replace}]
			if !replace {
				s.markDrained() // even if the drain fails: the stop comes anyway
			}
			out, err := s.cycle(mode)
			if err != nil {
				writeError(w, err, s.explain)
				return
			}
			writeJSON(w, http.StatusOK, api.FlushResult{Removed: out.Removed["flush"]})
			return
		}
	}
	writeJSON(w, http.StatusBadRequest, api.ErrorBody{Error: err.Error()})
}

// teardownTimeout bounds the teardown: the look for instances left (after
// any cycle in progress) and the cloud's own teardown.
const teardownTimeout = 5 * time.Minute

// teardown runs the cloud's Teardown for a unit going away, once no
// instance of the unit is left (the charm drains first): it refuses while
// any is, since they may still use the image or the rules. Creation stops
// for good first, and an image build cut short ends before the teardown.
func (s *Server) teardown(w http.ResponseWriter, r *http.Request) {
	s.markDrained()
	s.building.Lock()
	defer s.building.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), teardownTimeout)
	defer cancel()
	views, err := s.Engine.Views(ctx)
	if err != nil {
		writeError(w, err, s.explain)
		return
	}
	left := 0
	for _, v := range views {
		if v.Instance != nil {
			left++
		}
	}
	if left > 0 {
		writeJSON(w, http.StatusConflict, api.ErrorBody{Error: fmt.Sprintf("cannot tear down the cloud's resources: %d instances of this unit are left", left)})
		return
	}
	s.loop.Lock()
	s.tornDown = true
	s.loop.Unlock()
	if s.Teardown != nil {
		if err := s.Teardown(ctx); err != nil {
			writeError(w, err, s.explain)
			return
		}
	}
	writeJSON(w, http.StatusOK, api.TeardownResult{})
}

func boolQuery(r *http.Request, key string, fallback bool) (bool, error) {
	switch v := r.URL.Query().Get(key); v {
	case "":
		return fallback, nil
	case "true", "false":
		return v == "true", nil
	default:
		return false, fmt.Errorf("%s must be true or false, not %q", key, v)
	}
}

// Report is what check-runners shows of a set of views.
func Report(views []manager.View, expected int) api.RunnersReport {
	r := api.RunnersReport{Expected: expected, Runners: make([]api.RunnerInfo, 0, len(views))}
	for _, v := range views {
		switch v.State {
		case runner.Idle:
			r.Online++
		case runner.Busy:
			r.Online++
			r.Busy++
		case runner.Offline:
			r.Offline++
		default:
			r.Unknown++
		}
		if v.PythonCharm {
			r.PythonCharm++
			if v.Runner != nil && v.Runner.Busy {
				r.PythonCharmBusy++
			}
		}
		r.Runners = append(r.Runners, api.RunnerInfo{Name: v.Name, State: string(v.State)})
	}
	return r
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, err error, explain func(error) string) {
	msg := err.Error()
	if explain != nil {
		msg = explain(err)
	}
	writeJSON(w, http.StatusServiceUnavailable, api.ErrorBody{Error: msg})
}

// Listen opens the unix socket at path, readable and writable by root only:
// whoever can reach it can flush runners. A stale socket from a killed
// process is replaced.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cannot remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("cannot restrict %s: %w", path, err)
	}
	return l, nil
}
