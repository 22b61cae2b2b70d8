package fakegithub

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// JobSpec is the work a fake runner process does for a job: sleep, then
// run Command with sh in the runner's work folder.
type JobSpec struct {
	// Name is the job name the runner logs (default "job-<id>").
	Name    string        `json:"name,omitempty"`
	Command string        `json:"command,omitempty"`
	Sleep   time.Duration `json:"sleep,omitempty"`
	// Repository ("owner/repo"), Workflow (file name, default "ci.yml")
	// and Event (default "push") are what the scale-set job messages say
	// of a queued job. Repository defaults to QueueJob's scope when it
	// names a repository.
	Repository string `json:"repository,omitempty"`
	Workflow   string `json:"workflow,omitempty"`
	Event      string `json:"event,omitempty"`
	// EventPayload is the webhook payload of the job's event, which the
	// runner process writes to a file for GITHUB_EVENT_PATH, as GitHub's
	// runner does, with GITHUB_EVENT_NAME set to Event (default "push");
	// nil: "{}". Event reads one of testdata/events.
	EventPayload json.RawMessage `json:"event_payload,omitempty"`
}

// Job states.
const (
	// JobQueued: not yet picked up by a runner process. RunnerID is 0
	// while the job waits for a runner (QueueJob).
	JobQueued = "queued"
	// JobInProgress: the runner process is running it.
	JobInProgress = "in_progress"
	// JobCompleted: done; ExitCode and Output are set.
	JobCompleted = "completed"
)

