package fakegithub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Phases of a job on its way to a scale set (jobState.phase).
const (
	phaseNone      = ""          // waiting for a scale set or a runner
	phaseAvailable = "available" // offered to a set (GHES mode), not acquired
	phaseAssigned  = "assigned"  // assigned to a set, waiting for or on a runner
)

// jobMessage is one job message of a queue message's body.
type jobMessage struct {
	MessageType        string     `json:"messageType"`
	RunnerRequestID    int64      `json:"runnerRequestId"`
	RepositoryName     string     `json:"repositoryName"`
	OwnerName          string     `json:"ownerName"`
	JobID              string     `json:"jobId"`
	JobWorkflowRef     string     `json:"jobWorkflowRef"`
	JobDisplayName     string     `json:"jobDisplayName"`
	WorkflowRunID      int64      `json:"workflowRunId"`
	EventName          string     `json:"eventName"`
	RequestLabels      []string   `json:"requestLabels"`
	QueueTime          *time.Time `json:"queueTime"`
	ScaleSetAssignTime *time.Time `json:"scaleSetAssignTime"`
	RunnerAssignTime   *time.Time `json:"runnerAssignTime"`
	FinishTime         *time.Time `json:"finishTime"`
	AcquireJobURL      string     `json:"acquireJobUrl,omitempty"`
	RunnerID           *int64     `json:"runnerId,omitempty"`
	RunnerName         *string    `json:"runnerName,omitempty"`
	Result             string     `json:"result,omitempty"`
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// Job results, as GitHub's job messages spell them.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultCanceled  = "canceled"
)

// QueueJob queues a workflow job of scope ("owner/repo", or "org") asking
// for labels, as a push does on GitHub. The job goes to a scale set of the
// scope (an organisation's sets serve its repositories) whose labels
// contain all of labels and that has capacity (the X-ScaleSetMaxCapacity
// of its last poll, minus the jobs it has): among several, one with an
// idle online runner, else the one with the most free capacity. It is
// then handed to an idle online runner of that set when the runner's
// process polls. With no such set, an idle online runner (not of a scale
// set) with those labels takes it, as AssignJobToAny; otherwise the job
// waits, queued, until a set or a runner can take it.
func (s *Server) QueueJob(scope string, labels []string, spec JobSpec) (Job, error) {
	if scope == "" || strings.Count(scope, "/") > 1 {
		return Job{}, fmt.Errorf("cannot queue job: invalid scope %q", scope)
	}
	if len(labels) == 0 {
		return Job{}, fmt.Errorf("cannot queue job: no labels")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.newJob(scope, labels, spec)
	s.scaleSets.pending = append(s.scaleSets.pending, job.ID)
	s.notify()
	return job.Job, nil
}

// newJob records a queued job, on no runner yet. The caller holds s.mu.
func (s *Server) newJob(scope string, labels []string, spec JobSpec) *jobState {
	id := s.nextJobID
	s.nextJobID++
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("job-%d", id)
	}
	if spec.Repository == "" && strings.Contains(scope, "/") {
		spec.Repository = scope
	}
	if spec.Workflow == "" {
		spec.Workflow = "ci.yml"
	}
	if spec.Event == "" {
		spec.Event = "push"
	}
	job := &jobState{Job: Job{
		ID:         id,
		Spec:       spec,
		State:      JobQueued,
		Scope:      scope,
		Labels:     slices.Clone(labels),
		Repository: spec.Repository,
		Workflow:   spec.Workflow,
		QueuedAt:   time.Now().UTC(),
	}}
	s.jobs[id] = job
	return job
}

// WaitJobStarted waits until a runner process has picked a job up (it is
// in progress, or already completed) and returns it: the moment a queued
// job starts running, for latency measurements.
func (s *Server) WaitJobStarted(ctx context.Context, id int64) (Job, error) {
	var job Job
	err := s.waitFor(ctx, func() (bool, error) {
		state, ok := s.jobs[id]
		if !ok {
			return false, fmt.Errorf("cannot wait for job %d: %w", id, ErrNotFound)
		}
		job = state.Job
		return job.State != JobQueued, nil
	})
	if err != nil {
		return job, fmt.Errorf("cannot wait for job %d to start: %w", id, err)
	}
	return job, nil
}

// scopeServes says whether runners (or scale sets) of scope may take a job
// of jobScope: the same scope, or the organisation of the job's
// repository.
func scopeServes(scope, jobScope string) bool {
	owner, _, _ := strings.Cut(jobScope, "/")
	return scope == jobScope || scope == owner
}

