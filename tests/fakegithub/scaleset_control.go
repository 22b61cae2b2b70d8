package fakegithub

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// HTTP controls of the scale-set service, and their Remote methods.

type queueJobRequest struct {
	Scope  string      `json:"scope"`
	Labels []string    `json:"labels"`
	Spec   wireJobSpec `json:"spec"`
}

func (s *Server) addScaleSetControlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+controlPath+"/jobs/queue", s.controlQueueJob)
	mux.HandleFunc("GET "+controlPath+"/jobs/{id}/started", s.controlWaitJobStarted)
	mux.HandleFunc("GET "+controlPath+"/scale-sets", s.controlScaleSets)
	mux.HandleFunc("DELETE "+controlPath+"/scale-sets/{id}", s.controlDeleteScaleSet)
	mux.HandleFunc("POST "+controlPath+"/scale-sets/expire-sessions", s.controlExpireSessions)
	mux.HandleFunc("POST "+controlPath+"/scale-sets/expire-queue-tokens", s.controlExpireQueueTokens)
}

func (s *Server) controlQueueJob(w http.ResponseWriter, r *http.Request) {
	var req queueJobRequest
	if !decodeControl(w, r, &req) {
		return
	}
	job, err := s.QueueJob(req.Scope, req.Labels, req.Spec.toSpec())
	if err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusCreated, job)
}

func (s *Server) controlWaitJobStarted(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	ctx, cancel, err := waitContext(r)
	if err != nil {
		writeControlError(w, err)
		return
	}
	defer cancel()
	job, err := s.WaitJobStarted(ctx, id)
	if err != nil {
		writeControlError(w, err)
		return
	}
	writeControl(w, http.StatusOK, job)
}

func (s *Server) controlScaleSets(w http.ResponseWriter, r *http.Request) {
	writeControl(w, http.StatusOK, s.ScaleSets(r.URL.Query().Get("scope")))
}

func (s *Server) controlDeleteScaleSet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := s.DeleteScaleSet(id); err != nil {
		writeControlError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlExpireSessions(w http.ResponseWriter, r *http.Request) {
	s.ExpireSessions()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) controlExpireQueueTokens(w http.ResponseWriter, r *http.Request) {
	s.ExpireQueueTokens()
	w.WriteHeader(http.StatusNoContent)
}

// ExpireQueueTokens is Server.ExpireQueueTokens.
func (c *Remote) ExpireQueueTokens(ctx context.Context) error {
	return c.do(ctx, "POST", "/scale-sets/expire-queue-tokens", nil, nil)
}

// QueueJob is Server.QueueJob.
func (c *Remote) QueueJob(ctx context.Context, scope string, labels []string, spec JobSpec) (Job, error) {
	var job Job
	err := c.do(ctx, "POST", "/jobs/queue", queueJobRequest{Scope: scope, Labels: labels, Spec: toWireSpec(spec)}, &job)
	return job, err
}

// WaitJobStarted is Server.WaitJobStarted; the wait ends with ctx.
func (c *Remote) WaitJobStarted(ctx context.Context, jobID int64) (Job, error) {
	var job Job
	err := c.do(ctx, "GET", fmt.Sprintf("/jobs/%d/started?%s", jobID, waitQuery(ctx)), nil, &job)
	return job, err
}

// ScaleSets is Server.ScaleSets.
func (c *Remote) ScaleSets(ctx context.Context, scope string) ([]ScaleSet, error) {
	var sets []ScaleSet
	err := c.do(ctx, "GET", "/scale-sets?scope="+url.QueryEscape(scope), nil, &sets)
	return sets, err
}

// DeleteScaleSet is Server.DeleteScaleSet.
func (c *Remote) DeleteScaleSet(ctx context.Context, id int64) error {
	return c.do(ctx, "DELETE", fmt.Sprintf("/scale-sets/%d", id), nil, nil)
}

// ExpireSessions is Server.ExpireSessions.
func (c *Remote) ExpireSessions(ctx context.Context) error {
	return c.do(ctx, "POST", "/scale-sets/expire-sessions", nil, nil)
}

// ScaleSetMessages is Server.ScaleSetMessages.
func (c *Remote) ScaleSetMessages(ctx context.Context, id int64) (int, error) {
	sets, err := c.ScaleSets(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, set := range sets {
		if set.ID == id {
			return set.Messages, nil
		}
	}
	return 0, nil
}
