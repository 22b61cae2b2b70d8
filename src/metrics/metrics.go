// Package metrics records what the manager does, two ways: Prometheus
// metrics served on the manager's /metrics, and the JSON-lines events log of
// the Python charm (runner_installed, runner_start, runner_stop,
// reconciliation), so existing Loki dashboards and alerts keep working.
package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/canonical/github-runner-charm/src/logfile"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Metrics is one manager's metrics. Where one means what one of the
// Python charm's means, it has the Python charm's name and its flavor label
// (the application name), so that charm's dashboards keep working; the
// others are github_runner_*. No label names a runner: every label has a
// small fixed set of values (README, Metrics).
type Metrics struct {
	Registry *prometheus.Registry
	flavor   string // the application name, as the Python charm's "flavor"

	expected, idle, busy          prometheus.Gauge
	byState                       *prometheus.GaugeVec
	cycleFailures                 *prometheus.CounterVec
	rateRemaining, rateLimit      prometheus.Gauge
	reconcileDuration             prometheus.Histogram
	created                       prometheus.Counter
	removed, failures             *prometheus.CounterVec
	createdToOnline, onlineToBusy prometheus.Histogram
	assigned, running, desired    prometheus.Gauge
	queuedToAssigned              prometheus.Histogram
	assignedToStarted             prometheus.Histogram
	queuedToStarted, jobDuration  prometheus.Histogram
	imageBuilds                   *prometheus.CounterVec
	imageBuildDuration            prometheus.Histogram

	mu     sync.Mutex
	events io.Writer
	seen   map[string]*stage // per runner, while it exists
	cycles uint64            // ObserveCycle's calls
	// feed: the scale-set feed reports the unit's jobs, so their messages,
	// not the cycles, write runner_start and runner_stop.
	feed bool
	now  func() time.Time
}

// stage is what this process has seen of one runner.
type stage struct {
	online, busy time.Time
	cycle        uint64       // the last cycle that saw it
	state        runner.State // as the last cycle saw it
	// The job messages seen, and the events log lines written, so that
	// each is once whatever comes first or again.
	jobStarted, jobDone       bool
	startWritten, stopWritten bool
}

// stageBuckets span a container's seconds to a slow VM's many minutes.
var stageBuckets = []float64{5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600}

// jobBuckets span a warm runner's fraction of a second to an hour's wait.
var jobBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// jobDurationBuckets are the Python charm's job_duration_seconds buckets:
// a minute to GitHub's five-day limit on a self-hosted runner's job.
var jobDurationBuckets = []float64{60, 300, 600, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800, 345600, 432000}

// imageBuildBuckets span a container image's minute to a VM image's hour.
var imageBuildBuckets = []float64{30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600}

// The label values, each a fixed set, every one exported from the first
// scrape (0 until it happens), so a rate or an alert has its series before
// the first event.
var (
	// States are the runner states github_runner_runners counts.
	States = []runner.State{runner.Creating, runner.Idle, runner.Busy, runner.Offline, runner.Stopped,
		runner.Unresponsive, runner.Retiring, runner.NoRunner, runner.NoInstance}
	// RemovalReasons are deleted_runners_total's reasons: the cleanup
	// rules (a runner's state past its timeout), then scale-down and flush.
	RemovalReasons = []string{string(runner.Creating), string(runner.Offline), string(runner.Stopped), string(runner.Unresponsive),
		string(runner.Retiring), string(runner.NoRunner), string(runner.NoInstance), "scale-down", "flush"}
	// Operations are github_runner_failures_total's operations.
	Operations = []string{"list", "remember", "register", "create", "remove"}
	// CycleFailureReasons are github_runner_reconcile_failures_total's
	// reasons (see ObserveFailedCycle, ObserveCycle).
	CycleFailureReasons = []string{FailedList, FailedImage, FailedOperations}
)

