package fakegithub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// controlPath is the root of the HTTP controls, the same controls as the
// Server methods for tests that run in another process (see Remote).
const controlPath = fakePrefix + "control"

// maxControlWait caps the waits of the HTTP controls.
const maxControlWait = 10 * time.Minute

// Wire forms of the controls. Durations are seconds, for shell users.
type (
	addRunnersRequest struct {
		Scope string     `json:"scope"`
		Count int        `json:"count"`
		Spec  RunnerSpec `json:"spec"`
	}
	patchRunnerRequest struct {
		Online *bool `json:"online,omitempty"`
		Busy   *bool `json:"busy,omitempty"`
	}
	wireJobSpec struct {
		Name         string  `json:"name,omitempty"`
		Command      string  `json:"command,omitempty"`
		SleepSeconds float64 `json:"sleep_seconds,omitempty"`
		Repository   string  `json:"repository,omitempty"`
		Workflow     string  `json:"workflow,omitempty"`
		Event        string  `json:"event,omitempty"`
		// EventPayload is JobSpec's, the JSON object itself.
		EventPayload json.RawMessage `json:"event_payload,omitempty"`
	}
	assignJobRequest struct {
		// RunnerID picks one runner; else the oldest idle one of Scope
		// with Labels.
		RunnerID int64       `json:"runner_id,omitempty"`
		Scope    string      `json:"scope,omitempty"`
		Labels   []string    `json:"labels,omitempty"`
		Spec     wireJobSpec `json:"spec"`
	}
	completeJobRequest struct {
		ExitCode int `json:"exit_code"`
	}
	wireFault struct {
		Endpoint          string  `json:"endpoint,omitempty"`
		Kind              string  `json:"kind"`
		Status            int     `json:"status,omitempty"`
		RetryAfterSeconds float64 `json:"retry_after_seconds,omitempty"`
		DelaySeconds      float64 `json:"delay_seconds,omitempty"`
		Times             int     `json:"times,omitempty"`
	}
	downloadsRequest struct {
		Version  string `json:"version,omitempty"`
		Checksum string `json:"checksum,omitempty"` // "correct", "wrong" or "missing"
	}
	settingsRequest struct {
		StatusLagSeconds *float64 `json:"status_lag_seconds,omitempty"`
	}
	controlError struct {
		Error string `json:"error"`
	}
)

func seconds(d float64) time.Duration { return time.Duration(d * float64(time.Second)) }

func (spec wireJobSpec) toSpec() JobSpec {
	return JobSpec{Name: spec.Name, Command: spec.Command, Sleep: seconds(spec.SleepSeconds),
		Repository: spec.Repository, Workflow: spec.Workflow, Event: spec.Event, EventPayload: spec.EventPayload}
}

func (f wireFault) toFault() (Fault, error) {
	kind, err := parseFaultKind(f.Kind)
	if err != nil {
		return Fault{}, err
	}
	return Fault{
		Endpoint:   f.Endpoint,
		Kind:       kind,
		Status:     f.Status,
		RetryAfter: seconds(f.RetryAfterSeconds),
		Delay:      seconds(f.DelaySeconds),
		Times:      f.Times,
	}, nil
}

func parseFaultKind(name string) (FaultKind, error) {
	for k := ServerError; k <= lastFaultKind; k++ {
		if k.String() == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("cannot parse fault kind %q", name)
}

var checksumModes = map[string]ChecksumMode{"correct": ChecksumCorrect, "wrong": ChecksumWrong, "missing": ChecksumMissing}

func (s *Server) addControlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlPath+"/runners", s.controlListRunners)
	mux.HandleFunc("POST "+controlPath+"/runners", s.controlAddRunners)
	mux.HandleFunc("PATCH "+controlPath+"/runners/{id}", s.controlPatchRunner)
	mux.HandleFunc("DELETE "+controlPath+"/runners/{id}", s.controlRemoveRunner)
	mux.HandleFunc("POST "+controlPath+"/runners/{id}/connect", s.controlConnectRunner)
	mux.HandleFunc("GET "+controlPath+"/wait-online", s.controlWaitOnline)
	mux.HandleFunc("POST "+controlPath+"/jobs", s.controlAssignJob)
	mux.HandleFunc("GET "+controlPath+"/jobs/{id}", s.controlGetJob)
	mux.HandleFunc("POST "+controlPath+"/jobs/{id}/complete", s.controlCompleteJob)
	mux.HandleFunc("GET "+controlPath+"/counts", s.controlCounts)
	mux.HandleFunc("DELETE "+controlPath+"/counts", s.controlResetCounts)
	mux.HandleFunc("POST "+controlPath+"/faults", s.controlInjectFault)
	mux.HandleFunc("DELETE "+controlPath+"/faults", s.controlClearFaults)
	mux.HandleFunc("PUT "+controlPath+"/downloads", s.controlDownloads)
	mux.HandleFunc("PUT "+controlPath+"/settings", s.controlSettings)
	s.addScaleSetControlRoutes(mux)
}

func writeControl(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func writeControlError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	writeControl(w, status, controlError{Error: err.Error()})
}

func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeControlError(w, fmt.Errorf("cannot decode request: %w", err))
		return false
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeControlError(w, fmt.Errorf("invalid id %q: %w", r.PathValue("id"), ErrNotFound))
		return 0, false
	}
	return id, true
}

