package service

import (
	"context"
	"reflect"
	"testing"
	"time"

	gh "github.com/actions/scaleset"

	"github.com/canonical/github-runner-charm/src/metrics"
)

// fakeDemandEngine answers SetDemand with base+assigned, as the engine's
// rule without a cap, and records the job events.
type fakeDemandEngine struct {
	base, desired     int
	started, finished []string
}

func (e *fakeDemandEngine) SetDemand(assigned int) (int, bool) {
	desired := e.base + assigned
	changed := desired != e.desired
	e.desired = desired
	return desired, changed
}
func (e *fakeDemandEngine) JobStarted(name string)   { e.started = append(e.started, name) }
func (e *fakeDemandEngine) JobCompleted(name string) { e.finished = append(e.finished, name) }

type fakeDemandMetrics struct {
	demand            []metrics.Demand
	started, finished []metrics.JobEvent
}

func (m *fakeDemandMetrics) ObserveDemand(d metrics.Demand)       { m.demand = append(m.demand, d) }
func (m *fakeDemandMetrics) ObserveJobStarted(j metrics.JobEvent) { m.started = append(m.started, j) }
func (m *fakeDemandMetrics) ObserveJobCompleted(j metrics.JobEvent) {
	m.finished = append(m.finished, j)
}

type countingWaker struct{ wakes int }

func (w *countingWaker) Wake() { w.wakes++ }

func newTestDemand() (*demand, *fakeDemandEngine, *fakeDemandMetrics, *countingWaker) {
	e, m, w := &fakeDemandEngine{base: 1, desired: 1}, &fakeDemandMetrics{}, &countingWaker{}
	return newDemand(e, m, w), e, m, w
}

// The listener's desired counts reach the engine; only a change wakes the
// loop, and the metrics see the running jobs of the latest statistics.
func TestDemandDesired(t *testing.T) {
	d, _, m, w := newTestDemand()
	d.RecordStatistics(&gh.RunnerScaleSetStatistic{TotalAssignedJobs: 3, TotalRunningJobs: 2})
	steps := []struct {
		assigned, desired, wakes int
	}{
		{0, 1, 0}, // the warm pool, as before: no wake
		{3, 4, 1},
		{3, 4, 1}, // a 202's repeat
		{1, 2, 2},
	}
	for i, step := range steps {
		got, err := d.HandleDesiredRunnerCount(context.Background(), step.assigned)
		if err != nil || got != step.desired || w.wakes != step.wakes {
			t.Fatalf("step %d: desired %d, %v, wakes %d; want %d, %d", i, got, err, w.wakes, step.desired, step.wakes)
		}
		if want := (metrics.Demand{Assigned: step.assigned, Running: 2, Desired: step.desired}); m.demand[i] != want {
			t.Errorf("step %d: observed %+v, want %+v", i, m.demand[i], want)
		}
	}
}

func TestDemandJobs(t *testing.T) {
	d, e, m, w := newTestDemand()
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	base := gh.JobMessageBase{
		RepositoryName: "repo", OwnerName: "owner", JobID: "j1", JobWorkflowRef: "owner/repo/.github/workflows/ci.yaml@refs/heads/main",
		JobDisplayName: "build", EventName: "push",
		QueueTime: now.Add(-3 * time.Second), ScaleSetAssignTime: now.Add(-2 * time.Second), RunnerAssignTime: now.Add(-time.Second),
	}
	if err := d.HandleJobStarted(context.Background(), &gh.JobStarted{RunnerName: "r-1", RunnerID: 5, JobMessageBase: base}); err != nil {
		t.Fatal(err)
	}
	want := metrics.JobEvent{Runner: "r-1", Repository: "owner/repo", Workflow: base.JobWorkflowRef, Job: "build", Event: "push",
		QueuedAt: base.QueueTime, AssignedAt: base.ScaleSetAssignTime, StartedAt: base.RunnerAssignTime}
	if !reflect.DeepEqual(e.started, []string{"r-1"}) || len(m.started) != 1 || m.started[0] != want || w.wakes != 0 {
		t.Fatalf("started: engine %v, metrics %+v, wakes %d; want %+v", e.started, m.started, w.wakes, want)
	}
	base.FinishTime = now
	if err := d.HandleJobCompleted(context.Background(), &gh.JobCompleted{RunnerName: "r-1", Result: "succeeded", JobMessageBase: base}); err != nil {
		t.Fatal(err)
	}
	want.Conclusion, want.FinishedAt = "succeeded", now
	if !reflect.DeepEqual(e.finished, []string{"r-1"}) || len(m.finished) != 1 || m.finished[0] != want || w.wakes != 1 {
		t.Fatalf("completed: engine %v, metrics %+v, wakes %d; want %+v", e.finished, m.finished, w.wakes, want)
	}
}