// Why a reconcile cycle failed.
const (
	// FailedList: it could not read the runners' state (GitHub's list or
	// the cloud's), and so changed nothing.
	FailedList = "list"
	// FailedImage: the runner image could not be prepared, so the cycle
	// only cleaned up.
	FailedImage = "image"
	// FailedOperations: the cycle ran, but a create, register or remove
	// failed (github_runner_failures_total says which).
	FailedOperations = "operations"
)

// New returns metrics for flavor (the application name); events, if not
// nil, receives the events log.
func New(flavor string, events io.Writer) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), flavor: flavor, events: events, seen: map[string]*stage{}, now: time.Now}
	// Python names are as the Python charm has them (no namespace) and
	// carry its flavor label.
	python := prometheus.Labels{"flavor": flavor}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "github_runner", Name: name, Help: help})
	}
	pythonGauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: python})
	}
	pythonHistogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: python})
	}
	m.expected = pythonGauge("expected_runners_count", "Runners this unit is configured to keep.")
	m.idle = pythonGauge("idle_runners_count", "Runners online and waiting for a job.")
	m.busy = pythonGauge("busy_runners_count", "Runners running a job.")
	m.byState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "github_runner", Name: "runners",
		Help: "Runners of this unit by state, as the last cycle saw them."}, []string{"state"})
	m.cycleFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "github_runner", Name: "reconcile_failures_total",
		Help: "Reconcile cycles that failed, by reason: list (could not read the runners' state; changed nothing), image (the runner image could not be prepared; created nothing), operations (a create, register or remove failed)."},
		[]string{"reason"})
	m.rateRemaining = prometheus.NewGauge(prometheus.GaugeOpts{Name: "github_api_rate_limit_remaining", Help: "GitHub API requests left in the current rate-limit window."})
	m.rateLimit = prometheus.NewGauge(prometheus.GaugeOpts{Name: "github_api_rate_limit_limit", Help: "GitHub API requests allowed per rate-limit window."})
	m.reconcileDuration = pythonHistogram("reconcile_duration_seconds", "Duration of reconcile cycles.",
		[]float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600})
	m.created = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "github_runner", Name: "created_runners_total", Help: "Runners created."})
	m.removed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deleted_runners_total", ConstLabels: python,
		Help: "Runners removed, by reason: the state a cleanup rule removed them in (creating, offline, stopped, unresponsive, retiring, instance-without-runner, runner-without-instance), scale-down or flush."},
		[]string{"reason"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "github_runner", Name: "failures_total",
		Help: "Failed operations, by operation (list, remember, register, create, remove)."}, []string{"operation"})
	m.createdToOnline = pythonHistogram("runner_spawn_duration_seconds",
		"Time from a runner's instance creation until GitHub showed it online.", stageBuckets)
	m.onlineToBusy = pythonHistogram("runner_idle_duration_seconds", "Time a runner waited online before its job.", stageBuckets)
	m.assigned = gauge("assigned_jobs", "Jobs GitHub has assigned to the unit's scale set, waiting or running (its statistics' totalAssignedJobs).")
	m.running = gauge("running_jobs", "Jobs of the unit's scale set running (its statistics' totalRunningJobs).")
	m.desired = gauge("desired_runners", "Runners the unit wants now: the base plus the jobs assigned to its scale set, up to the cap; without a scale set, the fixed pool.")
	m.queuedToAssigned = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "job_queued_to_assigned_seconds",
		Help: "Time from a job's queueing until GitHub assigned it to the unit's scale set, from the job's messages.", Buckets: jobBuckets})
	m.assignedToStarted = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "job_assigned_to_started_seconds",
		Help: "Time from a job's assignment to the unit's scale set until a runner of it started the job, from the job's messages.", Buckets: jobBuckets})
	m.queuedToStarted = pythonHistogram("runner_queue_duration_seconds",
		"Job start latency: time from a job's queueing until a runner of the unit started it, from the job's messages.", jobBuckets)
	m.jobDuration = pythonHistogram("job_duration_seconds", "Time a job ran on a runner of the unit.", jobDurationBuckets)
	m.imageBuilds = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "github_runner", Name: "image_builds_total",
		Help: "Runner image builds (LXD), by result: success or failure."}, []string{"result"})
	m.imageBuildDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "image_build_duration_seconds",
		Help: "Duration of runner image builds (LXD), successful or not.", Buckets: imageBuildBuckets})
	for _, state := range States {
		m.byState.WithLabelValues(string(state))
	}
	for _, reason := range RemovalReasons {
		m.removed.WithLabelValues(reason)
	}
	for _, op := range Operations {
		m.failures.WithLabelValues(op)
	}
	for _, reason := range CycleFailureReasons {
		m.cycleFailures.WithLabelValues(reason)
	}
	for _, result := range []string{"success", "failure"} {
		m.imageBuilds.WithLabelValues(result)
	}
	m.Registry.MustRegister(m.expected, m.idle, m.busy, m.byState, m.cycleFailures, m.rateRemaining, m.rateLimit, m.reconcileDuration,
		m.created, m.removed, m.failures, m.createdToOnline, m.onlineToBusy,
		m.assigned, m.running, m.desired, m.queuedToAssigned, m.assignedToStarted, m.queuedToStarted, m.jobDuration,
		m.imageBuilds, m.imageBuildDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Sample is one runner as a cycle saw it.
type Sample struct {
	Name      string
	State     runner.State
	CreatedAt time.Time
}

// Cycle is what one reconcile cycle saw and did.
type Cycle struct {
	Duration time.Duration
	Expected int
	Runners  []Sample
	Created  int
	Removed  map[string]int
	Failures map[string]int
	// ImageFailed: the runner image could not be prepared, so the cycle
	// only cleaned up.
	ImageFailed bool
}

// ObserveCycle records a cycle: gauges, counters, stage durations and the
// events log lines.
func (m *Metrics) ObserveCycle(now time.Time, c Cycle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[runner.State]int{}
	m.cycles++
	for _, r := range c.Runners {
		counts[r.State]++
		m.observeStage(now, r)
	}
	for name, s := range m.seen {
		if s.cycle == m.cycles || s.jobStarted && !s.jobDone && now.Sub(s.busy) < jobMemory {
			continue // seen, or its job is running though GitHub's list does not show it
		}
		if !s.busy.IsZero() && !m.feed && !s.stopWritten {
			duration := nonNegative(now.Sub(s.busy))
			m.jobDuration.Observe(duration)
			m.event(now, "runner_stop", map[string]any{"status": stopStatus(s.state), "job_duration": duration})
		}
		delete(m.seen, name)
	}
	m.expected.Set(float64(c.Expected))
	if !m.feed {
		m.desired.Set(float64(c.Expected))
	}
	m.idle.Set(float64(counts[runner.Idle]))
	m.busy.Set(float64(counts[runner.Busy]))
	for _, state := range States {
		m.byState.WithLabelValues(string(state)).Set(float64(counts[state]))
	}
	m.reconcileDuration.Observe(c.Duration.Seconds())
	m.created.Add(float64(c.Created))
	for reason, n := range c.Removed {
		m.removed.WithLabelValues(reason).Add(float64(n))
	}
	operations := false
	for op, n := range c.Failures {
		m.failures.WithLabelValues(op).Add(float64(n))
		operations = operations || op != FailedList && n > 0
	}
	if c.Failures[FailedList] > 0 {
		m.cycleFailures.WithLabelValues(FailedList).Inc() // a drain that went on without GitHub's list
	}
	if operations {
		m.cycleFailures.WithLabelValues(FailedOperations).Inc()
	}
	if c.ImageFailed {
		m.cycleFailures.WithLabelValues(FailedImage).Inc()
	}
	m.event(now, "reconciliation", map[string]any{
		"crashed_runners":  c.Removed[string(runner.Offline)] + c.Removed[string(runner.NoRunner)],
		"idle_runners":     counts[runner.Idle],
		"active_runners":   counts[runner.Busy],
		"expected_runners": c.Expected,
		"duration":         c.Duration.Seconds(),
	})
}

func (m *Metrics) observeStage(now time.Time, r Sample) {
	s, ok := m.seen[r.Name]
	if !ok {
		s = &stage{}
		m.seen[r.Name] = s
	}
	s.cycle, s.state = m.cycles, r.State
	online := r.State == runner.Idle || r.State == runner.Busy
	if online && s.online.IsZero() {
		s.online = now
		installed := nonNegative(now.Sub(r.CreatedAt))
		m.createdToOnline.Observe(installed)
		m.event(now, "runner_installed", map[string]any{"duration": installed})
	}
	if r.State == runner.Busy && s.busy.IsZero() {
		s.busy = now
		idle := nonNegative(now.Sub(s.online))
		m.onlineToBusy.Observe(idle)
		if !m.feed {
			s.startWritten = true
			m.event(now, "runner_start", map[string]any{"idle": idle})
		}
	}
}

// stageOf is what this process has seen of the named runner, made if it
// has seen nothing yet.
func (m *Metrics) stageOf(name string) *stage {
	s, ok := m.seen[name]
	if !ok {
		s = &stage{cycle: m.cycles}
		m.seen[name] = s
	}
	return s
}

// ObserveFailedCycle records a cycle that could not read its snapshot: it
// counts (reason list, and image too if imageFailed), and leaves the
// gauges, the runners' stages and the events log as the last complete
// cycle left them.
func (m *Metrics) ObserveFailedCycle(failures map[string]int, imageFailed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cycleFailures.WithLabelValues(FailedList).Inc()
	if imageFailed {
		m.cycleFailures.WithLabelValues(FailedImage).Inc()
	}
	for op, n := range failures {
		m.failures.WithLabelValues(op).Add(float64(n))
	}
}

// ObserveImageBuild records one runner image build, as long as it took,
// failed if err is not nil.
func (m *Metrics) ObserveImageBuild(d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.imageBuilds.WithLabelValues(result).Inc()
	m.imageBuildDuration.Observe(nonNegative(d))
}

// stopStatus is runner_stop's status for a runner whose job this process
// saw start and whose end it did not see, by the state the last cycle saw
// it in: "abnormal", as the Python charm writes for a runner that did not
// end its job itself, when it was offline, unresponsive or without a
// GitHub runner before it went; "normal" otherwise (an ephemeral runner's
// instance stops itself after its job).
func stopStatus(last runner.State) string {
	switch last {
	case runner.Offline, runner.Unresponsive, runner.NoRunner:
		return "abnormal"
	}
	return "normal"
}

// ObserveRateLimit records GitHub's latest rate-limit budget.
func (m *Metrics) ObserveRateLimit(remaining, limit int) {
	m.rateRemaining.Set(float64(remaining))
	m.rateLimit.Set(float64(limit))
}

func nonNegative(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

// event writes one events-log line, in the Python charm's format.
func (m *Metrics) event(now time.Time, name string, fields map[string]any) {
	if m.events == nil {
		return
	}
	fields["event"] = name
	fields["timestamp"] = float64(now.UnixNano()) / 1e9
	fields["flavor"] = m.flavor
	line, err := json.Marshal(fields)
	if err != nil {
		return
	}
	fmt.Fprintf(m.events, "%s\n", line)
}

// OpenEventsLog opens the events log at path for appending, creating it
// and its directory: a file that rotates itself by size (see logfile), so
// the COS agent, which tails it, never reads a line twice or half a line.
func OpenEventsLog(path string) (io.WriteCloser, error) {
	f, err := logfile.Open(path, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot open events log: %w", err)
	}
	return f, nil
}
