package fakegithub

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Runner is a snapshot of a self-hosted runner as the fake knows it.
type Runner struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	// Scope is where the runner is registered: "owner/repo" or "org".
	Scope     string  `json:"scope"`
	OS        string  `json:"os"`     // "unknown" until a runner process connects, then "linux"
	Status    string  `json:"status"` // "online" or "offline"
	Busy      bool    `json:"busy"`
	Ephemeral bool    `json:"ephemeral"`
	GroupID   int64   `json:"group_id"`
	Labels    []Label `json:"labels"`
	// Version is empty until a runner process has connected once.
	Version string `json:"version,omitempty"`
	// JobID is the job the runner was given, or 0.
	JobID int64 `json:"job_id,omitempty"`
}

// Label is a runner label. Read-only labels ("self-hosted", "Linux",
// "X64") are GitHub's; custom ones come from the caller.
type Label struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"` // "read-only" or "custom"
}

// RunnerSpec describes a runner that a test adds directly, without the
// API.
type RunnerSpec struct {
	// Name of the runner; AddRunners appends "-<i>".
	Name string `json:"name,omitempty"`
	// Labels are custom labels, added to the read-only ones.
	Labels    []string `json:"labels,omitempty"`
	Online    bool     `json:"online,omitempty"`
	Busy      bool     `json:"busy,omitempty"`
	Ephemeral bool     `json:"ephemeral,omitempty"`
	// GroupID is the runner group (default 1, "Default").
	GroupID int64 `json:"group_id,omitempty"`
}

// Status values of a runner.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// ErrNotFound is returned (wrapped) by the controls for an unknown runner,
// job or group.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned (wrapped) when a runner name is already taken in
// its scope, or a runner cannot take a job.
var ErrConflict = errors.New("conflict")

const defaultGroupID = 1

type runnerState struct {
	Runner
	secret string // authenticates the runner process to the broker
	arch   string // "x64" or "arm64", as reported by the runner process
	// lastContact is when its process last spoke to the broker; zero if
	// no process ever did.
	lastContact time.Time
	// scaleSetID is the scale set whose JIT config made it, or 0.
	scaleSetID int64
}

type registration struct {
	scope   string
	expires time.Time
}

type runnerGroup struct {
	ID   int64
	Name string
}

// state is everything the fake knows about runners and jobs. Every field is
// guarded by Server.mu.
type state struct {
	runners      map[int64]*runnerState
	nextRunnerID int64
	bySecret     map[string]int64 // runner secret → id; 0 once the runner is gone
	labelIDs     map[string]int64 // label name (lower case) → id
	groups       map[string][]runnerGroup
	nextGroupID  int64
	jobs         map[int64]*jobState
	nextJobID    int64
	statusLag    time.Duration
	// jobLostTimeout: see Options.JobLostTimeout.
	jobLostTimeout time.Duration
	// registrationTokens lets config.sh register a runner, as GitHub's
	// registration tokens do.
	registrationTokens map[string]registration
	changed            chan struct{} // closed and replaced on every change
	downloads          downloads
	deletions          []Deletion // every DELETE of a runner answered, oldest first
	scaleSets          scaleSetState
}

func (s *Server) initState(version string, statusLag, jobLostTimeout time.Duration) error {
	s.state = state{
		runners:            make(map[int64]*runnerState),
		nextRunnerID:       1,
		bySecret:           make(map[string]int64),
		labelIDs:           make(map[string]int64),
		groups:             make(map[string][]runnerGroup),
		nextGroupID:        defaultGroupID + 1,
		jobs:               make(map[int64]*jobState),
		nextJobID:          1,
		statusLag:          statusLag,
		jobLostTimeout:     jobLostTimeout,
		registrationTokens: make(map[string]registration),
		changed:            make(chan struct{}),
	}
	return s.downloads.setVersion(version)
}

// notify wakes every waiter, and places the queued jobs that the change
// may let run. The caller holds s.mu.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
	s.dispatchJobs()
}

// labelID gives each label name one id for the life of the server. The
// caller holds s.mu.
func (s *Server) labelID(name string) int64 {
	key := strings.ToLower(name)
	id, ok := s.labelIDs[key]
	if !ok {
		id = int64(len(s.labelIDs) + 1)
		s.labelIDs[key] = id
	}
	return id
}

func archLabel(arch string) string {
	if arch == "arm64" {
		return "ARM64"
	}
	return "X64"
}

// runnerLabels builds the read-only labels of a runner plus its custom
// ones. A custom name that repeats a read-only label is that label, as on
// GitHub. The caller holds s.mu.
func (s *Server) runnerLabels(arch string, custom []string) []Label {
	var labels []Label
	for _, name := range []string{"self-hosted", "Linux", archLabel(arch)} {
		labels = append(labels, Label{ID: s.labelID(name), Name: name, Type: "read-only"})
	}
	for _, name := range custom {
		if slices.ContainsFunc(labels, func(l Label) bool { return strings.EqualFold(l.Name, name) }) {
			continue
		}
		labels = append(labels, Label{ID: s.labelID(name), Name: name, Type: "custom"})
	}
	return labels
}

// nameTaken reports whether scope already has a runner called name. The
// caller holds s.mu.
func (s *Server) nameTaken(scope, name string) bool {
	for _, r := range s.runners {
		if r.Scope == scope && strings.EqualFold(r.Name, name) {
			return true
		}
	}
	return false
}

// groupExists says whether scope has a runner group with that id.
// Repositories only have the default group. The caller holds s.mu.
func (s *Server) groupExists(scope string, id int64) bool {
	if id == defaultGroupID {
		return true
	}
	return slices.ContainsFunc(s.groups[scope], func(g runnerGroup) bool { return g.ID == id })
}

