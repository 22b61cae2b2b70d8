package metrics

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/canonical/github-runner-charm/src/runner"
)

func TestCycleMetricsAndEvents(t *testing.T) {
	var events bytes.Buffer
	m := New("github-runner", &events)
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	created := t0.Add(-90 * time.Second)

	m.ObserveCycle(t0, Cycle{Duration: 2 * time.Second, Expected: 2, Created: 1,
		Runners: []Sample{{"a", runner.Idle, created}, {"b", runner.Creating, t0}},
		Removed: map[string]int{"stopped": 1}, Failures: map[string]int{"create": 1}})
	m.ObserveCycle(t0.Add(time.Minute), Cycle{Duration: time.Second, Expected: 2,
		Runners: []Sample{{"a", runner.Busy, created}, {"b", runner.Idle, t0}}})
	m.ObserveCycle(t0.Add(3*time.Minute), Cycle{Duration: time.Second, Expected: 2,
		Runners: []Sample{{"b", runner.Idle, t0}}})

	if got := testutil.ToFloat64(m.idle); got != 1 {
		t.Errorf("idle gauge = %v", got)
	}
	if got := testutil.ToFloat64(m.removed.WithLabelValues("stopped")); got != 1 {
		t.Errorf("removed{stopped} = %v", got)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("create")); got != 1 {
		t.Errorf("failures{create} = %v", got)
	}
	for state, want := range map[runner.State]float64{runner.Idle: 1, runner.Busy: 0, runner.Creating: 0, runner.Offline: 0} {
		if got := testutil.ToFloat64(m.byState.WithLabelValues(string(state))); got != want {
			t.Errorf("runners{state=%s} = %v, want %v", state, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.createdToOnline); n != 1 {
		t.Errorf("created→online collected %d series", n)
	}

	var names []string
	var installed, start, stop map[string]any
	for _, line := range strings.Split(strings.TrimSpace(events.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if e["flavor"] != "github-runner" || e["timestamp"] == nil {
			t.Errorf("event without flavor or timestamp: %v", e)
		}
		names = append(names, e["event"].(string))
		switch e["event"] {
		case "runner_installed":
			if installed == nil {
				installed = e
			}
		case "runner_start":
			start = e
		case "runner_stop":
			stop = e
		}
	}
	want := "runner_installed reconciliation runner_start runner_installed reconciliation runner_stop reconciliation"
	if strings.Join(names, " ") != want {
		t.Errorf("events %v, want %s", names, want)
	}
	if installed["duration"] != 90.0 || start["idle"] != 60.0 || stop["job_duration"] != 120.0 || stop["status"] != "normal" {
		t.Errorf("installed %v start %v stop %v", installed, start, stop)
	}
}

// A failed cycle counts once per reason it failed for.
func TestReconcileFailureReasons(t *testing.T) {
	tests := []struct {
		name    string
		observe func(m *Metrics)
		want    map[string]float64
	}{
		{"clean cycle", func(m *Metrics) { m.ObserveCycle(time.Now(), Cycle{Failures: map[string]int{}}) },
			map[string]float64{FailedList: 0, FailedImage: 0, FailedOperations: 0}},
		{"snapshot unreadable", func(m *Metrics) { m.ObserveFailedCycle(map[string]int{"list": 1}, false) },
			map[string]float64{FailedList: 1, FailedImage: 0, FailedOperations: 0}},
		{"image and snapshot", func(m *Metrics) { m.ObserveFailedCycle(map[string]int{"list": 1}, true) },
			map[string]float64{FailedList: 1, FailedImage: 1, FailedOperations: 0}},
		{"creates failed", func(m *Metrics) {
			m.ObserveCycle(time.Now(), Cycle{Failures: map[string]int{"create": 2, "register": 1}})
		}, map[string]float64{FailedList: 0, FailedImage: 0, FailedOperations: 1}},
		{"image failed, cleanup ran", func(m *Metrics) { m.ObserveCycle(time.Now(), Cycle{ImageFailed: true}) },
			map[string]float64{FailedList: 0, FailedImage: 1, FailedOperations: 0}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			m := New("github-runner", nil)
			test.observe(m)
			for reason, want := range test.want {
				if got := testutil.ToFloat64(m.cycleFailures.WithLabelValues(reason)); got != want {
					t.Errorf("reconcile_failures_total{reason=%s} = %v, want %v", reason, got, want)
				}
			}
		})
	}
}

func TestImageBuilds(t *testing.T) {
	m := New("github-runner", nil)
	m.ObserveImageBuild(4*time.Minute, nil)
	m.ObserveImageBuild(time.Minute, errors.New("cannot build runner image: boom"))
	if s, f := testutil.ToFloat64(m.imageBuilds.WithLabelValues("success")), testutil.ToFloat64(m.imageBuilds.WithLabelValues("failure")); s != 1 || f != 1 {
		t.Errorf("image builds: %v successes, %v failures; want 1, 1", s, f)
	}
	if n, sum := histogram(t, m, "github_runner_image_build_duration_seconds"); n != 2 || sum != 300 {
		t.Errorf("image build durations: %d observations, sum %v; want 2, 300", n, sum)
	}
}

// A runner seen busy that goes away stops "normal" when its instance
// stopped (an ephemeral runner's own end) and "abnormal" when it went
// offline or unresponsive first; each job's duration is observed.
func TestRunnerStopStatus(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	for last, want := range map[runner.State]string{
		runner.Stopped: "normal", runner.Offline: "abnormal", runner.Unresponsive: "abnormal", runner.NoRunner: "abnormal", runner.Busy: "normal",
	} {
		t.Run(string(last), func(t *testing.T) {
			var log bytes.Buffer
			m := New("github-runner", &log)
			m.ObserveCycle(t0, Cycle{Runners: []Sample{{"a", runner.Busy, t0.Add(-time.Minute)}}})
			m.ObserveCycle(t0.Add(time.Minute), Cycle{Runners: []Sample{{"a", last, t0.Add(-time.Minute)}}})
			m.ObserveCycle(t0.Add(5*time.Minute), Cycle{})
			stops := only(events(t, &log), "runner_stop")
			if len(stops) != 1 || stops[0]["status"] != want || stops[0]["job_duration"] != 300.0 {
				t.Fatalf("runner_stop lines %v, want one with status %s and job_duration 300", stops, want)
			}
			if n, sum := histogram(t, m, "job_duration_seconds"); n != 1 || sum != 300 {
				t.Errorf("job durations: %d observations, sum %v; want 1, 300", n, sum)
			}
		})
	}
}
