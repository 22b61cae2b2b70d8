package metrics

import (
	"strings"
	"time"
)

// Demand is what the unit's scale set's statistics say, and what the unit
// wants of them.
type Demand struct {
	Assigned int // jobs assigned to the scale set, waiting or running (totalAssignedJobs)
	Running  int // jobs running (totalRunningJobs)
	Desired  int // runners wanted: the base plus Assigned, up to the cap
}

// JobEvent is one job message of the scale-set feed (JobStarted or
// JobCompleted), with what the events log writes of it. A zero time is
// one the message did not carry.
type JobEvent struct {
	Runner     string // the runner's name (runnerName); empty for a job no runner took
	Repository string // "owner/name"
	Workflow   string // the workflow (jobWorkflowRef)
	Job        string // the job's display name
	Event      string // what triggered the workflow (eventName: push, pull_request, …)
	Conclusion string // JobCompleted's result: succeeded, failed, canceled, …

	QueuedAt   time.Time // queueTime
	AssignedAt time.Time // scaleSetAssignTime: GitHub gave the job to the scale set
	StartedAt  time.Time // runnerAssignTime: a runner of the set took it
	FinishedAt time.Time // finishTime
}

// jobMemory bounds how long a runner's started job is remembered while no
// cycle sees the runner: GitHub ends a self-hosted runner's job after 5
// days at the latest.
const jobMemory = 5*24*time.Hour + time.Hour

// ObserveDemand records the scale set's statistics and the unit's desired
// runner count. From the first call on, the job messages write the events
// log's runner_start and runner_stop (see ObserveJobStarted).
func (m *Metrics) ObserveDemand(d Demand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.feed = true
	m.assigned.Set(float64(d.Assigned))
	m.running.Set(float64(d.Running))
	m.desired.Set(float64(d.Desired))
}

// ObserveJobStarted records a job a runner of the scale set started: the
// queued→assigned and assigned→started histograms, and the events log's
// runner_start with the job's fields. The message is the better source
// than the cycles (exact, and with the job's fields), so from then on the
// cycles write no runner_start or runner_stop; each runner's is written
// once, whichever saw it first, and a redelivered message is not counted
// again.
func (m *Metrics) ObserveJobStarted(j JobEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.feed = true
	var s *stage
	if j.Runner != "" {
		if s = m.stageOf(j.Runner); s.jobStarted {
			return // redelivered
		}
		s.jobStarted = true
	}
	if !j.QueuedAt.IsZero() && !j.AssignedAt.IsZero() {
		m.queuedToAssigned.Observe(nonNegative(j.AssignedAt.Sub(j.QueuedAt)))
	}
	if !j.AssignedAt.IsZero() && !j.StartedAt.IsZero() {
		m.assignedToStarted.Observe(nonNegative(j.StartedAt.Sub(j.AssignedAt)))
	}
	if !j.QueuedAt.IsZero() && !j.StartedAt.IsZero() {
		m.queuedToStarted.Observe(nonNegative(j.StartedAt.Sub(j.QueuedAt)))
	}
	if s == nil {
		return
	}
	start := j.StartedAt
	if start.IsZero() {
		start = m.now()
	}
	fields := jobFields(j)
	if !j.QueuedAt.IsZero() {
		fields["queue_duration"] = nonNegative(start.Sub(j.QueuedAt))
	}
	if s.busy.IsZero() {
		s.busy = start
		if !s.online.IsZero() {
			fields["idle"] = nonNegative(start.Sub(s.online))
			m.onlineToBusy.Observe(fields["idle"].(float64))
		}
	}
	if !s.startWritten {
		s.startWritten = true
		m.event(start, "runner_start", fields)
	}
}

// ObserveJobCompleted records a job of the scale set that ended: the
// events log's runner_stop, with the job's conclusion and duration. A job
// no runner took (canceled while queued) stops no runner.
func (m *Metrics) ObserveJobCompleted(j JobEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.feed = true
	if j.Runner == "" {
		return
	}
	s := m.stageOf(j.Runner)
	s.jobDone = true
	if s.stopWritten {
		return // redelivered
	}
	s.stopWritten = true
	end := j.FinishedAt
	if end.IsZero() {
		end = m.now()
	}
	fields := jobFields(j)
	// The runner's application ended normally: GitHub reported its job's
	// end, whatever the job's own conclusion.
	fields["status"] = "normal"
	if c := conclusion(j.Conclusion); c != "" {
		fields["job_conclusion"] = c
	}
	start := j.StartedAt
	if start.IsZero() {
		start = s.busy
	}
	if !start.IsZero() {
		fields["job_duration"] = nonNegative(end.Sub(start))
		m.jobDuration.Observe(fields["job_duration"].(float64))
	}
	m.event(end, "runner_stop", fields)
}

// jobFields are the fields of runner_start and runner_stop a job message
// gives, by the Python charm's names (and job, which it has not); the
// ones the message left empty are left out, as the Python charm leaves
// out unknown ones.
func jobFields(j JobEvent) map[string]any {
	fields := map[string]any{}
	for key, value := range map[string]string{"repo": j.Repository, "workflow": j.Workflow, "github_event": j.Event, "job": j.Job} {
		if value != "" {
			fields[key] = value
		}
	}
	return fields
}

// conclusion is a scale set's job result as GitHub's REST API spells a
// job's conclusion (success, failure, cancelled), which the Python
// charm's job_conclusion holds and its dashboards count.
func conclusion(result string) string {
	result = strings.ToLower(result)
	switch result {
	case "succeeded":
		return "success"
	case "failed":
		return "failure"
	case "canceled":
		return "cancelled"
	}
	return result
}
