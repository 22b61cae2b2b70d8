package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

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
	path := fmt.Sprintf("repos/%v/%v/actions/runners", c.scope.Owner, c.scope.Repo)
	if c.scope.IsOrg() {
		path = fmt.Sprintf("orgs/%v/actions/runners", c.scope.Owner)
	}
	decoder := newRunnerPage(namePrefix)
	var runners []Runner
	for page, pages := 1, 1; ; pages++ {
		var next int
		err := c.call(ctx, "list runners", func(ctx context.Context) (*gh.Response, error) {
			// What go-github's ListRunners and ListOrganizationRunners
			// send, with the body decoded by runnerPage.
			req, err := c.api.NewRequest("GET", fmt.Sprintf("%s?page=%d&per_page=%d", path, page, pageSize), nil)
			if err != nil {
				return nil, err
			}
			resp, err := c.api.BareDo(ctx, req)
			if err != nil {
				return resp, err
			}
			defer resp.Body.Close()
			before := len(runners)
			if runners, err = decoder.read(resp.Body, runners); err != nil {
				runners = runners[:before]
				return resp, err
			}
			next = resp.NextPage
			if page == 1 && resp.LastPage > 1 {
				// Room for as many more from each page as from the first,
				// rather than growing the slice a page at a time.
				runners = slices.Grow(runners, len(runners)*(min(resp.LastPage, maxPages)-1))
			}
			return resp, nil
		})
		if err != nil {
			return nil, err
		}
		if next == 0 {
			return runners, nil
		}
		if next <= page || pages >= maxPages {
			return nil, c.errorf("list runners", ErrRejected, "GitHub's pagination does not end (page %d links to page %d)", page, next)
		}
		page = next
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
