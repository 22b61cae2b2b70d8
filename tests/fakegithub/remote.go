package fakegithub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Remote drives a fake GitHub in another process (cmd/fakegithub) through
// its HTTP controls, with the same operations as the Server methods.
type Remote struct {
	baseURL string
	client  *http.Client
}

// NewRemote returns a Remote for the fake at baseURL, e.g. the URL written
// by "fakegithub -url-file".
func NewRemote(baseURL string) *Remote {
	return &Remote{baseURL: strings.TrimSuffix(baseURL, "/"), client: &http.Client{}}
}

// do sends a control request and decodes the answer into out (if not nil).
func (c *Remote) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("cannot encode control request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+controlPath+path, body)
	if err != nil {
		return fmt.Errorf("cannot build control request: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach fake GitHub: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var failure controlError
		json.NewDecoder(resp.Body).Decode(&failure)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", failure.Error, ErrNotFound)
		case http.StatusConflict:
			return fmt.Errorf("%s: %w", failure.Error, ErrConflict)
		case http.StatusGatewayTimeout:
			return fmt.Errorf("%s: %w", failure.Error, context.DeadlineExceeded)
		}
		return fmt.Errorf("cannot %s %s: status %d: %s", method, path, resp.StatusCode, failure.Error)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("cannot decode control response: %w", err)
	}
	return nil
}

// waitQuery turns the deadline of ctx into the timeout of a control wait.
func waitQuery(ctx context.Context) string {
	timeout := maxControlWait
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(deadline), time.Millisecond)
	}
	return "timeout=" + url.QueryEscape(timeout.String())
}

// Runners is Server.Runners.
func (c *Remote) Runners(ctx context.Context, scope string) ([]Runner, error) {
	var runners []Runner
	err := c.do(ctx, "GET", "/runners?scope="+url.QueryEscape(scope), nil, &runners)
	return runners, err
}

// AddRunners is Server.AddRunners.
func (c *Remote) AddRunners(ctx context.Context, scope string, n int, spec RunnerSpec) ([]Runner, error) {
	if n < 1 {
		return nil, nil
	}
	var runners []Runner
	err := c.do(ctx, "POST", "/runners", addRunnersRequest{Scope: scope, Count: n, Spec: spec}, &runners)
	return runners, err
}

// SetRunnerStatus is Server.SetRunnerStatus.
func (c *Remote) SetRunnerStatus(ctx context.Context, id int64, online bool) error {
	return c.do(ctx, "PATCH", fmt.Sprintf("/runners/%d", id), patchRunnerRequest{Online: &online}, nil)
}

// SetRunnerBusy is Server.SetRunnerBusy.
func (c *Remote) SetRunnerBusy(ctx context.Context, id int64, busy bool) error {
	return c.do(ctx, "PATCH", fmt.Sprintf("/runners/%d", id), patchRunnerRequest{Busy: &busy}, nil)
}

// RemoveRunner is Server.RemoveRunner.
func (c *Remote) RemoveRunner(ctx context.Context, id int64) error {
	return c.do(ctx, "DELETE", fmt.Sprintf("/runners/%d", id), nil, nil)
}

// ConnectRunner is Server.ConnectRunner.
func (c *Remote) ConnectRunner(ctx context.Context, id int64) error {
	return c.do(ctx, "POST", fmt.Sprintf("/runners/%d/connect", id), nil, nil)
}

// WaitRunnersOnline is Server.WaitRunnersOnline; the wait ends with ctx.
func (c *Remote) WaitRunnersOnline(ctx context.Context, scope string, n int) error {
	query := fmt.Sprintf("/wait-online?scope=%s&count=%d&%s", url.QueryEscape(scope), n, waitQuery(ctx))
	return c.do(ctx, "GET", query, nil, nil)
}