// Job is a snapshot of a job given to a runner.
type Job struct {
	ID         int64   `json:"id"`
	RunnerID   int64   `json:"runner_id"`
	RunnerName string  `json:"runner_name"`
	Spec       JobSpec `json:"spec"`
	State      string  `json:"state"`
	ExitCode   int     `json:"exit_code"`
	// Output is what the command printed, as the runner process reported.
	Output string `json:"output"`
	// Lost: the job did not run to its end. Its runner process stopped
	// renewing it (the process or its machine died, or froze) for
	// Options.JobLostTimeout, and GitHub failed it, as with "The self-hosted
	// runner lost communication with the server". A job its runner reported
	// the end of, whatever its exit code, is not lost.
	Lost bool `json:"lost,omitempty"`
	// Scope and Labels of a queued job (QueueJob); ScaleSetID is the
	// scale set it went to, 0 for none.
	Scope      string   `json:"scope,omitempty"`
	Labels     []string `json:"labels,omitempty"`
	ScaleSetID int64    `json:"scale_set_id,omitempty"`
	Repository string   `json:"repository,omitempty"`
	Workflow   string   `json:"workflow,omitempty"`
	// QueuedAt, AssignedAt (to a scale set, or to a runner for a classic
	// job), StartedAt (a runner took it) and FinishedAt; zero until then.
	QueuedAt   time.Time `json:"queued_at"`
	AssignedAt time.Time `json:"assigned_at"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Result of a completed job: "succeeded", "failed" or "canceled" (no
	// runner picked it up, assignment after assignment).
	Result string `json:"result,omitempty"`
	// Attempts is how many of its scale-set assignments timed out.
	Attempts int `json:"attempts,omitempty"`
}

type jobState struct {
	Job
	// setID and phase: where the job stands with a scale set (see
	// scaleset_queue.go); assignGen invalidates assignment timers.
	setID     int64
	phase     string
	assignGen int
	// renewed is when the runner process last renewed the job (or picked
	// it up); zero before.
	renewed time.Time
}

// lostMessage is the output of a lost job, GitHub's annotation.
const lostMessage = "The self-hosted runner: %s lost communication with the server. Verify the machine is running and has a healthy network connection."

// AssignJob gives a job to an online, idle runner, which turns busy at
// once, as GitHub shows it. The runner process picks it up on its next
// poll; a test without a process can end it with CompleteJob.
func (s *Server) AssignJob(runnerID int64, spec JobSpec) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[runnerID]
	if !ok {
		return Job{}, fmt.Errorf("cannot assign job to runner %d: %w", runnerID, ErrNotFound)
	}
	if err := canTakeJob(r); err != nil {
		return Job{}, fmt.Errorf("cannot assign job to runner %d: %w", runnerID, err)
	}
	return s.assign(r, spec), nil
}

// AssignJobToAny gives a job to the oldest online, idle runner of scope
// ("" for any) that has every label in labels (case-insensitive), as
// GitHub does with a queued job's runs-on.
func (s *Server) AssignJobToAny(scope string, labels []string, spec JobSpec) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, candidate := range s.runnersIn(scope) {
		r := s.runners[candidate.ID]
		if canTakeJob(r) == nil && hasLabels(r.Labels, labels) {
			return s.assign(r, spec), nil
		}
	}
	return Job{}, fmt.Errorf("cannot assign job: no online idle runner in %q with labels %v: %w", scope, labels, ErrNotFound)
}

func canTakeJob(r *runnerState) error {
	switch {
	case r.Status != StatusOnline:
		return fmt.Errorf("%w: runner is offline", ErrConflict)
	case r.Busy:
		return fmt.Errorf("%w: runner is busy", ErrConflict)
	}
	return nil
}

func hasLabels(have []Label, want []string) bool {
	for _, name := range want {
		if !slices.ContainsFunc(have, func(l Label) bool { return strings.EqualFold(l.Name, name) }) {
			return false
		}
	}
	return true
}

// assign records a job for a runner. The caller holds s.mu.
func (s *Server) assign(r *runnerState, spec JobSpec) Job {
	id := s.nextJobID
	s.nextJobID++
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("job-%d", id)
	}
	now := time.Now().UTC()
	job := &jobState{Job: Job{ID: id, RunnerID: r.ID, RunnerName: r.Name, Spec: spec, State: JobQueued, QueuedAt: now, AssignedAt: now}}
	s.jobs[id] = job
	r.Busy = true
	r.JobID = id
	s.notify()
	return job.Job
}

// CompleteJob ends a job as if its runner had reported it: the runner goes
// idle, or, if ephemeral, GitHub removes it.
func (s *Server) CompleteJob(jobID int64, exitCode int) error {
	return s.completeJob(jobID, exitCode, "")
}

func (s *Server) completeJob(jobID int64, exitCode int, output string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[jobID]
	if !ok {
		return fmt.Errorf("cannot complete job %d: %w", jobID, ErrNotFound)
	}
	if job.State == JobCompleted {
		return fmt.Errorf("cannot complete job %d: %w: already completed", jobID, ErrConflict)
	}
	job.State, job.ExitCode, job.Output = JobCompleted, exitCode, output
	s.jobEnded(job)
	if r, ok := s.runners[job.RunnerID]; ok && r.JobID == jobID {
		r.Busy, r.JobID = false, 0
		if r.Ephemeral {
			s.removeRunner(r)
		}
	}
	s.notify()
	return nil
}

// Job returns a job by id.
func (s *Server) Job(id int64) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job, ok := s.jobs[id]
	if !ok {
		return Job{}, false
	}
	return job.Job, true
}

// WaitJob waits until a job is completed and returns it.
func (s *Server) WaitJob(ctx context.Context, id int64) (Job, error) {
	var job Job
	err := s.waitFor(ctx, func() (bool, error) {
		state, ok := s.jobs[id]
		if !ok {
			return false, fmt.Errorf("cannot wait for job %d: %w", id, ErrNotFound)
		}
		job = state.Job
		return job.State == JobCompleted, nil
	})
	if err != nil {
		return job, fmt.Errorf("cannot wait for job %d to complete: %w", id, err)
	}
	return job, nil
}

// renewInterval is how often a runner process renews its job: often enough
// that a few missed renewals are not a lost job. 0: jobs are never lost, and
// need no renewal. The caller holds s.mu.
func (s *Server) renewInterval() time.Duration {
	if s.jobLostTimeout <= 0 {
		return 0
	}
	return max(time.Second, s.jobLostTimeout/6)
}

// heartbeat is when the job's runner process was last heard of: its last
// renewal of the job or, before it picked the job up, its last poll. Zero
// for a runner no process ever spoke for (AddRunner, a test's own). The
// caller holds s.mu.
func (s *Server) heartbeat(job *jobState) time.Time {
	last := job.renewed
	if r, ok := s.runners[job.RunnerID]; ok && r.lastContact.After(last) {
		last = r.lastContact
	}
	return last
}

// loseJobs fails every unfinished job whose runner process has not been
// heard of for the lost timeout: the job is completed and Lost, and its
// runner, whose process is unreachable, shows offline and idle. An
// ephemeral runner is kept: it took a job and never reported an end, so
// GitHub leaves its record for its owner to delete. The caller holds s.mu.
func (s *Server) loseJobs(now time.Time) {
	for _, job := range s.jobs {
		last := s.heartbeat(job)
		if job.State == JobCompleted || last.IsZero() || now.Sub(last) < s.jobLostTimeout {
			continue
		}
		job.State, job.ExitCode, job.Lost = JobCompleted, 1, true
		job.Output = fmt.Sprintf(lostMessage, job.RunnerName)
		s.jobEnded(job)
		if r, ok := s.runners[job.RunnerID]; ok && r.JobID == job.ID {
			r.Busy, r.JobID, r.Status = false, 0, StatusOffline
		}
		s.notify()
	}
}

// watchLostJobs runs loseJobs every second until the server closes.
func (s *Server) watchLostJobs() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			s.mu.Lock()
			s.loseJobs(now)
			s.mu.Unlock()
		case <-s.closed:
			return
		}
	}
}

// WaitRunnersOnline waits until scope ("" for all) has at least n online
// runners.
func (s *Server) WaitRunnersOnline(ctx context.Context, scope string, n int) error {
	online := 0
	err := s.waitFor(ctx, func() (bool, error) {
		online = 0
		for _, r := range s.runners {
			if (scope == "" || r.Scope == scope) && r.Status == StatusOnline {
				online++
			}
		}
		return online >= n, nil
	})
	if err != nil {
		return fmt.Errorf("cannot wait for %d runners online (%d are): %w", n, online, err)
	}
	return nil
}

// WaitRunnerGone waits until a runner no longer exists, e.g. an ephemeral
// runner after its job.
func (s *Server) WaitRunnerGone(ctx context.Context, id int64) error {
	err := s.waitFor(ctx, func() (bool, error) {
		_, exists := s.runners[id]
		return !exists, nil
	})
	if err != nil {
		return fmt.Errorf("cannot wait for runner %d to go: %w", id, err)
	}
	return nil
}

// waitFor calls done, holding s.mu, after every change until it says so,
// ctx ends or the server closes.
func (s *Server) waitFor(ctx context.Context, done func() (bool, error)) error {
	for {
		s.mu.Lock()
		ok, err := done()
		changed := s.changed
		s.mu.Unlock()
		if err != nil || ok {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return fmt.Errorf("server closed")
		}
	}
}

// ConnectRunner does what a runner process does when it starts with its
// JIT config: the runner reports "linux" and its version, and turns online
// once the status lag has passed.
func (s *Server) ConnectRunner(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return fmt.Errorf("cannot connect runner %d: %w", id, ErrNotFound)
	}
	s.connect(r, r.arch, s.downloads.version)
	return nil
}

// connect records a runner process's session. The caller holds s.mu.
func (s *Server) connect(r *runnerState, arch, version string) {
	r.lastContact = time.Now()
	r.OS = "linux"
	r.Version = version
	if validArch(arch) && arch != r.arch {
		r.arch = arch
		for i, l := range r.Labels {
			if l.Type == "read-only" && (l.Name == "X64" || l.Name == "ARM64") {
				r.Labels[i] = Label{ID: s.labelID(archLabel(arch)), Name: archLabel(arch), Type: "read-only"}
			}
		}
	}
	s.notify()
	if s.statusLag <= 0 {
		r.Status = StatusOnline
		return
	}
	time.AfterFunc(s.statusLag, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.runners[r.ID] == r {
			r.Status = StatusOnline
			s.notify()
		}
	})
}
