package metrics

import (
	"bytes"
	"encoding/json"
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
