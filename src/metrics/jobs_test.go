package metrics

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/canonical/github-runner-charm/src/runner"
)

// gathered is the registry's metric family of name, as /metrics serves it.
func gathered(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("the registry has no %s", name)
	return nil
}

func gaugeValue(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	f := gathered(t, m, name)
	if len(f.Metric) != 1 || !onlyFlavor(f.Metric[0]) {
		t.Fatalf("%s has series %v, want one without labels but flavor", name, f.Metric)
	}
	return f.Metric[0].GetGauge().GetValue()
}

// histogram is the one series of a histogram: how many observations, and
// their sum.
func histogram(t *testing.T, m *Metrics, name string) (uint64, float64) {
	t.Helper()
	f := gathered(t, m, name)
	if len(f.Metric) != 1 || !onlyFlavor(f.Metric[0]) {
		t.Fatalf("%s has series %v, want one without labels but flavor", name, f.Metric)
	}
	h := f.Metric[0].GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

// onlyFlavor tells a series without labels, or with only the Python
// charm's flavor label.
func onlyFlavor(metric *dto.Metric) bool {
	labels := metric.GetLabel()
	return len(labels) == 0 || len(labels) == 1 && labels[0].GetName() == "flavor"
}

// events parses the events log, one JSON object a line.
func events(t *testing.T, log *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// only is the events of one kind.
func only(all []map[string]any, event string) []map[string]any {
	var out []map[string]any
	for _, e := range all {
		if e["event"] == event {
			out = append(out, e)
		}
	}
	return out
}

// The scale-set feed's statistics are gauges; without a feed, the desired
// count is the fixed pool.
func TestDemandGauges(t *testing.T) {
	m := New("github-runner", nil)
	m.ObserveCycle(time.Now(), Cycle{Expected: 2})
	if got := gaugeValue(t, m, "github_runner_desired_runners"); got != 2 {
		t.Errorf("desired runners of a fixed pool = %v, want 2", got)
	}
	m.ObserveDemand(Demand{Assigned: 3, Running: 2, Desired: 4})
	m.ObserveCycle(time.Now(), Cycle{Expected: 1})
	for name, want := range map[string]float64{
		"github_runner_assigned_jobs": 3, "github_runner_running_jobs": 2, "github_runner_desired_runners": 4,
	} {
		if got := gaugeValue(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// A job's messages give the queue histograms, and the events log's
// runner_start and runner_stop the fields the Python charm writes.
func TestJobEvents(t *testing.T) {
	var log bytes.Buffer
	m := New("github-runner", &log)
	queued := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	job := JobEvent{
		Runner: "github-runner-d067b0-0-0a1b2c3d", Repository: "canonical/runners", Workflow: "canonical/runners/.github/workflows/ci.yaml@refs/heads/main",
		Job: "test (noble)", Event: "push",
		QueuedAt: queued, AssignedAt: queued.Add(1500 * time.Millisecond), StartedAt: queued.Add(4 * time.Second),
	}
	m.ObserveJobStarted(job)
	job.Conclusion, job.FinishedAt = "succeeded", queued.Add(94*time.Second)
	m.ObserveJobCompleted(job)

	if n, sum := histogram(t, m, "github_runner_job_queued_to_assigned_seconds"); n != 1 || sum != 1.5 {
		t.Errorf("queued→assigned: %d observations, sum %v; want 1, 1.5", n, sum)
	}
	if n, sum := histogram(t, m, "github_runner_job_assigned_to_started_seconds"); n != 1 || sum != 2.5 {
		t.Errorf("assigned→started: %d observations, sum %v; want 1, 2.5", n, sum)
	}
	if n, sum := histogram(t, m, "runner_queue_duration_seconds"); n != 1 || sum != 4 {
		t.Errorf("job start latency: %d observations, sum %v; want 1, 4", n, sum)
	}
	if n, sum := histogram(t, m, "job_duration_seconds"); n != 1 || sum != 90 {
		t.Errorf("job duration: %d observations, sum %v; want 1, 90", n, sum)
	}
	all := events(t, &log)
	starts, stops := only(all, "runner_start"), only(all, "runner_stop")
	if len(starts) != 1 || len(stops) != 1 || len(all) != 2 {
		t.Fatalf("events %v, want one runner_start and one runner_stop", all)
	}
	start, stop := starts[0], stops[0]
	for key, want := range map[string]any{
		"flavor": "github-runner", "repo": "canonical/runners", "workflow": job.Workflow, "github_event": "push", "job": "test (noble)",
		"queue_duration": 4.0, "timestamp": float64(job.StartedAt.Unix()),
	} {
		if start[key] != want {
			t.Errorf("runner_start %s = %v, want %v", key, start[key], want)
		}
	}
	if _, ok := start["idle"]; ok {
		t.Errorf("runner_start %v has an idle time no cycle saw", start)
	}
	for key, want := range map[string]any{
		"flavor": "github-runner", "repo": "canonical/runners", "workflow": job.Workflow, "github_event": "push", "job": "test (noble)",
		"status": "normal", "job_conclusion": "success", "job_duration": 90.0, "timestamp": float64(job.FinishedAt.Unix()),
	} {
		if stop[key] != want {
			t.Errorf("runner_stop %s = %v, want %v", key, stop[key], want)
		}
	}
}

// The scale set's results are written as GitHub's REST API spells job
// conclusions, as the Python charm's dashboards read them.
func TestJobConclusion(t *testing.T) {
	for result, want := range map[string]string{"succeeded": "success", "Failed": "failure", "canceled": "cancelled", "skipped": "skipped", "": ""} {
		if got := conclusion(result); got != want {
			t.Errorf("conclusion(%q) = %q, want %q", result, got, want)
		}
	}
}

// Each runner's start and stop is written once, whichever of the job
// messages and the cycles sees it first, and whatever is redelivered.
func TestJobEventsWrittenOnce(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	created := t0.Add(-time.Minute)
	job := func(runner string, at time.Time) JobEvent {
		return JobEvent{Runner: runner, Repository: "o/r", Event: "push", QueuedAt: at.Add(-time.Second), AssignedAt: at.Add(-time.Second), StartedAt: at}
	}
	done := func(j JobEvent, at time.Time) JobEvent { j.Conclusion, j.FinishedAt = "failed", at; return j }
	tests := []struct {
		name string
		run  func(m *Metrics)
	}{
		{"message before the cycle sees it busy", func(m *Metrics) {
			m.ObserveCycle(t0, Cycle{Runners: []Sample{{"a", runner.Idle, created}}})
			m.ObserveJobStarted(job("a", t0.Add(time.Second)))
			m.ObserveCycle(t0.Add(time.Minute), Cycle{Runners: []Sample{{"a", runner.Busy, created}}})
			m.ObserveJobCompleted(done(job("a", t0.Add(time.Second)), t0.Add(90*time.Second)))
			m.ObserveCycle(t0.Add(2*time.Minute), Cycle{})
		}},
		{"cycle sees it busy before the first message", func(m *Metrics) {
			m.ObserveCycle(t0, Cycle{Runners: []Sample{{"a", runner.Busy, created}}})
			m.ObserveJobStarted(job("a", t0.Add(-time.Second)))
			m.ObserveCycle(t0.Add(time.Minute), Cycle{})
			m.ObserveJobCompleted(done(job("a", t0.Add(-time.Second)), t0.Add(90*time.Second)))
			m.ObserveCycle(t0.Add(2*time.Minute), Cycle{})
		}},
		{"started and done between cycles", func(m *Metrics) {
			m.ObserveCycle(t0, Cycle{})
			m.ObserveJobStarted(job("a", t0.Add(time.Second)))
			m.ObserveCycle(t0.Add(time.Minute), Cycle{}) // GitHub's list does not show it yet
			m.ObserveCycle(t0.Add(2*time.Minute), Cycle{Runners: []Sample{{"a", runner.Busy, created}}})
			m.ObserveJobCompleted(done(job("a", t0.Add(time.Second)), t0.Add(150*time.Second)))
			m.ObserveCycle(t0.Add(3*time.Minute), Cycle{Runners: []Sample{{"a", runner.Busy, created}}}) // the list lags
			m.ObserveCycle(t0.Add(4*time.Minute), Cycle{})
		}},
		{"messages redelivered", func(m *Metrics) {
			m.ObserveDemand(Demand{Assigned: 1, Desired: 1})
			m.ObserveJobStarted(job("a", t0))
			m.ObserveJobStarted(job("a", t0))
			m.ObserveCycle(t0.Add(time.Minute), Cycle{Runners: []Sample{{"a", runner.Busy, created}}})
			m.ObserveJobCompleted(done(job("a", t0), t0.Add(time.Minute)))
			m.ObserveJobCompleted(done(job("a", t0), t0.Add(time.Minute)))
			m.ObserveCycle(t0.Add(2*time.Minute), Cycle{})
		}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			var log bytes.Buffer
			m := New("github-runner", &log)
			test.run(m)
			all := events(t, &log)
			starts, stops := only(all, "runner_start"), only(all, "runner_stop")
			if len(starts) != 1 || len(stops) != 1 {
				t.Fatalf("%d runner_start and %d runner_stop lines, want 1 each: %v", len(starts), len(stops), all)
			}
			if stops[0]["job_conclusion"] != "failure" || stops[0]["repo"] != "o/r" {
				t.Errorf("runner_stop %v is not the job's", stops[0])
			}
			if n, _ := histogram(t, m, "github_runner_job_assigned_to_started_seconds"); n != 1 {
				t.Errorf("assigned→started observed %d times, want 1", n)
			}
			if n, _ := histogram(t, m, "runner_idle_duration_seconds"); n > 1 {
				t.Errorf("online→busy observed %d times, want at most 1", n)
			}
			if n := len(only(all, "runner_installed")); n > 1 {
				t.Errorf("%d runner_installed lines, want at most 1", n)
			}
		})
	}
}

// A job's runner that no cycle saw online has no idle time; one seen
// online has the time from then until its job started.
func TestJobStartIdle(t *testing.T) {
	var log bytes.Buffer
	m := New("github-runner", &log)
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	m.ObserveCycle(t0, Cycle{Runners: []Sample{{"a", runner.Idle, t0.Add(-time.Minute)}}})
	m.ObserveJobStarted(JobEvent{Runner: "a", StartedAt: t0.Add(40 * time.Second)})
	starts := only(events(t, &log), "runner_start")
	if len(starts) != 1 || starts[0]["idle"] != 40.0 {
		t.Fatalf("runner_start lines %v, want one with idle 40", starts)
	}
	if _, ok := starts[0]["queue_duration"]; ok {
		t.Errorf("runner_start %v has a queue duration without a queue time", starts[0])
	}
	if n, sum := histogram(t, m, "runner_idle_duration_seconds"); n != 1 || sum != 40 {
		t.Errorf("online→busy: %d observations, sum %v; want 1, 40", n, sum)
	}
}