func toWireSpec(spec JobSpec) wireJobSpec {
	return wireJobSpec{Name: spec.Name, Command: spec.Command, SleepSeconds: spec.Sleep.Seconds(),
		Repository: spec.Repository, Workflow: spec.Workflow, Event: spec.Event, EventPayload: spec.EventPayload}
}

// AssignJob is Server.AssignJob.
func (c *Remote) AssignJob(ctx context.Context, runnerID int64, spec JobSpec) (Job, error) {
	var job Job
	err := c.do(ctx, "POST", "/jobs", assignJobRequest{RunnerID: runnerID, Spec: toWireSpec(spec)}, &job)
	return job, err
}

// AssignJobToAny is Server.AssignJobToAny.
func (c *Remote) AssignJobToAny(ctx context.Context, scope string, labels []string, spec JobSpec) (Job, error) {
	var job Job
	err := c.do(ctx, "POST", "/jobs", assignJobRequest{Scope: scope, Labels: labels, Spec: toWireSpec(spec)}, &job)
	return job, err
}

// CompleteJob is Server.CompleteJob.
func (c *Remote) CompleteJob(ctx context.Context, jobID int64, exitCode int) error {
	return c.do(ctx, "POST", fmt.Sprintf("/jobs/%d/complete", jobID), completeJobRequest{ExitCode: exitCode}, nil)
}

// Job is Server.Job.
func (c *Remote) Job(ctx context.Context, jobID int64) (Job, error) {
	var job Job
	err := c.do(ctx, "GET", fmt.Sprintf("/jobs/%d", jobID), nil, &job)
	return job, err
}

// WaitJob is Server.WaitJob; the wait ends with ctx.
func (c *Remote) WaitJob(ctx context.Context, jobID int64) (Job, error) {
	var job Job
	err := c.do(ctx, "GET", fmt.Sprintf("/jobs/%d?wait=true&%s", jobID, waitQuery(ctx)), nil, &job)
	return job, err
}

// Counts is Server.Counts.
func (c *Remote) Counts(ctx context.Context) (map[string]int, error) {
	counts := make(map[string]int)
	err := c.do(ctx, "GET", "/counts", nil, &counts)
	return counts, err
}

// ResetCounts is Server.ResetCounts.
func (c *Remote) ResetCounts(ctx context.Context) error {
	return c.do(ctx, "DELETE", "/counts", nil, nil)
}

// InjectFault is Server.InjectFault.
func (c *Remote) InjectFault(ctx context.Context, f Fault) error {
	return c.do(ctx, "POST", "/faults", wireFault{
		Endpoint:          f.Endpoint,
		Kind:              f.Kind.String(),
		Status:            f.Status,
		RetryAfterSeconds: f.RetryAfter.Seconds(),
		DelaySeconds:      f.Delay.Seconds(),
		Times:             f.Times,
	}, nil)
}

// ClearFaults is Server.ClearFaults.
func (c *Remote) ClearFaults(ctx context.Context) error {
	return c.do(ctx, "DELETE", "/faults", nil, nil)
}

// SetRunnerVersion is Server.SetRunnerVersion.
func (c *Remote) SetRunnerVersion(ctx context.Context, version string) error {
	return c.do(ctx, "PUT", "/downloads", downloadsRequest{Version: version}, nil)
}

// SetChecksumMode is Server.SetChecksumMode.
func (c *Remote) SetChecksumMode(ctx context.Context, mode ChecksumMode) error {
	for name, m := range checksumModes {
		if m == mode {
			return c.do(ctx, "PUT", "/downloads", downloadsRequest{Checksum: name}, nil)
		}
	}
	return fmt.Errorf("cannot set checksum mode: unknown mode %d", mode)
}

// SetStatusLag is Server.SetStatusLag.
func (c *Remote) SetStatusLag(ctx context.Context, lag time.Duration) error {
	lagSeconds := lag.Seconds()
	return c.do(ctx, "PUT", "/settings", settingsRequest{StatusLagSeconds: &lagSeconds}, nil)
}
