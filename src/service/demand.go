package service

import (
	"context"
	"strings"
	"sync/atomic"

	gh "github.com/actions/scaleset"

	"github.com/canonical/github-runner-charm/src/metrics"
)

// demandEngine is what the demand feed needs of the engine.
type demandEngine interface {
	SetDemand(assigned int) (desired int, changed bool)
	JobStarted(runnerName string)
	JobCompleted(runnerName string)
}

// demandMetrics is what the demand feed records.
type demandMetrics interface {
	ObserveDemand(metrics.Demand)
	ObserveJobStarted(metrics.JobEvent)
	ObserveJobCompleted(metrics.JobEvent)
}

// waker wakes the service's loop (Server.Wake).
type waker interface{ Wake() }

// demand turns the scale set's listener's calls into the engine's inputs:
// a target (from GitHub's assigned jobs) and job events, recorded in the
// metrics. It is the listener's Scaler and its MetricsRecorder (which
// alone sees the running jobs). None of its calls waits for a cycle: a
// change wakes the loop instead.
type demand struct {
	engine  demandEngine
	metrics demandMetrics
	loop    waker
	running atomic.Int64 // the latest statistics' totalRunningJobs
}

func newDemand(engine demandEngine, m demandMetrics, loop waker) *demand {
	return &demand{engine: engine, metrics: m, loop: loop}
}

// HandleDesiredRunnerCount takes GitHub's assigned jobs (waiting or
// running) and answers the runners the engine settled on.
func (d *demand) HandleDesiredRunnerCount(_ context.Context, assigned int) (int, error) {
	desired, changed := d.engine.SetDemand(assigned)
	d.metrics.ObserveDemand(metrics.Demand{Assigned: assigned, Running: int(d.running.Load()), Desired: desired})
	if changed {
		d.loop.Wake()
	}
	return desired, nil
}

// HandleJobStarted marks the runner busy before GitHub's runner list does,
// so no cycle takes it for an idle one in between.
func (d *demand) HandleJobStarted(_ context.Context, job *gh.JobStarted) error {
	d.engine.JobStarted(job.RunnerName)
	d.metrics.ObserveJobStarted(jobEvent(job.JobMessageBase, job.RunnerName, ""))
	return nil
}

// HandleJobCompleted ends the runner's job: it exits, and a cycle at once
// replaces it (or lets it go, if the target fell).
func (d *demand) HandleJobCompleted(_ context.Context, job *gh.JobCompleted) error {
	d.engine.JobCompleted(job.RunnerName)
	d.metrics.ObserveJobCompleted(jobEvent(job.JobMessageBase, job.RunnerName, job.Result))
	d.loop.Wake()
	return nil
}

func jobEvent(m gh.JobMessageBase, runnerName, conclusion string) metrics.JobEvent {
	repo := m.RepositoryName
	if m.OwnerName != "" && repo != "" && !strings.Contains(repo, "/") {
		repo = m.OwnerName + "/" + repo
	}
	return metrics.JobEvent{
		Runner: runnerName, Repository: repo, Workflow: m.JobWorkflowRef, Job: m.JobDisplayName,
		Event: m.EventName, Conclusion: conclusion,
		// Zero times are those the message did not carry; the metrics
		// stamp what they need.
		QueuedAt: m.QueueTime, AssignedAt: m.ScaleSetAssignTime, StartedAt: m.RunnerAssignTime, FinishedAt: m.FinishTime,
	}
}

// The listener's recorder: the statistics carry the running jobs; the
// rest is recorded by the handlers above, with the engine's answer.
func (d *demand) RecordStatistics(s *gh.RunnerScaleSetStatistic) {
	if s != nil {
		d.running.Store(int64(s.TotalRunningJobs))
	}
}
func (d *demand) RecordJobStarted(*gh.JobStarted)     {}
func (d *demand) RecordJobCompleted(*gh.JobCompleted) {}
func (d *demand) RecordDesiredRunners(int)            {}

var _ demandMetrics = (*metrics.Metrics)(nil)
