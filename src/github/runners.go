package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	gh "github.com/google/go-github/v62/github"
)

// pageSize is GitHub's maximum per_page.
const pageSize = 100

// maxPages stops a server whose Link headers never end from looping us
// forever: 1000 pages is 100,000 runners.
const maxPages = 1000

// RunnerStatus is GitHub's view of a runner's connection.
type RunnerStatus string

const (
	RunnerOnline  RunnerStatus = "online"
	RunnerOffline RunnerStatus = "offline"
)

// Runner is a self-hosted runner as GitHub lists it.
type Runner struct {
	ID     int64
	Name   string
	Status RunnerStatus
	// Busy is true while the runner runs a job.
	Busy   bool
	Labels []string
}

// ListRunners returns the path's runners whose name starts with namePrefix
// (all runners if it is empty). It reads every page at 100 runners a page:
// ceil(n/100) requests, and never one per runner. GitHub's name filter is an
// exact match, so the prefix is applied here.
func (c *Client) ListRunners(ctx context.Context, namePrefix string) ([]Runner, error) {
	opts := &gh.ListRunnersOptions{ListOptions: gh.ListOptions{PerPage: pageSize, Page: 1}}
	var runners []Runner
	for pages := 1; ; pages++ {
		var page *gh.Runners
		var next int
		err := c.call(ctx, "list runners", func(ctx context.Context) (*gh.Response, error) {
			var resp *gh.Response
			var err error
			if c.scope.IsOrg() {
				page, resp, err = c.api.Actions.ListOrganizationRunners(ctx, c.scope.Owner, opts)
			} else {
				page, resp, err = c.api.Actions.ListRunners(ctx, c.scope.Owner, c.scope.Repo, opts)
			}
			if resp != nil {
				next = resp.NextPage
			}
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range page.Runners {
			if strings.HasPrefix(r.GetName(), namePrefix) {
				runners = append(runners, runnerFromAPI(r))
			}
		}
		if next == 0 {
			return runners, nil
		}
		if next <= opts.Page || pages >= maxPages {
			return nil, c.errorf("list runners", ErrRejected, "GitHub's pagination does not end (page %d links to page %d)", opts.Page, next)
		}
		opts.Page = next
	}
}

func runnerFromAPI(r *gh.Runner) Runner {
	labels := make([]string, 0, len(r.Labels))
	for _, l := range r.Labels {
		labels = append(labels, l.GetName())
	}
	return Runner{
		ID:     r.GetID(),
		Name:   r.GetName(),
		Status: RunnerStatus(r.GetStatus()),
		Busy:   r.GetBusy(),
		Labels: labels,
	}
}

// CheckRunnersAccess checks, with one request for one runner, that the
// credentials can read the path's runners. Where it succeeds, a 404 for
// one runner means the runner is gone; where it fails, it could mean the
// path is out of the credentials' reach.
func (c *Client) CheckRunnersAccess(ctx context.Context) error {
	opts := &gh.ListRunnersOptions{ListOptions: gh.ListOptions{PerPage: 1, Page: 1}}
	return c.call(ctx, "list runners", func(ctx context.Context) (*gh.Response, error) {
		if c.scope.IsOrg() {
			_, resp, err := c.api.Actions.ListOrganizationRunners(ctx, c.scope.Owner, opts)
			return resp, err
		}
		_, resp, err := c.api.Actions.ListRunners(ctx, c.scope.Owner, c.scope.Repo, opts)
		return resp, err
	})
}

// DeleteRunner removes a runner from GitHub. A runner that is already gone
// (404) counts as removed. A busy runner (422) is not removed: the error is
// ErrRunnerBusy, and the caller should keep its instance.
func (c *Client) DeleteRunner(ctx context.Context, runnerID int64) error {
	op := fmt.Sprintf("delete runner %d", runnerID)
	err := c.call(ctx, op, func(ctx context.Context) (*gh.Response, error) {
		if c.scope.IsOrg() {
			return c.api.Actions.RemoveOrganizationRunner(ctx, c.scope.Owner, runnerID)
		}
		return c.api.Actions.RemoveRunner(ctx, c.scope.Owner, c.scope.Repo, runnerID)
	})
	var ghErr *Error
	if !errors.As(err, &ghErr) {
		return err
	}
	switch {
	case ghErr.Kind == ErrNotFound:
		// GitHub answers 404 for a runner that no longer exists; an
		// ephemeral runner removes itself after its job, so this is normal.
		c.logger.Debug("Runner already gone from GitHub", slog.Int64("runner-id", runnerID))
		return nil
	case ghErr.Kind == ErrRejected && ghErr.StatusCode == 422:
		ghErr.Kind = ErrRunnerBusy
		c.finish(ghErr)
	}
	return ghErr
}

// errorf makes an *Error that did not come from an HTTP answer.
func (c *Client) errorf(op string, kind error, format string, args ...any) *Error {
	e := &Error{Op: op, Path: c.scope.String(), Kind: kind, Detail: fmt.Sprintf(format, args...)}
	c.finish(e)
	return e
}