// waitContext bounds a control wait by the "timeout" query parameter, a Go
// duration (default 1m).
func waitContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	timeout := time.Minute
	if value := r.URL.Query().Get("timeout"); value != "" {
		d, err := time.ParseDuration(value)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot parse timeout: %w", err)
		}
		timeout = min(d, maxControlWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	return ctx, cancel, nil
}

func (s *Server) controlListRunners(w http.ResponseWriter, r *http.Request) {
	writeControl(w, http.StatusOK, s.Runners(r.URL.Query().Get("scope")))
}

func (s *Server) controlAddRunners(w http.ResponseWriter, r *http.Request) {
	var req addRunnersRequest
	if !decodeControl(w, r, &req) {
		return
	}
	var runners []Runner
	var err error
	if req.Count == 0 {
		var runner Runner
		runner, err = s.AddRunner(req.Scope, req.Spec)
		runners = []Runner{runner}
	} else {
		runners, err = s.AddRunners(req.Scope, req.Count, req.Spec)
	}
	if err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusCreated, runners)
}

func (s *Server) controlPatchRunner(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	var req patchRunnerRequest
	if !ok || !decodeControl(w, r, &req) {
		return
	}
	if req.Online != nil {
		if err := s.SetRunnerStatus(id, *req.Online); err != nil {
			writeControlError(w, err)
			return
		}
	}
	if req.Busy != nil {
		if err := s.SetRunnerBusy(id, *req.Busy); err != nil {
			writeControlError(w, err)
			return
		}
	}
	runner, found := s.Runner(id)
	if !found {
		writeControlError(w, fmt.Errorf("runner %d %w", id, ErrNotFound))
		return
	}
	writeControl(w, http.StatusOK, runner)
}

func (s *Server) controlRemoveRunner(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := s.RemoveRunner(id); err != nil {
		writeControlError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlConnectRunner(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := s.ConnectRunner(id); err != nil {
		writeControlError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlWaitOnline(w http.ResponseWriter, r *http.Request) {
	count, err := strconv.Atoi(r.URL.Query().Get("count"))
	if err != nil {
		writeControlError(w, fmt.Errorf("cannot parse count: %w", err))
		return
	}
	ctx, cancel, err := waitContext(r)
	if err != nil {
		writeControlError(w, err)
		return
	}
	defer cancel()
	if err := s.WaitRunnersOnline(ctx, r.URL.Query().Get("scope"), count); err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusOK, s.Runners(r.URL.Query().Get("scope")))
}

func (s *Server) controlAssignJob(w http.ResponseWriter, r *http.Request) {
	var req assignJobRequest
	if !decodeControl(w, r, &req) {
		return
	}
	var job Job
	var err error
	if req.RunnerID != 0 {
		job, err = s.AssignJob(req.RunnerID, req.Spec.toSpec())
	} else {
		job, err = s.AssignJobToAny(req.Scope, req.Labels, req.Spec.toSpec())
	}
	if err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusCreated, job)
}

// controlGetJob returns a job; with ?wait=true it waits for its end.
func (s *Server) controlGetJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("wait") != "true" {
		job, found := s.Job(id)
		if !found {
			writeControlError(w, fmt.Errorf("job %d %w", id, ErrNotFound))
			return
		}
		writeControl(w, http.StatusOK, job)
		return
	}
	ctx, cancel, err := waitContext(r)
	if err != nil {
		writeControlError(w, err)
		return
	}
	defer cancel()
	job, err := s.WaitJob(ctx, id)
	if err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusOK, job)
}

func (s *Server) controlCompleteJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	var req completeJobRequest
	if !ok || !decodeControl(w, r, &req) {
		return
	}
	if err := s.CompleteJob(id, req.ExitCode); err != nil {
		writeControlError(w, err)
		return
	}
	job, _ := s.Job(id)
	writeControl(w, http.StatusOK, job)
}

func (s *Server) controlCounts(w http.ResponseWriter, r *http.Request) {
	writeControl(w, http.StatusOK, s.Counts())
}

func (s *Server) controlResetCounts(w http.ResponseWriter, r *http.Request) {
	s.ResetCounts()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlInjectFault(w http.ResponseWriter, r *http.Request) {
	var req wireFault
	if !decodeControl(w, r, &req) {
		return
	}
	fault, err := req.toFault()
	if err == nil {
		err = s.InjectFault(fault)
	}
	if err != nil {
		writeControlError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlDownloads(w http.ResponseWriter, r *http.Request) {
	var req downloadsRequest
	if !decodeControl(w, r, &req) {
		return
	}
	if req.Checksum != "" {
		mode, ok := checksumModes[req.Checksum]
		if !ok {
			writeControlError(w, fmt.Errorf("unknown checksum mode %q", req.Checksum))
			return
		}
		s.SetChecksumMode(mode)
	}
	if req.Version != "" {
		if err := s.SetRunnerVersion(req.Version); err != nil {
			writeControlError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlSettings(w http.ResponseWriter, r *http.Request) {
	var req settingsRequest
	if !decodeControl(w, r, &req) {
		return
	}
	if req.StatusLagSeconds != nil {
		s.SetStatusLag(seconds(*req.StatusLagSeconds))
	}
	w.WriteHeader(http.StatusNoContent)
}
