// Package metrics records what the manager does, two ways: Prometheus
// metrics served on the manager's /metrics, and the JSON-lines events log of
// the Python charm (runner_installed, runner_start, runner_stop,
// reconciliation), so existing Loki dashboards and alerts keep working.
package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/canonical/github-runner-charm/src/runner"
)

// Metrics is one manager's metrics.
type Metrics struct {
	Registry *prometheus.Registry
	flavor   string // the application name, as the Python charm's "flavor"

	expected, idle, busy, offline prometheus.Gauge
	unresponsive, retiring        prometheus.Gauge
	failedCycles                  prometheus.Counter
	rateRemaining, rateLimit      prometheus.Gauge
	reconcileDuration             prometheus.Histogram
	created                       prometheus.Counter
	removed, failures             *prometheus.CounterVec
	createdToOnline, onlineToBusy prometheus.Histogram
	assigned, running, desired    prometheus.Gauge
	queuedToAssigned              prometheus.Histogram
	assignedToStarted             prometheus.Histogram

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
	cycle        uint64 // the last cycle that saw it
	// The job messages seen, and the events log lines written, so that
	// each is once whatever comes first or again.
	jobStarted, jobDone       bool
	startWritten, stopWritten bool
}

// stageBuckets span a container's seconds to a slow VM's many minutes.
var stageBuckets = []float64{5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600}

// jobBuckets span a warm runner's fraction of a second to an hour's wait.
var jobBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// New returns metrics for flavor (the application name); events, if not
// nil, receives the events log.
func New(flavor string, events io.Writer) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), flavor: flavor, events: events, seen: map[string]*stage{}, now: time.Now}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "github_runner", Name: name, Help: help})
	}
	m.expected = gauge("expected_runners", "Runners this unit is configured to keep.")
	m.idle = gauge("idle_runners", "Runners online and waiting for a job.")
	m.busy = gauge("busy_runners", "Runners running a job.")
	m.offline = gauge("offline_runners", "Runners GitHub shows offline.")
	m.unresponsive = gauge("unresponsive_runners", "Runners whose instance is frozen, paused or unknown; kept while they may be running a job.")
	m.retiring = gauge("retiring_runners", "Runners of an earlier path, API URL or naming, kept until their job ends.")
	m.failedCycles = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "github_runner", Name: "failed_reconcile_cycles_total",
		Help: "Reconcile cycles that could not read the runners' state, and so changed nothing."})
	m.rateRemaining = gauge("github_rate_limit_remaining", "GitHub API requests left in the current rate-limit window.")
	m.rateLimit = gauge("github_rate_limit", "GitHub API requests allowed per rate-limit window.")
	m.reconcileDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "github_runner", Name: "reconcile_duration_seconds", Help: "Duration of reconcile cycles.",
		Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
	})
	m.created = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "github_runner", Name: "created_runners_total", Help: "Runners created."})
	m.removed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "github_runner", Name: "removed_runners_total",
		Help: "Runners removed, by reason (stopped, offline, runner-without-instance, instance-without-runner, scale-down, flush)."}, []string{"reason"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "github_runner", Name: "failures_total",
		Help: "Failed operations, by operation (list, register, create, remove)."}, []string{"operation"})
	m.createdToOnline = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "created_to_online_seconds",
		Help: "Time from a runner's instance creation until GitHub showed it online.", Buckets: stageBuckets})
	m.onlineToBusy = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "online_to_busy_seconds",
		Help: "Time a runner waited online before its job.", Buckets: stageBuckets})
	m.assigned = gauge("assigned_jobs", "Jobs GitHub has assigned to the unit's scale set, waiting or running (its statistics' totalAssignedJobs).")
	m.running = gauge("running_jobs", "Jobs of the unit's scale set running (its statistics' totalRunningJobs).")
	m.desired = gauge("desired_runners", "Runners the unit wants now: the base plus the jobs assigned to its scale set, up to the cap; without a scale set, the fixed pool.")
	m.queuedToAssigned = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "job_queued_to_assigned_seconds",
		Help: "Time from a job's queueing until GitHub assigned it to the unit's scale set, from the job's messages.", Buckets: jobBuckets})
	m.assignedToStarted = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "github_runner", Name: "job_assigned_to_started_seconds",
		Help: "Time from a job's assignment to the unit's scale set until a runner of it started the job, from the job's messages.", Buckets: jobBuckets})
	m.Registry.MustRegister(m.expected, m.idle, m.busy, m.offline, m.unresponsive, m.retiring, m.failedCycles, m.rateRemaining, m.rateLimit, m.reconcileDuration,
		m.created, m.removed, m.failures, m.createdToOnline, m.onlineToBusy,
		m.assigned, m.running, m.desired, m.queuedToAssigned, m.assignedToStarted,
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
			m.event(now, "runner_stop", map[string]any{"status": "normal", "job_duration": nonNegative(now.Sub(s.busy))})
		}
		delete(m.seen, name)
	}
	m.expected.Set(float64(c.Expected))
	if !m.feed {
		m.desired.Set(float64(c.Expected))
	}
	m.idle.Set(float64(counts[runner.Idle]))
	m.busy.Set(float64(counts[runner.Busy]))
	m.offline.Set(float64(counts[runner.Offline]))
	m.unresponsive.Set(float64(counts[runner.Unresponsive]))
	m.retiring.Set(float64(counts[runner.Retiring]))
	m.reconcileDuration.Observe(c.Duration.Seconds())
	m.created.Add(float64(c.Created))
	for reason, n := range c.Removed {
		m.removed.WithLabelValues(reason).Add(float64(n))
	}
	for op, n := range c.Failures {
		m.failures.WithLabelValues(op).Add(float64(n))
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
	s.cycle = m.cycles
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
// counts, and leaves the gauges, the runners' stages and the events log as
// the last complete cycle left them.
func (m *Metrics) ObserveFailedCycle(failures map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failedCycles.Inc()
	for op, n := range failures {
		m.failures.WithLabelValues(op).Add(float64(n))
	}
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

// OpenEventsLog opens path for appending events, creating it 0644: the
// events hold no secrets and the COS agent reads them.
func OpenEventsLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open events log: %w", err)
	}
	return f, nil
}