// createRunner registers a runner. The caller holds s.mu and has checked
// the name and the group.
func (s *Server) createRunner(scope string, spec RunnerSpec) *runnerState {
	group := spec.GroupID
	if group == 0 {
		group = defaultGroupID
	}
	r := &runnerState{
		Runner: Runner{
			ID:        s.nextRunnerID,
			Name:      spec.Name,
			Scope:     scope,
			OS:        "unknown",
			Status:    StatusOffline,
			Busy:      spec.Busy,
			Ephemeral: spec.Ephemeral,
			GroupID:   group,
			Labels:    s.runnerLabels("x64", spec.Labels),
		},
		secret: newSecret(),
		arch:   "x64",
	}
	if spec.Online {
		r.OS = "linux"
		r.Status = StatusOnline
		r.Version = s.downloads.version
	}
	s.nextRunnerID++
	s.runners[r.ID] = r
	s.bySecret[r.secret] = r.ID
	s.notify()
	return r
}

// removeRunner forgets a runner; its process learns it is gone on its next
// poll. The caller holds s.mu.
func (s *Server) removeRunner(r *runnerState) {
	delete(s.runners, r.ID)
	s.bySecret[r.secret] = 0
	s.notify()
}

func newSecret() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("cannot read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

func (r *runnerState) snapshot() Runner {
	runner := r.Runner
	runner.Labels = slices.Clone(r.Labels)
	return runner
}

// AddRunner registers a runner in scope ("owner/repo" or "org") directly,
// as if it had registered itself.
func (s *Server) AddRunner(scope string, spec RunnerSpec) (Runner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkNewRunner(scope, spec); err != nil {
		return Runner{}, err
	}
	return s.createRunner(scope, spec).snapshot(), nil
}

// AddRunners registers n runners named spec.Name+"-0" … "-<n-1>" (spec.Name
// defaults to "runner").
func (s *Server) AddRunners(scope string, n int, spec RunnerSpec) ([]Runner, error) {
	prefix := spec.Name
	if prefix == "" {
		prefix = "runner"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	runners := make([]Runner, 0, n)
	for i := range n {
		spec.Name = fmt.Sprintf("%s-%d", prefix, i)
		if err := s.checkNewRunner(scope, spec); err != nil {
			return runners, err
		}
		runners = append(runners, s.createRunner(scope, spec).snapshot())
	}
	return runners, nil
}

func (s *Server) checkNewRunner(scope string, spec RunnerSpec) error {
	switch {
	case scope == "" || strings.Count(scope, "/") > 1:
		return fmt.Errorf("cannot add runner: invalid scope %q", scope)
	case spec.Name == "":
		return errors.New("cannot add runner: empty name")
	case s.nameTaken(scope, spec.Name):
		return fmt.Errorf("cannot add runner %q to %s: %w: name already taken", spec.Name, scope, ErrConflict)
	case spec.GroupID != 0 && !s.groupExists(scope, spec.GroupID):
		return fmt.Errorf("cannot add runner %q to %s: runner group %d %w", spec.Name, scope, spec.GroupID, ErrNotFound)
	}
	return nil
}

// Runner returns the runner with that id.
func (s *Server) Runner(id int64) (Runner, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return Runner{}, false
	}
	return r.snapshot(), true
}

// Runners returns the runners of scope ("owner/repo" or "org"), or of every
// scope when scope is empty, ordered by id.
func (s *Server) Runners(scope string) []Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runnersIn(scope)
}

// runnersIn lists runners by id. The caller holds s.mu.
func (s *Server) runnersIn(scope string) []Runner {
	runners := make([]Runner, 0, len(s.runners))
	for _, r := range s.runners {
		if scope == "" || r.Scope == scope {
			runners = append(runners, r.snapshot())
		}
	}
	slices.SortFunc(runners, func(a, b Runner) int { return int(a.ID - b.ID) })
	return runners
}

// SetRunnerStatus shows a runner online or offline, at once (no status
// lag).
func (s *Server) SetRunnerStatus(id int64, online bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return fmt.Errorf("cannot set status of runner %d: %w", id, ErrNotFound)
	}
	r.Status = StatusOffline
	if online {
		r.Status = StatusOnline
		r.OS = "linux"
		if r.Version == "" {
			r.Version = s.downloads.version
		}
	}
	s.notify()
	return nil
}

// SetRunnerBusy sets a runner's busy flag without a job, e.g. to model a
// runner that died mid-job and that GitHub still shows busy.
func (s *Server) SetRunnerBusy(id int64, busy bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return fmt.Errorf("cannot set runner %d busy: %w", id, ErrNotFound)
	}
	r.Busy = busy
	s.notify()
	return nil
}

// RemoveRunner deletes a runner as GitHub does when it auto-removes one,
// busy or not.
func (s *Server) RemoveRunner(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runners[id]
	if !ok {
		return fmt.Errorf("cannot remove runner %d: %w", id, ErrNotFound)
	}
	s.removeRunner(r)
	return nil
}

// AddRunnerGroup creates a runner group in an organisation and returns its
// id. Every organisation also has the group 1, "Default".
func (s *Server) AddRunnerGroup(org, name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextGroupID
	s.nextGroupID++
	s.groups[org] = append(s.groups[org], runnerGroup{ID: id, Name: name})
	return id
}

// SetStatusLag sets how long a freshly connected runner stays offline.
func (s *Server) SetStatusLag(lag time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statusLag = lag
}