func labelsContain(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

// dispatchJobs places the waiting jobs it can, oldest first. notify calls
// it after every change. The caller holds s.mu.
func (s *Server) dispatchJobs() {
	st := &s.scaleSets
	if st.dispatching || len(st.pending) == 0 {
		return
	}
	st.dispatching = true
	defer func() { st.dispatching = false }()
	load := s.setLoads()
	kept := st.pending[:0]
	for _, id := range st.pending {
		job := s.jobs[id]
		if job == nil || job.State != JobQueued || job.setID != 0 || job.RunnerID != 0 {
			continue
		}
		if !s.placeJob(job, load) {
			kept = append(kept, id)
		}
	}
	st.pending = kept
}

// setLoads counts the unfinished jobs of every scale set. The caller holds
// s.mu.
func (s *Server) setLoads() map[int64]int {
	load := make(map[int64]int)
	for _, job := range s.jobs {
		if job.setID != 0 && job.State != JobCompleted {
			load[job.setID]++
		}
	}
	return load
}

// placeJob gives a job to a scale set, else to a classic runner. The
// caller holds s.mu.
func (s *Server) placeJob(job *jobState, load map[int64]int) bool {
	var best *scaleSet
	bestIdle, bestFree := false, 0
	for _, set := range s.sortedSets("") {
		free := set.maxCapacity - load[set.id]
		if free <= 0 || !scopeServes(set.scope, job.Scope) || !labelsContain(set.labels, job.Labels) {
			continue
		}
		idle := s.hasIdleRunner(set)
		if best == nil || (idle && !bestIdle) || (idle == bestIdle && free > bestFree) {
			best, bestIdle, bestFree = set, idle, free
		}
	}
	if best != nil {
		load[best.id]++
		s.offer(job, best)
		return true
	}
	for _, candidate := range s.runnersIn("") {
		r := s.runners[candidate.ID]
		if r.scaleSetID == 0 && scopeServes(r.Scope, job.Scope) && canTakeJob(r) == nil && hasLabels(r.Labels, job.Labels) {
			job.AssignedAt = time.Now().UTC()
			s.bindRunner(job, r)
			return true
		}
	}
	return false
}

// hasIdleRunner: the set has an online runner with no job. The caller
// holds s.mu.
func (s *Server) hasIdleRunner(set *scaleSet) bool {
	for _, r := range s.runners {
		if r.scaleSetID == set.id && r.Status == StatusOnline && !r.Busy && r.JobID == 0 {
			return true
		}
	}
	return false
}

// bindRunner gives a job to a runner, which turns busy. The caller holds
// s.mu.
func (s *Server) bindRunner(job *jobState, r *runnerState) {
	job.RunnerID, job.RunnerName = r.ID, r.Name
	r.Busy, r.JobID = true, job.ID
}

// offer hands a job to a scale set: assigned at once (github.com), or
// available until the listener acquires it (GHES). The caller holds s.mu.
func (s *Server) offer(job *jobState, set *scaleSet) {
	job.setID, job.ScaleSetID = set.id, set.id
	if s.scaleSets.mode == ScaleSetModeGHES {
		job.phase = phaseAvailable
		msg := s.jobMessage(job, "JobAvailable")
		msg.AcquireJobURL = fmt.Sprintf("%s_apis/runtime/runnerscalesets/%d/acquirejobs", set.serviceURL, set.id)
		set.events = append(set.events, msg)
		return
	}
	s.assignToSet(job, set)
}

// assignToSet marks a job assigned to its set and starts the clock of its
// pick-up. The caller holds s.mu.
func (s *Server) assignToSet(job *jobState, set *scaleSet) {
	job.phase = phaseAssigned
	job.AssignedAt = time.Now().UTC()
	job.assignGen++
	set.events = append(set.events, s.jobMessage(job, "JobAssigned"))
	gen, id := job.assignGen, job.ID
	time.AfterFunc(s.scaleSets.assignTimeout, func() { s.assignTimedOut(id, gen) })
}

// assignTimedOut cancels an assignment no runner picked up: JobCompleted
// "canceled", then the job is assigned again, at most maxReassignments
// times; after that it ends canceled.
func (s *Server) assignTimedOut(id int64, gen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[id]
	if job == nil || job.assignGen != gen || job.phase != phaseAssigned || job.RunnerID != 0 || job.State != JobQueued {
		return
	}
	if set := s.scaleSets.sets[job.setID]; set != nil {
		msg := s.jobMessage(job, "JobCompleted")
		msg.Result = ResultCanceled
		msg.FinishTime = timeOrNull(time.Now())
		zero, none := int64(0), ""
		msg.RunnerID, msg.RunnerName = &zero, &none
		set.events = append(set.events, msg)
	}
	job.Attempts++
	if job.Attempts > maxReassignments {
		job.phase, job.setID = phaseNone, 0
		job.State, job.Result, job.FinishedAt = JobCompleted, ResultCanceled, time.Now().UTC()
		job.ExitCode = 1
		s.notify()
		return
	}
	s.unassign(job)
	s.notify()
}

// unassign takes a job back from its scale set, to wait again. The caller
// holds s.mu.
func (s *Server) unassign(job *jobState) {
	job.setID, job.ScaleSetID, job.phase, job.AssignedAt = 0, 0, phaseNone, time.Time{}
	job.assignGen++
	s.scaleSets.pending = append(s.scaleSets.pending, job.ID)
}

// jobMessage builds a job message of a job's current times. The caller
// holds s.mu.
func (s *Server) jobMessage(job *jobState, messageType string) jobMessage {
	owner, repo, _ := strings.Cut(job.Repository, "/")
	if owner == "" {
		owner, _, _ = strings.Cut(job.Scope, "/")
	}
	ref := ""
	if job.Repository != "" {
		ref = fmt.Sprintf("%s/.github/workflows/%s@refs/heads/main", job.Repository, job.Workflow)
	}
	return jobMessage{
		MessageType:        messageType,
		RunnerRequestID:    job.ID,
		RepositoryName:     repo,
		OwnerName:          owner,
		JobID:              strconv.FormatInt(job.ID, 10),
		JobWorkflowRef:     ref,
		JobDisplayName:     job.Spec.Name,
		WorkflowRunID:      1000 + job.ID,
		EventName:          job.Spec.Event,
		RequestLabels:      slices.Clone(job.Labels),
		QueueTime:          timeOrNull(job.QueuedAt),
		ScaleSetAssignTime: timeOrNull(job.AssignedAt),
		RunnerAssignTime:   timeOrNull(job.StartedAt),
		FinishTime:         timeOrNull(job.FinishedAt),
	}
}

// claimScaleSetJob gives an idle online runner of a scale set the oldest
// job assigned to its set, as its process polls: the job starts
// (JobStarted). The caller holds s.mu.
func (s *Server) claimScaleSetJob(r *runnerState) {
	if r.scaleSetID == 0 || r.Status != StatusOnline || r.Busy || r.JobID != 0 {
		return
	}
	set := s.scaleSets.sets[r.scaleSetID]
	if set == nil {
		return
	}
	var oldest *jobState
	for _, job := range s.jobs {
		if job.setID == set.id && job.phase == phaseAssigned && job.RunnerID == 0 && job.State == JobQueued &&
			(oldest == nil || job.ID < oldest.ID) {
			oldest = job
		}
	}
	if oldest == nil {
		return
	}
	s.bindRunner(oldest, r)
	oldest.StartedAt = time.Now().UTC()
	msg := s.jobMessage(oldest, "JobStarted")
	id, name := r.ID, r.Name
	msg.RunnerID, msg.RunnerName = &id, &name
	set.events = append(set.events, msg)
	s.notify()
}

// jobEnded records the end of a job and, for a scale set's, sends
// JobCompleted. The caller holds s.mu and has set job.State.
func (s *Server) jobEnded(job *jobState) {
	job.FinishedAt = time.Now().UTC()
	job.Result = ResultSucceeded
	if job.ExitCode != 0 || job.Lost {
		job.Result = ResultFailed
	}
	job.assignGen++
	set := s.scaleSets.sets[job.setID]
	if set == nil {
		return
	}
	msg := s.jobMessage(job, "JobCompleted")
	msg.Result = job.Result
	id, name := job.RunnerID, job.RunnerName
	msg.RunnerID, msg.RunnerName = &id, &name
	set.events = append(set.events, msg)
}

// statistics are a scale set's counters now. The caller holds s.mu.
func (s *Server) statistics(set *scaleSet) ScaleSetStatistics {
	var st ScaleSetStatistics
	for _, job := range s.jobs {
		if job.setID != set.id || job.State == JobCompleted {
			continue
		}
		switch job.phase {
		case phaseAvailable:
			st.TotalAvailableJobs++
		case phaseAssigned:
			st.TotalAssignedJobs++
			if job.RunnerID != 0 {
				st.TotalRunningJobs++
			}
		}
	}
	for _, r := range s.runners {
		if r.scaleSetID != set.id {
			continue
		}
		st.TotalRegisteredRunners++
		if r.Busy {
			st.TotalBusyRunners++
		} else {
			st.TotalIdleRunners++
		}
	}
	return st
}

// nextMessage returns the oldest queue message not deleted with an id
// above lastID, packing up to maxJobMessages waiting job messages into a
// new one if there is none. The caller holds s.mu.
func (s *Server) nextMessage(set *scaleSet, lastID int64) *queueMessage {
	for _, m := range set.queue {
		if m.id > lastID {
			return m
		}
	}
	if len(set.events) == 0 {
		return nil
	}
	n := min(len(set.events), maxJobMessages)
	m := &queueMessage{id: s.scaleSets.nextMsgID, events: slices.Clone(set.events[:n])}
	s.scaleSets.nextMsgID++
	set.events = slices.Delete(set.events, 0, n)
	set.queue = append(set.queue, m)
	set.messages++
	return m
}

// queueSession authenticates a queue request by the session in its path
// and the session's token. The caller holds s.mu.
func (s *Server) queueSession(r *http.Request, c *call) (*scaleSet, bool) {
	id := c.vars["session"]
	token := bearer(r)
	for _, set := range s.scaleSets.sets {
		if sess := set.session; sess != nil && strings.EqualFold(sess.id, id) && set.scope == c.scope {
			return set, token != "" && token == sess.token && time.Now().Before(sess.expires)
		}
	}
	return nil, false
}

func writeQueueUnauthorized(w http.ResponseWriter) {
	writeSvcError(w, http.StatusUnauthorized, "VssUnauthorizedException", "The message queue token is not valid or has expired.")
}

// svcGetMessage is the listener's long poll.
func (s *Server) svcGetMessage(w http.ResponseWriter, r *http.Request, c *call) {
	capacity, _ := strconv.Atoi(r.Header.Get("X-ScaleSetMaxCapacity"))
	lastID, _ := strconv.ParseInt(r.URL.Query().Get("lastMessageId"), 10, 64)
	s.mu.Lock()
	set, ok := s.queueSession(r, c)
	if !ok {
		s.mu.Unlock()
		writeQueueUnauthorized(w)
		return
	}
	sess := set.session
	sess.polling++
	sess.lastPoll = time.Now()
	if set.maxCapacity != capacity {
		set.maxCapacity = max(0, capacity)
		s.notify()
	}
	timeout := time.NewTimer(s.scaleSets.longPoll)
	s.mu.Unlock()
	defer timeout.Stop()
	defer func() {
		s.mu.Lock()
		sess.polling--
		sess.lastPoll = time.Now()
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		if s.scaleSets.sets[set.id] != set || set.session != sess || sess.token != bearer(r) || !time.Now().Before(sess.expires) {
			s.mu.Unlock()
			writeQueueUnauthorized(w)
			return
		}
		if m := s.nextMessage(set, lastID); m != nil {
			body, _ := json.Marshal(m.events)
			stats := s.statistics(set)
			s.mu.Unlock()
			writeSvcJSON(w, http.StatusOK, map[string]any{
				"messageId":   m.id,
				"messageType": "RunnerScaleSetJobMessages",
				"body":        string(body),
				"statistics":  stats,
			})
			return
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timeout.C:
			w.Header().Set("ActivityId", newUUID())
			w.WriteHeader(http.StatusAccepted)
			return
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
}

// svcDeleteMessage acknowledges a message: it is not delivered again.
func (s *Server) svcDeleteMessage(w http.ResponseWriter, r *http.Request, c *call) {
	id, _ := strconv.ParseInt(c.vars["message_id"], 10, 64)
	s.mu.Lock()
	set, ok := s.queueSession(r, c)
	if ok {
		set.queue = slices.DeleteFunc(set.queue, func(m *queueMessage) bool { return m.id == id })
	}
	s.mu.Unlock()
	if !ok {
		writeQueueUnauthorized(w)
		return
	}
	writeSvcJSON(w, http.StatusNoContent, nil)
}

// svcAcquireJobs acquires available jobs for the set (GHES): they are
// assigned to it. The answer lists the ids actually acquired.
func (s *Server) svcAcquireJobs(w http.ResponseWriter, r *http.Request, c *call) {
	var ids []int64
	if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", "cannot decode the job request ids")
		return
	}
	s.mu.Lock()
	set := s.lookupSet(c)
	ok := set != nil && set.session != nil && bearer(r) == set.session.token && time.Now().Before(set.session.expires)
	acquired := []int64{}
	if ok {
		for _, id := range ids {
			if job := s.jobs[id]; job != nil && job.setID == set.id && job.phase == phaseAvailable && job.State == JobQueued {
				s.assignToSet(job, set)
				acquired = append(acquired, id)
			}
		}
		s.notify()
	}
	s.mu.Unlock()
	if !ok {
		writeQueueUnauthorized(w)
		return
	}
	writeSvcJSON(w, http.StatusOK, map[string]any{"count": len(acquired), "value": acquired})
}
